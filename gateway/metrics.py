"""Prometheus metrics: what every request did, counted and timed by one more :class:`Observer`.

Names follow the OpenTelemetry GenAI conventions where one exists (translated to Prometheus:
dots become ``_``, the unit ``s`` becomes ``_seconds``), and ``llm_gateway_*`` otherwise; the
list, with buckets and labels, is in docs/metrics.md.

Labels are bounded by construction, because every distinct label set is a series kept for ever:
a model the configuration does not know becomes ``other``, an error code past the first
:data:`MAX_ERROR_TYPES` becomes ``other``, and nothing a client chooses freely (a key, a prompt,
a request id, a path) is ever a label.

The observer runs on every request, so each event is a few dict updates on the gateway's own
families (:mod:`gateway.metrics_families` says why not prometheus_client's); nothing runs per
streamed chunk. Gauges that describe state rather than events (breakers, pools, deployments'
in-flight counts) are read from the objects themselves by :class:`GaugeRefresher`, every few
seconds and at each scrape, not on the hot path.

Under ``--workers N`` every worker publishes a snapshot of its values to a file in one
directory and a scrape of any worker merges them all (:mod:`gateway.metrics_workers`).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from gateway.metrics_families import (
    CounterFamily,
    Family,
    GaugeFamily,
    HistogramFamily,
    Key,
    Values,
    snapshot,
)
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
DURATION_BOUNDS = tuple(float(b) for b in DURATION_BUCKETS)
TOKEN_BOUNDS = tuple(float(b) for b in TOKEN_BUCKETS)
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
    """The gateway's metric families, in the order the exposition lists them.

    One per app: tests build many apps in one process. The values live in the families
    themselves (:mod:`gateway.metrics_families`); other workers' are merged at each scrape
    (:mod:`gateway.metrics_workers`).
    """

    def __init__(self) -> None:
        self.requests = CounterFamily(
            "llm_gateway_requests",
            "Client requests, by API surface, requested model, answering provider, status class "
            "and error code",
            ["surface", MODEL, PROVIDER, "status_class", ERROR],
        )
        self.disconnects = CounterFamily(
            "llm_gateway_client_disconnects",
            "Requests whose client went away before the answer was complete",
            ["surface"],
        )
        self.attempts = CounterFamily(
            "llm_gateway_upstream_attempts",
            "Upstream attempts (the first one, retries and fallbacks)",
            ["deployment", PROVIDER],
        )
        self.retries = CounterFamily(
            "llm_gateway_upstream_retries",
            "Upstream attempts after a request's first: retries and fallbacks",
            ["deployment", PROVIDER],
        )
        self.attempt_errors = CounterFamily(
            "llm_gateway_upstream_errors",
            "Upstream attempts that failed, by error code",
            ["deployment", PROVIDER, ERROR],
        )
        self.tokens = CounterFamily(
            "llm_gateway_tokens",
            "Tokens, by type: input, output, and of those cached (input) and reasoning (output)",
            [OP, PROVIDER, MODEL, TOKEN_TYPE],
        )
        self.duration = HistogramFamily(
            "gen_ai_server_request_duration_seconds",
            "Time from a request's arrival to the end of its answer",
            [OP, PROVIDER, MODEL, ERROR],
            DURATION_BUCKETS,
        )
        self.ttft = HistogramFamily(
            "gen_ai_server_time_to_first_token_seconds",
            "Time from a streamed request's arrival to its first chunk (successful streams)",
            [OP, PROVIDER, MODEL],
            TTFT_BUCKETS,
        )
        self.tpot = HistogramFamily(
            "gen_ai_server_time_per_output_token_seconds",
            "(duration - time to first token) / (output tokens - 1) of successful streams",
            [OP, PROVIDER, MODEL],
            TPOT_BUCKETS,
        )
        self.token_usage = HistogramFamily(
            "gen_ai_client_token_usage",
            "Tokens per request, input and output",
            [OP, PROVIDER, MODEL, TOKEN_TYPE],
            TOKEN_BUCKETS,
        )
        self.attempt_duration = HistogramFamily(
            "gen_ai_client_operation_duration_seconds",
            "Duration of an upstream attempt, to its end or its failure",
            [OP, PROVIDER, MODEL, ERROR],
            DURATION_BUCKETS,
        )
        self.inflight = GaugeFamily(
            "llm_gateway_inflight_requests",
            "Requests being answered (from their first upstream attempt to their end)",
            ["surface"],
        )
        self.inflight_streams = GaugeFamily(
            "llm_gateway_inflight_streams",
            "Streamed answers in progress (from the first chunk to the end)",
            ["surface"],
        )
        self.breaker = GaugeFamily(
            "llm_gateway_breaker_state",
            "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open (the worst worker's)",
            ["deployment", PROVIDER],
            merge="max",
        )
        self.deployment_inflight = GaugeFamily(
            "llm_gateway_deployment_inflight_requests",
            "Upstream attempts in progress per deployment",
            ["deployment", PROVIDER],
        )
        self.pool = GaugeFamily(
            "llm_gateway_pool_connections",
            "Upstream connections per provider: in_use, idle",
            [PROVIDER, "state"],
        )
        self.pool_waiting = GaugeFamily(
            "llm_gateway_pool_waiting_requests",
            "Requests waiting for a free upstream connection, per provider",
            [PROVIDER],
        )
        self.families: tuple[Family, ...] = (
            *(self.requests, self.disconnects, self.attempts, self.retries),
            *(self.attempt_errors, self.tokens, self.duration, self.ttft, self.tpot),
            *(self.token_usage, self.attempt_duration, self.inflight, self.inflight_streams),
            *(self.breaker, self.deployment_inflight, self.pool, self.pool_waiting),
        )

    def snapshot(self) -> dict[str, Values]:
        return snapshot(self.families)


class GaugeRefresher:
    """Sets the state gauges from the objects that hold the state, for this process."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        deployments: Sequence[Deployment],
        transports: Mapping[str, PoolTransport],
    ) -> None:
        self.metrics = metrics
        self.deployments = [(d, (d.model_id, d.provider.name)) for d in deployments]
        self.pools = list(transports.items())

    def __call__(self) -> None:
        m = self.metrics
        for deployment, key in self.deployments:
            m.breaker.set(key, BREAKER_STATES.get(deployment.breaker.state, 2))
            m.deployment_inflight.set(key, deployment.in_flight)
        for name, transport in self.pools:
            busy, free, queued = transport.connection_counts()
            m.pool.set((name, "in_use"), busy)
            m.pool.set((name, "idle"), free)
            m.pool_waiting.set((name,), queued)


