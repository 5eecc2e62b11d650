"""Prometheus metrics: what every request did, counted and timed by one more :class:`Observer`.

Names follow the OpenTelemetry GenAI conventions where one exists (translated to Prometheus:
dots become ``_``, the unit ``s`` becomes ``_seconds``), and ``llm_gateway_*`` otherwise; the
list, with buckets and labels, is in docs/metrics.md.

Labels are bounded by construction, because every distinct label set is a series kept for ever:
a model the configuration does not know becomes ``other``, an error code past the first
:data:`MAX_ERROR_TYPES` becomes ``other``, and nothing a client chooses freely (a key, a prompt,
a request id, a path) is ever a label.

The observer runs on every request, so each event is a few dictionary look-ups and
``inc``/``observe`` calls on cached label children; nothing runs per streamed chunk. Gauges that
describe state rather than events (breakers, pools, deployments' in-flight counts) are read
from the objects themselves by :meth:`GatewayMetrics.refresh`, every few seconds and at each
scrape, not on the hot path.

Under ``--workers N`` prometheus_client's multiprocess mode is on (see
:mod:`gateway.metrics_http`): every worker writes its values to files in one directory and a
scrape of any worker sums them all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from gateway.observe import Call
from gateway.routing import Deployment
from providers.errors import ProviderError
from providers.http1 import PoolTransport

# Buckets: the GenAI conventions' own, extended where an LLM gateway sees longer times.
DURATION_BUCKETS = (
    *(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92),
    *(163.84, 327.68),  # long reasoning answers: up to the default 600 s total timeout
)
TTFT_BUCKETS = (
    *(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0),
    *(15.0, 30.0, 60.0),  # queued or reasoning models (as Envoy AI Gateway does)
)
TPOT_BUCKETS = (
    *(0.001, 0.0025, 0.005),  # small models and local GPUs stream faster than 100 tokens/s
    *(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5),
)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
MAX_ERROR_TYPES = 64
"""Distinct ``error_type`` values kept; later ones are counted as ``other``."""
OPERATIONS = {
    "chat": "chat",
    "messages": "chat",
    "responses": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}
"""Surface -> ``gen_ai.operation.name``; a surface not listed is its own operation name."""
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}
NONE = "none"
OTHER = "other"

OP = "gen_ai_operation_name"
PROVIDER = "gen_ai_provider_name"
MODEL = "gen_ai_request_model"
ERROR = "error_type"
TOKEN_TYPE = "gen_ai_token_type"


class GatewayMetrics:
    """The gateway's metric families, registered in their own registry.

    One per app: tests build many apps in one process. In multiprocess mode the values live in
    files shared by the workers and the registry only names the families.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # ``*_created`` series (a timestamp per label set) would double what a scrape reads,
        # and multiprocess mode has none: off, for every registry of the process.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "llm_gateway_requests",
            "Client requests, by API surface, requested model, answering provider, status class "
            "and error code",
            ["surface", MODEL, PROVIDER, "status_class", ERROR],
            registry=r,
        )
        self.disconnects = Counter(
            "llm_gateway_client_disconnects",
            "Requests whose client went away before the answer was complete",
            ["surface"],
            registry=r,
        )
        self.attempts = Counter(
            "llm_gateway_upstream_attempts",
            "Upstream attempts (the first one, retries and fallbacks)",
            ["deployment", PROVIDER],
            registry=r,
        )
        self.retries = Counter(
            "llm_gateway_upstream_retries",
            "Upstream attempts after a request's first: retries and fallbacks",
            ["deployment", PROVIDER],
            registry=r,
        )
        self.attempt_errors = Counter(
            "llm_gateway_upstream_errors",
            "Upstream attempts that failed, by error code",
            ["deployment", PROVIDER, ERROR],
            registry=r,
        )
        self.tokens = Counter(
            "llm_gateway_tokens",
            "Tokens, by type: input, output, and of those cached (input) and reasoning (output)",
            [OP, PROVIDER, MODEL, TOKEN_TYPE],
            registry=r,
        )
        self.duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "Time from a request's arrival to the end of its answer",
            [OP, PROVIDER, MODEL, ERROR],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time from a streamed request's arrival to its first chunk (successful streams)",
            [OP, PROVIDER, MODEL],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "(duration - time to first token) / (output tokens - 1) of successful streams",
            [OP, PROVIDER, MODEL],
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per request, input and output",
            [OP, PROVIDER, MODEL, TOKEN_TYPE],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.attempt_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of an upstream attempt, to its end or its failure",
            [OP, PROVIDER, MODEL, ERROR],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "llm_gateway_inflight_requests",
            "Requests being answered (from their first upstream attempt to their end)",
            ["surface"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.inflight_streams = Gauge(
            "llm_gateway_inflight_streams",
            "Streamed answers in progress (from the first chunk to the end)",
            ["surface"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.breaker = Gauge(
            "llm_gateway_breaker_state",
            "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open (the worst worker's)",
            ["deployment", PROVIDER],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.deployment_inflight = Gauge(
            "llm_gateway_deployment_inflight_requests",
            "Upstream attempts in progress per deployment",
            ["deployment", PROVIDER],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool = Gauge(
            "llm_gateway_pool_connections",
            "Upstream connections per provider: in_use, idle",
            [PROVIDER, "state"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_waiting = Gauge(
            "llm_gateway_pool_waiting_requests",
            "Requests waiting for a free upstream connection, per provider",
            [PROVIDER],
            registry=r,
            multiprocess_mode="livesum",
        )


class GaugeRefresher:
    """Sets the state gauges from the objects that hold the state, for this process."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        deployments: Sequence[Deployment],
        transports: Mapping[str, PoolTransport],
    ) -> None:
        self.deployments = [
            (
                d,
                metrics.breaker.labels(d.model_id, d.provider.name),
                metrics.deployment_inflight.labels(d.model_id, d.provider.name),
            )
            for d in deployments
        ]
        self.pools = [
            (
                transport,
                metrics.pool.labels(name, "in_use"),
                metrics.pool.labels(name, "idle"),
                metrics.pool_waiting.labels(name),
            )
            for name, transport in transports.items()
        ]

    def __call__(self) -> None:
        for deployment, breaker, inflight in self.deployments:
            breaker.set(BREAKER_STATES.get(deployment.breaker.state, 2))
            inflight.set(deployment.in_flight)
        for transport, in_use, idle, waiting in self.pools:
            busy, free, queued = transport.connection_counts()
            in_use.set(busy)
            idle.set(free)
            waiting.set(queued)


class _Children:
    """Label children of one family, cached by their label values (``labels()`` costs more
    than the ``inc`` itself)."""

    __slots__ = ("cache", "family")

    def __init__(self, family: Any) -> None:
        self.family = family
        self.cache: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self.cache.get(values)
        if child is None:
            child = self.cache[values] = self.family.labels(*values)
        return child


class MetricsObserver:
    """Counts and times requests and upstream attempts into :class:`GatewayMetrics`.

    ``models``: the names a client may ask for (model ids and aliases), kept as label values;
    ``surfaces``: path -> surface, to name the surface of requests refused before it ran (401).
    """

    def __init__(
        self,
        metrics: GatewayMetrics,
        *,
        models: Iterable[str],
        surfaces: Mapping[str, str] = {},
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.metrics = metrics
        self.models = frozenset(models)
        self.surfaces = dict(surfaces)
        self.clock = clock
        self._errors: set[str] = set()
        m = metrics
        self._requests = _Children(m.requests)
        self._disconnects = _Children(m.disconnects)
        self._attempts = _Children(m.attempts)
        self._retries = _Children(m.retries)
        self._attempt_errors = _Children(m.attempt_errors)
        self._tokens = _Children(m.tokens)
        self._duration = _Children(m.duration)
        self._ttft = _Children(m.ttft)
        self._tpot = _Children(m.tpot)
        self._token_usage = _Children(m.token_usage)
        self._attempt_duration = _Children(m.attempt_duration)
        self._inflight = _Children(m.inflight)
        self._streams = _Children(m.inflight_streams)

    # label values
    def model(self, name: str | None) -> str:
        if name is None:
            return NONE
        return name if name in self.models else OTHER

    def error_type(self, code: str | None) -> str:
        if not code:
            return ""
        if code in self._errors:
            return code
        if len(self._errors) >= MAX_ERROR_TYPES:
            return OTHER
        self._errors.add(code)
        return code

    # events
    def attempt_started(self, call: Call, deployment: str) -> None:
        provider = _provider(deployment)
        if call.attempts <= 1:
            self._inflight(call.surface or NONE).inc()
        else:
            self._retries(deployment, provider).inc()
        self._attempts(deployment, provider).inc()

    def attempt_finished(self, call: Call, deployment: str, error: ProviderError | None) -> None:
        if error is None:
            return
        provider = _provider(deployment)
        code = self.error_type(error.code)
        self._attempt_errors(deployment, provider, code).inc()
        # A failure after the first chunk is timed with the request, at its end.
        if call.first_token_at is None and call.attempt_started_at is not None:
            self._attempt_duration(
                _operation(call.surface), provider, self.model(call.model), code
            ).observe(self.clock() - call.attempt_started_at)

    def first_token(self, call: Call) -> None:
        if call.stream:
            self._streams(call.surface or NONE).inc()

    def finished(self, call: Call) -> None:
        now = self.clock()
        surface = call.surface or self.surfaces.get(call.path, NONE)
        provider = _provider(call.deployment) if call.deployment else NONE
        model = self.model(call.model)
        code = call.error_code
        if code is None and call.client_left:
            code = "client_disconnected"
        elif code is None and call.status >= 400:
            code = str(call.status)  # refused before a surface ran (auth, unknown path)
        error = self.error_type(code)
        status = call.status
        self._requests(
            surface, model, provider, f"{status // 100}xx" if status else NONE, error
        ).inc()
        if call.client_left:
            self._disconnects(surface).inc()
        if call.surface is None:
            return
        if call.attempts:
            self._inflight(surface).dec()
        first = call.first_token_at
        if call.stream and first is not None:
            self._streams(surface).dec()
        op = _operation(surface)
        duration = now - call.started
        self._duration(op, provider, model, error).observe(duration)
        if first is not None and call.attempt_started_at is not None:
            self._attempt_duration(op, provider, model, error).observe(
                now - call.attempt_started_at
            )
        usage = call.usage
        if usage is not None:
            self._tokens(op, provider, model, "input").inc(usage.input_tokens)
            self._tokens(op, provider, model, "output").inc(usage.output_tokens)
            if usage.cached_tokens:
                self._tokens(op, provider, model, "cached").inc(usage.cached_tokens)
            if usage.reasoning_tokens:
                self._tokens(op, provider, model, "reasoning").inc(usage.reasoning_tokens)
            self._token_usage(op, provider, model, "input").observe(usage.input_tokens)
            if op != "embeddings":
                self._token_usage(op, provider, model, "output").observe(usage.output_tokens)
        if not call.stream or first is None or error:
            return
        ttft = first - call.started
        self._ttft(op, provider, model).observe(ttft)
        if usage is not None and usage.output_tokens > 1:
            tpot = (duration - ttft) / (usage.output_tokens - 1)
            self._tpot(op, provider, model).observe(tpot)


def _provider(deployment: str) -> str:
    """A deployment's provider: the part of its id before '/' (configured names only)."""
    return deployment.partition("/")[0]


def _operation(surface: str | None) -> str:
    if surface is None:
        return NONE
    return OPERATIONS.get(surface, surface)
