"""OpenTelemetry traces from a real gateway, captured with the SDK's in-memory exporter.

The gateway is given a tracer provider (as the ``OTEL_*`` variables would build one); the fault
upstream records the headers it received, so the ``traceparent`` the gateway propagates is
checked against the CLIENT span it names. ``OTEL_TRACES_EXPORTER=console`` is checked on the
real console script.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from gateway import tracing
from gateway.app import create_app
from tests.conftest import fault_provider, settings
from tests.support.clients import sdk
from tests.support.fault_upstream import FaultUpstream
from tests.support.servers import GATEWAY, free_port, serve_in_thread
from tests.test_cli import echo_once

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
PROMPT = "the secret plan is forty two"


@contextlib.contextmanager
def traced_gateway(
    upstream_url: str, *, sampler: Any = None, **values: Any
) -> Iterator[tuple[str, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    models = ["ok", "status:500", "stall:2"]
    providers = {"fault": fault_provider(upstream_url, models=models, max_retries=1)}
    app = create_app(
        settings(providers=providers, breaker_threshold=0, **values), tracer_provider=provider
    )
    try:
        with serve_in_thread(app) as url:
            yield url, exporter
    finally:
        provider.shutdown()


def finished(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    """The spans once ``count`` have ended (the server span ends just after the response)."""
    for _ in range(500):
        spans = list(exporter.get_finished_spans())
        if len(spans) >= count:
            return spans
        time.sleep(0.01)
    raise AssertionError(f"only {len(exporter.get_finished_spans())} spans ended, not {count}")


def by_kind(spans: list[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind == kind]


def test_server_and_client_spans_with_genai_attributes_and_propagation(
    fault_upstream: tuple[str, FaultUpstream], upstream: FaultUpstream
) -> None:
    with traced_gateway(fault_upstream[0]) as (url, exporter):
        client = sdk(url)
        stream = client.chat.completions.create(
            model="fault/ok",
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        )
        usage = next(c.usage for c in stream if c.usage is not None)
        spans = finished(exporter, 2)

    [server] = by_kind(spans, SpanKind.SERVER)
    [attempt] = by_kind(spans, SpanKind.CLIENT)
    # the caller's trace continues: the server span is its child, the attempt the server's
    assert server.context is not None and attempt.context is not None
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    assert server.parent is not None and format(server.parent.span_id, "016x") == CALLER_SPAN
    assert attempt.parent is not None and attempt.parent.span_id == server.context.span_id
    assert attempt.context.trace_id == server.context.trace_id
    # the upstream was told the attempt's span
    [request] = upstream.requests
    sent = request.headers["traceparent"]
    assert sent == f"00-{CALLER_TRACE}-{format(attempt.context.span_id, '016x')}-01"

    assert server.name == "POST /v1/chat/completions"
    assert attempt.name == "chat ok"
    a, s = dict(attempt.attributes or {}), dict(server.attributes or {})
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"  # the provider's type, as the conventions name it
    assert a["gen_ai.request.model"] == "ok"
    assert a["gen_ai.response.model"] == "ok"
    assert a["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert float(a["gen_ai.response.time_to_first_chunk"]) > 0  # type: ignore[arg-type]
    assert s["gen_ai.operation.name"] == "chat"
    assert s["gen_ai.request.model"] == "fault/ok"
    assert s["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert s["http.response.status_code"] == 200
    assert s["gen_ai.request.stream"] is True
    # no content unless asked for
    for span in spans:
        text = json.dumps({k: str(v) for k, v in (span.attributes or {}).items()})
        assert "secret plan" not in text
        assert "gen_ai.input.messages" not in text
        assert span.status.status_code != StatusCode.ERROR


def test_each_attempt_is_a_span_and_failures_are_errors(
    fault_upstream: tuple[str, FaultUpstream], upstream: FaultUpstream
) -> None:
    with traced_gateway(fault_upstream[0]) as (url, exporter):
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "fault/status:500", "messages": [{"role": "user", "content": "x"}]},
        )
        assert response.status_code == 502
        spans = finished(exporter, 3)
    [server] = by_kind(spans, SpanKind.SERVER)
    attempts = by_kind(spans, SpanKind.CLIENT)
    assert len(attempts) == 2  # the first try and one retry
    assert server.context is not None
    for attempt in attempts:
        assert attempt.parent is not None and attempt.parent.span_id == server.context.span_id
        assert attempt.status.status_code == StatusCode.ERROR
        assert (attempt.attributes or {})["error.type"] == "upstream_error"
    assert [(a.attributes or {})["llm_gateway.attempt"] for a in attempts] == [1, 2]
    assert server.status.status_code == StatusCode.ERROR
    assert (server.attributes or {})["error.type"] == "upstream_error"
    # each attempt carried its own span to the upstream
    sent = [r.headers["traceparent"] for r in upstream.requests]
    assert [s.split("-")[2] for s in sent] == [
        format(a.context.span_id, "016x") for a in attempts if a.context is not None
    ]


def test_content_only_when_asked_for(
    fault_upstream: tuple[str, FaultUpstream], upstream: FaultUpstream
) -> None:
    with traced_gateway(fault_upstream[0], trace_content=True) as (url, exporter):
        reply = sdk(url).chat.completions.create(
            model="fault/ok", messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        answer = "".join(c.choices[0].delta.content or "" for c in reply if c.choices)
        spans = finished(exporter, 2)
    [server] = by_kind(spans, SpanKind.SERVER)
    attributes = dict(server.attributes or {})
    messages = json.loads(str(attributes["gen_ai.input.messages"]))
    assert messages == [{"role": "user", "parts": [{"type": "text", "content": PROMPT}]}]
    output = json.loads(str(attributes["gen_ai.output.messages"]))
    assert output[0]["parts"][0]["content"] == answer


def test_unsampled_requests_record_nothing_but_still_propagate(
    fault_upstream: tuple[str, FaultUpstream], upstream: FaultUpstream
) -> None:
    with traced_gateway(fault_upstream[0], sampler=ALWAYS_OFF) as (url, exporter):
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "fault/ok", "messages": [{"role": "user", "content": "x"}]},
        )
        assert response.status_code == 200
        assert exporter.get_finished_spans() == ()
    [request] = upstream.requests
    version, trace_id, span_id, flags = request.headers["traceparent"].split("-")
    assert version == "00"
    assert int(flags, 16) & 1 == 0  # not sampled, and the upstream is told so
    assert int(trace_id, 16) and int(span_id, 16)


def test_off_by_default_nothing_is_sent(
    fault_upstream: tuple[str, FaultUpstream], upstream: FaultUpstream
) -> None:
    assert not tracing.enabled({})
    assert not tracing.enabled({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.enabled({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"})
    assert tracing.enabled({"OTEL_TRACES_EXPORTER": "console"})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    providers = {"fault": fault_provider(fault_upstream[0])}
    with serve_in_thread(create_app(settings(providers=providers))) as url:
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "fault/ok", "messages": [{"role": "user", "content": "x"}]},
            headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        )
        assert response.status_code == 200
    [request] = upstream.requests
    assert "traceparent" not in request.headers  # neither ours nor the client's


def test_an_unknown_exporter_stops_the_start_in_one_line() -> None:
    with pytest.raises(tracing.ConfigurationError, match="no exporter named 'nonesuch'"):
        tracing.provider_from_environment({"OTEL_TRACES_EXPORTER": "nonesuch"})


def test_console_exporter_prints_genai_spans(tmp_path: Path) -> None:
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "gateway-under-test"}
    output = echo_once(tmp_path, env, "a zebra")
    assert '"gen_ai.operation.name": "chat"' in output
    assert '"gen_ai.request.model": "echo/echo"' in output
    assert '"gen_ai.usage.output_tokens":' in output
    assert '"kind": "SpanKind.CLIENT"' in output and '"kind": "SpanKind.SERVER"' in output
    assert '"service.name": "gateway-under-test"' in output
    assert "zebra" not in output  # the prompt: never on a span by default
    assert "Traceback" not in output


def test_the_mounted_ui_is_not_traced() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(settings(), open_prefixes=("/ui",), tracer_provider=provider)
    try:
        with serve_in_thread(app) as url:
            httpx.get(f"{url}/ui/some/page")
            httpx.get(f"{url}/ui")
            assert httpx.get(f"{url}/v1/models").status_code == 200
            [span] = finished(exporter, 1)
    finally:
        provider.shutdown()
    assert span.name == "GET"  # a path that is not an API surface does not name the span
    assert (span.attributes or {})["url.path"] == "/v1/models"
    assert len(exporter.get_finished_spans()) == 1


class _OTLPSink(http.server.BaseHTTPRequestHandler):
    """A collector's OTLP/HTTP endpoint that keeps what it is sent."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.received.append((self.path, self.headers.get("content-type", ""), body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


