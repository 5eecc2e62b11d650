"""OpenTelemetry traces: a SERVER span per request, a CLIENT span per upstream attempt.

Off unless the standard variables ask for it (:func:`enabled`), and then configured by them
alone: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, any exporter entry point),
``OTEL_EXPORTER_OTLP_ENDPOINT`` and the rest of the exporter's own, ``OTEL_TRACES_SAMPLER`` /
``OTEL_TRACES_SAMPLER_ARG`` (default: parent-based always-on), ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``. When off, nothing of OpenTelemetry is imported and no request
pays anything: there is no middleware and no observer.

The client's W3C ``traceparent`` (and ``tracestate``) make the server span a child of the
caller's; each attempt's CLIENT span is sent upstream as ``traceparent`` through
:data:`providers.upstream.TRACE_HEADERS`. Attributes follow the GenAI semantic conventions
(``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.response.model``, ``gen_ai.usage.*``, ``gen_ai.response.finish_reasons``) and are
built only for spans that are recorded. Prompts and completions are never on a span unless
``GATEWAY_TRACE_CONTENT=true`` (:mod:`gateway.tracing_content`).

The OpenTelemetry packages are the optional extra ``llm-gateway[otel]``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.metrics import OPERATIONS
from gateway.observe import CALL_SCOPE_KEY, Call, QuietObserver
from providers.errors import ProviderError
from providers.upstream import TRACE_HEADERS

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

INSTRUMENTATION = "llm-gateway"
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}
"""Provider type -> the conventions' well-known ``gen_ai.provider.name``; other types keep
their own name."""
PROPAGATED = (b"traceparent", b"tracestate")


class ConfigurationError(Exception):
    """Tracing was asked for but cannot start (the ``otel`` extra is missing, an unknown
    exporter): one line for the operator."""


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces.

    The specification's default exporter is ``otlp``; the gateway stays quiet instead, and
    starts tracing only when an exporter or an OTLP endpoint is named.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def provider_from_environment(environ: Mapping[str, str] = os.environ) -> TracerProvider:
    """A tracer provider with the exporters, sampler and resource the variables name."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.util._importlib_metadata import entry_points
    except ImportError:
        raise ConfigurationError(
            "OTEL_TRACES_EXPORTER is set but OpenTelemetry is not installed: "
            "pip install 'llm-gateway[otel]'"
        ) from None
    names = [
        n.strip()
        for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")
        if n.strip() and n.strip() != "none"
    ] or ["otlp"]
    # The resource and the sampler read OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and
    # OTEL_TRACES_SAMPLER(_ARG) themselves.
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "llm-gateway"}))
    provider = TracerProvider(resource=resource)
    for name in names:
        entry = name
        if name == "otlp":  # the specification's default protocol is http/protobuf
            protocol = environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            )
            entry = "otlp_proto_grpc" if protocol.strip() == "grpc" else "otlp_proto_http"
        found = list(entry_points(group="opentelemetry_traces_exporter", name=entry))
        if not found:
            raise ConfigurationError(
                f"OTEL_TRACES_EXPORTER: no exporter named {name!r} is installed "
                "(built in: console; otlp needs 'llm-gateway[otel]')"
            )
        exporter = found[0].load()()
        # The console exporter writes as each span ends (what a person watching expects);
        # the others batch, off the request's path.
        processor = SimpleSpanProcessor if name == "console" else BatchSpanProcessor
        provider.add_span_processor(processor(exporter))
    return provider


class _Trace:
    """One request's spans: the server span and the attempt's client span, when one is open."""

    __slots__ = ("attempt", "content", "server")

    def __init__(self, server: Span) -> None:
        self.server = server
        self.attempt: Span | None = None
        self.content: Any = None  # a gateway.tracing_content.Capture when content is traced