class _Shape:
    """The series a finished request of one label set updates: each is looked up (made) on its
    first use and then kept here, so the common request costs one dict look-up in all."""

    __slots__ = (
        "attempt",
        "disconnects",
        "duration",
        "inflight",
        "labels",
        "requests",
        "streams",
        "surface",
        "tokens_in",
        "tokens_out",
        "tpot",
        "ttft",
        "usage_in",
        "usage_out",
    )

    def __init__(self, surface: str, labels: Key, requests: list[Any]) -> None:
        self.surface = surface
        self.labels = labels  # op, provider, model, error
        self.requests = requests
        self.duration: list[Any] | None = None
        self.attempt: list[Any] | None = None
        self.disconnects: list[Any] | None = None
        self.inflight: list[Any] | None = None
        self.streams: list[Any] | None = None
        self.tokens_in: list[Any] | None = None
        self.tokens_out: list[Any] | None = None
        self.usage_in: list[Any] | None = None
        self.usage_out: list[Any] | None = None
        self.ttft: list[Any] | None = None
        self.tpot: list[Any] | None = None


class MetricsObserver:
    """Counts and times requests and upstream attempts into :class:`GatewayMetrics`.

    ``models``: the names a client may ask for (model ids and aliases), kept as label values;
    ``surfaces``: path -> surface, to name the surface of requests refused before it ran (401).

    This runs several times per request, so it keeps the cells it updates (:class:`_Shape`,
    per deployment, per surface) and inlines the histogram's bisect: a successful request is a
    few look-ups and list updates. Every cache is keyed by bounded values only.
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
        self._shapes: dict[tuple[str, str, str | None, int, str], _Shape] = {}
        self._deployments: dict[str, tuple[list[Any], Key]] = {}
        self._inflight: dict[str, list[Any]] = {}
        self._streams: dict[str, list[Any]] = {}

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
        known = self._deployments.get(deployment)
        if known is None:
            labels: Key = (deployment, _provider(deployment))
            known = self._deployments[deployment] = (self.metrics.attempts.cell(labels), labels)
        attempts, key = known
        if call.attempts <= 1:
            surface = call.surface or NONE
            cell = self._inflight.get(surface)
            if cell is None:
                cell = self._inflight[surface] = self.metrics.inflight.cell((surface,))
            cell[0] += 1
        else:
            self.metrics.retries.inc(key)
        attempts[0] += 1

    def attempt_finished(self, call: Call, deployment: str, error: ProviderError | None) -> None:
        if error is None:
            return
        provider = _provider(deployment)
        code = self.error_type(error.code)
        self.metrics.attempt_errors.inc((deployment, provider, code))
        # A failure after the first chunk is timed with the request, at its end.
        if call.first_token_at is None and call.attempt_started_at is not None:
            self.metrics.attempt_duration.observe(
                (_operation(call.surface), provider, self.model(call.model), code),
                self.clock() - call.attempt_started_at,
            )

    def first_token(self, call: Call) -> None:
        if call.stream:
            surface = call.surface or NONE
            cell = self._streams.get(surface)
            if cell is None:
                cell = self._streams[surface] = self.metrics.inflight_streams.cell((surface,))
            cell[0] += 1

    def finished(self, call: Call) -> None:
        now = self.clock()
        surface = call.surface or self.surfaces.get(call.path, NONE)
        name = call.model
        model = NONE if name is None else name if name in self.models else OTHER
        code = call.error_code
        if code is None and call.client_left:
            code = "client_disconnected"
        elif code is None and call.status >= 400:
            code = str(call.status)  # refused before a surface ran (auth, unknown path)
        error = self.error_type(code) if code else ""
        shape_key = (surface, model, call.deployment, call.status, error)
        shape = self._shapes.get(shape_key)
        if shape is None:
            shape = self._shapes[shape_key] = self._shape(call, surface, model, error)
        shape.requests[0] += 1
        m = self.metrics
        if call.client_left:
            if shape.disconnects is None:
                shape.disconnects = m.disconnects.cell((surface,))
            shape.disconnects[0] += 1
        if call.surface is None:
            return
        if call.attempts:
            if shape.inflight is None:
                shape.inflight = m.inflight.cell((surface,))
            shape.inflight[0] -= 1
        first = call.first_token_at
        if call.stream and first is not None:
            if shape.streams is None:
                shape.streams = m.inflight_streams.cell((surface,))
            shape.streams[0] -= 1
        labels = shape.labels
        duration = now - call.started
        if shape.duration is None:
            shape.duration = m.duration.cell(labels)
        cell = shape.duration
        cell[bisect_left(DURATION_BOUNDS, duration)] += 1
        cell[-1] += duration
        if first is not None and call.attempt_started_at is not None:
            if shape.attempt is None:
                shape.attempt = m.attempt_duration.cell(labels)
            cell, elapsed = shape.attempt, now - call.attempt_started_at
            cell[bisect_left(DURATION_BOUNDS, elapsed)] += 1
            cell[-1] += elapsed
        usage = call.usage
        if usage is not None:
            if shape.tokens_in is None:
                self._usage_cells(shape)
            assert shape.tokens_in is not None and shape.tokens_out is not None
            assert shape.usage_in is not None
            shape.tokens_in[0] += usage.input_tokens
            shape.tokens_out[0] += usage.output_tokens
            cell, count = shape.usage_in, usage.input_tokens
            cell[bisect_left(TOKEN_BOUNDS, count)] += 1
            cell[-1] += count
            if shape.usage_out is not None:
                cell, count = shape.usage_out, usage.output_tokens
                cell[bisect_left(TOKEN_BOUNDS, count)] += 1
                cell[-1] += count
            op, provider, model, _ = labels
            if usage.cached_tokens:
                m.tokens.inc((op, provider, model, "cached"), usage.cached_tokens)
            if usage.reasoning_tokens:
                m.tokens.inc((op, provider, model, "reasoning"), usage.reasoning_tokens)
        if not call.stream or first is None or error:
            return
        ttft = first - call.started
        if shape.ttft is None:
            shape.ttft = m.ttft.cell(labels[:3])
        m.ttft.observe_into(shape.ttft, ttft)
        if usage is not None and usage.output_tokens > 1:
            if shape.tpot is None:
                shape.tpot = m.tpot.cell(labels[:3])
            m.tpot.observe_into(shape.tpot, (duration - ttft) / (usage.output_tokens - 1))

    def _shape(self, call: Call, surface: str, model: str, error: str) -> _Shape:
        provider = _provider(call.deployment) if call.deployment else NONE
        status = call.status
        requests = self.metrics.requests.cell(
            (surface, model, provider, f"{status // 100}xx" if status else NONE, error)
        )
        return _Shape(surface, (_operation(surface), provider, model, error), requests)

    def _usage_cells(self, shape: _Shape) -> None:
        """Token series appear with a request's first usage, input and output together."""
        op, provider, model, _ = shape.labels
        tokens, usage = self.metrics.tokens, self.metrics.token_usage
        shape.tokens_in = tokens.cell((op, provider, model, "input"))
        shape.tokens_out = tokens.cell((op, provider, model, "output"))
        shape.usage_in = usage.cell((op, provider, model, "input"))
        if op != "embeddings":
            shape.usage_out = usage.cell((op, provider, model, "output"))


def _provider(deployment: str) -> str:
    """A deployment's provider: the part of its id before '/' (configured names only)."""
    return deployment.partition("/")[0]


def _operation(surface: str | None) -> str:
    if surface is None:
        return NONE
    return OPERATIONS.get(surface, surface)
