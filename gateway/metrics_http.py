"""``GET /metrics``, the refresh of the state gauges, and prometheus_client's multiprocess mode.

One process (``--workers 1``): the values are in memory and a scrape reads them.

Several workers: each is a process of its own, and a scrape lands on one of them; every worker
must be counted. prometheus_client's multiprocess mode does that with no coordination on the
hot path: each process writes its values to memory-mapped files named after its pid in
``PROMETHEUS_MULTIPROC_DIR``, and a scrape sums the files. The CLI makes a fresh directory for
each start (a directory reused across starts would carry old counts; the docs say wipe it) and
removes it at exit. Counters of a worker that died stay (a counter must not go down); its
gauges are dropped at the next scrape (``live*`` modes), so a restarted worker's in-flight
count is not counted twice. The alternative, one worker per container and a scrape of each,
needs nothing here: then the directory is simply never set.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hmac
import logging
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import multiprocess as prom_multiprocess
from starlette.types import Receive, Scope, Send

from gateway.asgi import header, send_error
from gateway.errors import AuthenticationError, MethodNotAllowed
from gateway.metrics import GatewayMetrics

MULTIPROC_VAR = "PROMETHEUS_MULTIPROC_DIR"
REFRESH_SECONDS = 2.0
"""How often each process sets its state gauges (breakers, pools) when not scraped itself."""
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db$")
logger = logging.getLogger("gateway")


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_VAR) or None


def prepare_multiprocess_dir() -> Callable[[], None]:
    """Set up ``PROMETHEUS_MULTIPROC_DIR`` for workers about to be spawned; return the cleanup.

    A directory given by the operator is emptied of old values; otherwise a private temporary
    one is made (and removed by the cleanup). Must run before the workers start: they choose
    multiprocess mode when they import prometheus_client.
    """
    given = multiprocess_dir()
    if given is not None:
        os.makedirs(given, exist_ok=True)
        for path in glob.glob(os.path.join(given, "*.db")):
            os.remove(path)
        return lambda: None
    made = tempfile.mkdtemp(prefix="llm-gateway-metrics-")
    os.environ[MULTIPROC_VAR] = made

    def cleanup() -> None:
        os.environ.pop(MULTIPROC_VAR, None)
        shutil.rmtree(made, ignore_errors=True)

    return cleanup


def _drop_dead_gauges(path: str) -> None:
    """Forget the live gauges of processes that are gone (a worker that crashed or was
    restarted never said so)."""
    for name in os.listdir(path):
        match = _LIVE_GAUGE_FILE.match(name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            prom_multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
        except PermissionError:  # alive, someone else's
            pass


def exposition(metrics: GatewayMetrics, path: str | None) -> bytes:
    """The text format of every metric: this process's, or every process's in ``path``."""
    if path is None:
        return generate_latest(metrics.registry)
    _drop_dead_gauges(path)
    registry = CollectorRegistry()
    prom_multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


class MetricsEndpoint:
    """``GET /metrics`` (raw ASGI). With ``admin_key``, only for ``Authorization: Bearer``
    that key; the answer to anyone else is the API's own 401."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        *,
        refresh: Callable[[], None],
        admin_key: bytes | None = None,
    ) -> None:
        self.metrics = metrics
        self.refresh = refresh
        self.admin_key = admin_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await send_error(send, MethodNotAllowed("use GET for /metrics"))
            return
        if self.admin_key is not None:
            problem = self._check(header(scope, b"authorization"))
            if problem is not None:
                await send_error(send, problem)
                return
        self.refresh()
        path = multiprocess_dir()
        if path is None:
            body = exposition(self.metrics, None)
        else:  # file reads: off the event loop
            body = await asyncio.to_thread(exposition, self.metrics, path)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", CONTENT_TYPE_LATEST.encode()),
                    (b"cache-control", b"no-store"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    def _check(self, value: bytes | None) -> AuthenticationError | None:
        assert self.admin_key is not None
        scheme, _, token = (value or b"").partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return AuthenticationError(
                "/metrics needs the admin key: send it as 'Authorization: Bearer <key>'",
                code="missing_admin_key",
            )
        if not hmac.compare_digest(token.strip(), self.admin_key):
            return AuthenticationError("Invalid admin key", code="invalid_admin_key")
        return None


@asynccontextmanager
async def refreshing(refresh: Callable[[], None]) -> AsyncIterator[None]:
    """Run ``refresh`` every :data:`REFRESH_SECONDS` while the app runs; at its end, under
    multiprocess mode, withdraw this process's live gauges."""

    async def loop() -> None:
        while True:
            try:
                refresh()
            except Exception:  # a metric must never take the gateway down
                logger.exception("refreshing the metrics' gauges failed")
            await asyncio.sleep(REFRESH_SECONDS)

    task = asyncio.get_running_loop().create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        path = multiprocess_dir()
        if path is not None:
            with contextlib.suppress(OSError):
                prom_multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]