class Tracing(QuietObserver):
    """The middleware (server spans) and the observer (client spans) of one app."""

    def __init__(
        self,
        tracer_provider: TracerProvider,
        *,
        provider_types: Mapping[str, str] = {},
        trace_content: bool = False,
        untraced: tuple[str, ...] = (),
    ) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.trace = trace  # the module, kept: an import per request would cost a lookup
        self.routes: frozenset[str] = frozenset()  # paths that name a server span
        self.tracer_provider = tracer_provider
        self.tracer: Tracer = tracer_provider.get_tracer(INSTRUMENTATION)
        self.propagator = TraceContextTextMapPropagator()
        self.provider_names = {
            name: PROVIDER_NAMES.get(kind, kind) for name, kind in provider_types.items()
        }
        self.trace_content = trace_content
        prefixes = [p.rstrip("/") for p in untraced]
        self.untraced = frozenset(prefixes)
        self.untraced_prefixes = tuple(p + "/" for p in prefixes)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        return _ServerSpans(app, self)

    # Observer
    def attempt_started(self, call: Call, deployment: str) -> None:
        trace = self.trace
        state: _Trace | None = call.trace
        if state is None:
            return
        self._end_attempt(state, call.error_code or "cancelled")
        provider, _, model = deployment.partition("/")
        operation = _operation(call.surface)
        span = self.tracer.start_span(
            f"{operation} {model}",
            context=trace.set_span_in_context(state.server),
            kind=trace.SpanKind.CLIENT,
        )
        state.attempt = span
        if span.is_recording():
            span.set_attributes(
                {
                    "gen_ai.operation.name": operation,
                    "gen_ai.provider.name": self.provider_names.get(provider, provider),
                    "gen_ai.request.model": model,
                    "gen_ai.request.stream": call.stream,
                    "llm_gateway.deployment": deployment,
                    "llm_gateway.attempt": call.attempts,
                }
            )
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=trace.set_span_in_context(span))
        TRACE_HEADERS.set(
            b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in carrier.items())
        )

    def attempt_finished(self, call: Call, deployment: str, error: ProviderError | None) -> None:
        state: _Trace | None = call.trace
        if state is None or state.attempt is None:
            return
        span = state.attempt
        if error is None:  # the first chunk: the attempt goes on until the answer ends
            if span.is_recording() and call.attempt_started_at is not None:
                ttfc = time.perf_counter() - call.attempt_started_at
                span.set_attribute("gen_ai.response.time_to_first_chunk", ttfc)
            return
        self._end_attempt(state, error.code, message=error.message)

    def finished(self, call: Call) -> None:
        state: _Trace | None = call.trace
        if state is None:
            return
        TRACE_HEADERS.set(b"")
        error = call.error_code
        if error is None and call.client_left:
            error = "client_disconnected"
        attempt = state.attempt
        if attempt is not None:
            if attempt.is_recording():
                attempt.set_attributes(self._outcome(call, attempt=True))
            self._end_attempt(state, error)
        server = state.server
        if server.is_recording():
            attributes = self._outcome(call, attempt=False)
            attributes["http.response.status_code"] = call.status
            if call.surface is not None:
                attributes["gen_ai.operation.name"] = _operation(call.surface)
                if call.model is not None:
                    attributes["gen_ai.request.model"] = call.model
                attributes["gen_ai.request.stream"] = call.stream
                if call.deployment is not None:
                    provider = call.deployment.partition("/")[0]
                    attributes["gen_ai.provider.name"] = self.provider_names.get(provider, provider)
            if call.attempts:
                attributes["llm_gateway.attempts"] = call.attempts
            if error is not None or call.status >= 500:
                # A client's mistake (4xx) is named, but is not the server's error.
                _set_error(
                    server,
                    error or str(call.status),
                    failed=call.client_left or call.status == 0 or call.status >= 500,
                )
            server.set_attributes(attributes)
            if state.content is not None:
                server.set_attributes(state.content.attributes())
        server.end()

    def _outcome(self, call: Call, *, attempt: bool) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        if call.first_token_at is not None:
            if call.deployment is not None:
                attributes["gen_ai.response.model"] = call.deployment.partition("/")[2]
            if call.stream and not attempt:
                attributes["gen_ai.response.time_to_first_chunk"] = (
                    call.first_token_at - call.started
                )
        usage = call.usage
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
            if usage.cached_tokens:
                attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
            if usage.reasoning_tokens:
                attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
        if call.finish_reason is not None:
            attributes["gen_ai.response.finish_reasons"] = [call.finish_reason]
        return attributes

    def _end_attempt(self, state: _Trace, error: str | None, *, message: str = "") -> None:
        span = state.attempt
        if span is None:
            return
        state.attempt = None
        if error is not None:
            _set_error(span, error, message)
        span.end()


class _ServerSpans:
    """Starts each request's SERVER span, a child of the client's ``traceparent`` if any.

    Sits inside :class:`gateway.middleware.RequestContext` (which made the request's
    :class:`Call`); :meth:`Tracing.finished`, called by that middleware once the response is
    done, completes the span with the outcome and ends it.
    """

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call: Call | None = scope.get(CALL_SCOPE_KEY)
        tracing = self.tracing
        if (
            scope["type"] != "http"
            or call is None
            or call.path in tracing.untraced
            or call.path.startswith(tracing.untraced_prefixes)
        ):
            await self.app(scope, receive, send)
            return
        trace = tracing.trace
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in PROPAGATED
        }
        parent = tracing.propagator.extract(carrier) if carrier else None
        method = scope["method"]
        span = tracing.tracer.start_span(
            f"{method} {call.path}" if call.path in tracing.routes else method,
            context=parent,
            kind=trace.SpanKind.SERVER,
        )
        if span.is_recording():
            span.set_attributes(
                {
                    "http.request.method": method,
                    "url.path": call.path,
                    "llm_gateway.request_id": call.request_id,
                }
            )
        state = call.trace = _Trace(span)
        if tracing.trace_content and span.is_recording():
            from gateway.tracing_content import Capture

            capture = state.content = Capture()
            receive, send = capture.wrap(receive, send)
        with trace.use_span(span, end_on_exit=False, record_exception=False):
            await self.app(scope, receive, send)


def _set_error(span: Span, error_type: str, message: str = "", *, failed: bool = True) -> None:
    from opentelemetry.trace import Status, StatusCode

    if span.is_recording():
        span.set_attribute("error.type", error_type)
        if failed:
            span.set_status(Status(StatusCode.ERROR, message or error_type))


def _operation(surface: str | None) -> str:
    return "http" if surface is None else OPERATIONS.get(surface, surface)
