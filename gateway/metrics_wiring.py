"""What ``create_app`` adds for observability, in one object: the metrics observer, the
``/metrics`` endpoint and its gauge refresher, and tracing when the ``OTEL_*`` variables ask.

Each part exists only when it is on: with ``GATEWAY_METRICS=false`` and no ``OTEL_*``, the
app has no extra observer, route, task or middleware.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp

from gateway import tracing
from gateway.metrics import GatewayMetrics, GaugeRefresher, MetricsObserver
from gateway.metrics_http import MetricsEndpoint, refreshing
from gateway.metrics_workers import WorkerShare, workers_dir
from gateway.observe import Observer
from gateway.routing import Deployment
from gateway.settings import ConfigError, Settings
from providers.http1 import PoolTransport

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


class Telemetry:
    """Metrics and traces of one app. ``tracer_provider``: traces into this provider whatever
    the environment says (tests use an in-memory exporter); None: as ``OTEL_*`` say.
    ``untraced``: path prefixes with no spans (the UI mounted at /ui: its page loads and
    polls are not the gateway's work)."""

    def __init__(
        self,
        settings: Settings,
        *,
        deployments: Sequence[Deployment],
        transports: Mapping[str, PoolTransport],
        models: Sequence[str],
        tracer_provider: TracerProvider | None = None,
        untraced: tuple[str, ...] = (),
    ) -> None:
        self.metrics: MetricsObserver | None = None
        self.endpoint: MetricsEndpoint | None = None
        self.refresh: GaugeRefresher | None = None
        self.share: WorkerShare | None = None
        self.tracing: tracing.Tracing | None = None
        if settings.metrics:
            admin_key = None
            mode = settings.metrics_auth or ("admin" if settings.admin_key else "open")
            if mode == "admin":
                if settings.admin_key is None:
                    raise ConfigError(
                        "invalid configuration: GATEWAY_METRICS_AUTH=admin needs GATEWAY_ADMIN_KEY"
                    )
                admin_key = settings.admin_key.get_secret_value().encode()
            families = GatewayMetrics()
            self.metrics = MetricsObserver(families, models=models)
            self.refresh = GaugeRefresher(families, deployments, transports)
            directory = workers_dir()  # set by the CLI for --workers N
            if directory is not None:
                self.share = WorkerShare(families, directory)
            self.endpoint = MetricsEndpoint(
                families, refresh=self.refresh, admin_key=admin_key, share=self.share
            )
        if tracer_provider is None and tracing.enabled():
            try:
                tracer_provider = tracing.provider_from_environment()
            except tracing.ConfigurationError as exc:
                raise ConfigError(f"invalid configuration: {exc}") from None
        if tracer_provider is not None:
            self.tracing = tracing.Tracing(
                tracer_provider,
                provider_types={name: p.type for name, p in settings.providers.items()},
                trace_content=settings.trace_content,
                untraced=untraced,
            )

    @property
    def observers(self) -> list[Observer]:
        return [o for o in (self.metrics, self.tracing) if o is not None]

    @property
    def routes(self) -> dict[str, ASGIApp]:
        return {"/metrics": self.endpoint} if self.endpoint is not None else {}

    @property
    def open_paths(self) -> tuple[str, ...]:
        """``/metrics`` checks the admin key itself (or is open): API keys do not apply."""
        return ("/metrics",) if self.endpoint is not None else ()

    def know_routes(self, hot_paths: Mapping[str, Any]) -> None:
        """The API surfaces' paths: they name the surface of a refused request and a span."""
        surfaces = {
            path: endpoint.surface
            for path, endpoint in hot_paths.items()
            if isinstance(getattr(endpoint, "surface", None), str)
        }
        if self.metrics is not None:
            self.metrics.surfaces.update(surfaces)
        if self.tracing is not None:
            self.tracing.routes = frozenset(surfaces)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        return self.tracing.middleware(app) if self.tracing is not None else app

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """While the app runs: the gauges refreshed; at its end, spans flushed."""
        try:
            if self.refresh is None:
                yield
            else:
                async with refreshing(self.refresh, self.share):
                    yield
        finally:
            if self.tracing is not None:
                self.tracing.tracer_provider.force_flush()