def test_otlp_endpoint_receives_the_spans(tmp_path: Path) -> None:
    _OTLPSink.received.clear()
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OTLPSink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_address[1]}"}
    try:
        echo_once(tmp_path, env, "a quokka")  # the batch is flushed as the gateway stops
    finally:
        sink.shutdown()
    assert _OTLPSink.received, "no export reached the OTLP endpoint"
    path, content_type, _ = _OTLPSink.received[0]
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    exported = b"".join(b for _, _, b in _OTLPSink.received)
    for expected in (b"gen_ai.operation.name", b"gen_ai.usage.output_tokens", b"echo/echo"):
        assert expected in exported
    assert b"quokka" not in exported  # no prompt on the spans


def test_a_tracing_misconfiguration_stops_the_start_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "nonesuch"}
    done = subprocess.run(
        [GATEWAY, "--no-ui", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "OTEL_TRACES_EXPORTER: no exporter named 'nonesuch'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_client_that_leaves_mid_stream_ends_both_spans_as_errors(
    fault_upstream: tuple[str, FaultUpstream], upstream: FaultUpstream
) -> None:
    body = {
        "model": "fault/stall:2",
        "messages": [{"role": "user", "content": "a b c d"}],
        "stream": True,
    }
    with traced_gateway(fault_upstream[0]) as (url, exporter):
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as r:
            assert next(r.iter_lines()).startswith("data: ")
        spans = finished(exporter, 2)
    [server] = by_kind(spans, SpanKind.SERVER)
    [attempt] = by_kind(spans, SpanKind.CLIENT)
    for span in (server, attempt):
        assert (span.attributes or {})["error.type"] == "client_disconnected"
        assert span.status.status_code == StatusCode.ERROR
