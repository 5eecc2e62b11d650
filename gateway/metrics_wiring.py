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
from gateway.metrics_http import MetricsEndpoint, ScrapeKeys, refreshing
from gateway.metrics_workers import WorkerShare, workers_dir
from gateway.observe import Observer
from gateway.routing import Deployment
from gateway.settings import ConfigError, Settings
from providers.http1 import PoolTransport

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


def scrape_keys(settings: Settings) -> ScrapeKeys | None:
    """The bearer secrets ``/metrics`` accepts (None: open to anyone who reaches the port).

    A scraper should not hold the admin key, which mints and revokes keys: with
    ``GATEWAY_METRICS_KEY`` it gets a secret that opens ``/metrics`` and nothing else. The
    admin key opens ``/metrics`` too (the UI's dashboard asks for it)."""
    metrics_key, admin_key = settings.metrics_key, settings.admin_key
    mode = settings.metrics_auth or ("key" if metrics_key else "admin" if admin_key else "open")
    if metrics_key is not None and mode != "key":
        raise ConfigError(
            f"invalid configuration: GATEWAY_METRICS_KEY is set but GATEWAY_METRICS_AUTH={mode}"
            " would not accept it (unset GATEWAY_METRICS_AUTH, or set it to key)"
        )
    if mode == "open":
        return None
    if mode == "key" and metrics_key is None:
        raise ConfigError(
            "invalid configuration: GATEWAY_METRICS_AUTH=key needs GATEWAY_METRICS_KEY"
        )
    if mode == "admin" and admin_key is None:
        raise ConfigError(
            "invalid configuration: GATEWAY_METRICS_AUTH=admin needs GATEWAY_ADMIN_KEY"
        )
    if metrics_key is not None:
        value = metrics_key.get_secret_value()
        if len(value) < 16 or value != value.strip():
            raise ConfigError(
                "invalid configuration: GATEWAY_METRICS_KEY must be at least 16 characters,"
                " with no surrounding spaces"
            )
    secrets = [admin_key] if mode == "admin" else [metrics_key, admin_key]
    keys = tuple(s.get_secret_value().encode() for s in secrets if s is not None)
    return ScrapeKeys(keys, "metrics key" if mode == "key" else "admin key")


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
            keys = scrape_keys(settings)
            families = GatewayMetrics()
            self.metrics = MetricsObserver(families, models=models)
            self.refresh = GaugeRefresher(families, deployments, transports)
            directory = workers_dir()  # set by the CLI for --workers N
            if directory is not None:
                self.share = WorkerShare(families, directory)
            self.endpoint = MetricsEndpoint(
                families, refresh=self.refresh, keys=keys, share=self.share
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
