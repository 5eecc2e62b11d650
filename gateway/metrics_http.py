"""``GET /metrics`` and the periodic refresh of the state gauges.

One process (``--workers 1``): the values are in memory and a scrape reads them. Several workers:
each also publishes its snapshot and a scrape merges them (:mod:`gateway.metrics_workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import Receive, Scope, Send

from gateway.asgi import header, send_error
from gateway.errors import AuthenticationError, MethodNotAllowed
from gateway.metrics import GatewayMetrics
from gateway.metrics_families import exposition
from gateway.metrics_workers import PUBLISH_SECONDS, WorkerShare

REFRESH_SECONDS = 2.0
"""How often a lone process sets its state gauges (breakers, pools) when not scraped itself;
a worker among several does it every :data:`~gateway.metrics_workers.PUBLISH_SECONDS`, with its
snapshot."""
logger = logging.getLogger("gateway")


@dataclass(frozen=True, slots=True)
class ScrapeKeys:
    """Who may scrape: any of ``keys`` as a bearer token; ``name`` for the 401's words and
    code (``metrics key``: the metrics key or the admin key; ``admin key``: that key only)."""

    keys: tuple[bytes, ...]
    name: str


class MetricsEndpoint:
    """``GET /metrics`` (raw ASGI). With ``keys``, only for ``Authorization: Bearer`` one of
    them (the metrics key, the admin key); the answer to anyone else is the API's own 401."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        *,
        refresh: Callable[[], None],
        keys: ScrapeKeys | None = None,
        share: WorkerShare | None = None,
    ) -> None:
        self.metrics = metrics
        self.refresh = refresh
        self.keys = keys
        self.share = share

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await send_error(send, MethodNotAllowed("use GET for /metrics"))
            return
        if self.keys is not None:
            problem = self._check(self.keys, header(scope, b"authorization"))
            if problem is not None:
                await send_error(send, problem)
                return
        self.refresh()
        families = self.metrics.families
        if self.share is None:
            body = exposition(families, self.metrics.snapshot())
        else:
            # Snapshot and publish here, on the loop (where the periodic publish runs too: one
            # writer of this worker's file); reading the others' and the text, off it.
            share = self.share
            own = share.publish()
            body = await asyncio.to_thread(lambda: exposition(families, share.merged(own)))
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

    @staticmethod
    def _check(keys: ScrapeKeys, value: bytes | None) -> AuthenticationError | None:
        scheme, _, token = (value or b"").partition(b" ")
        token = token.strip()
        code = keys.name.replace(" ", "_")
        if scheme.lower() != b"bearer" or not token:
            return AuthenticationError(
                f"/metrics needs the {keys.name}: send it as 'Authorization: Bearer <key>'",
                code=f"missing_{code}",
            )
        # every key compared, whichever matches: the time says nothing of which one did
        matched = False
        for key in keys.keys:
            matched |= hmac.compare_digest(token, key)
        if not matched:
            return AuthenticationError(f"Invalid {keys.name}", code=f"invalid_{code}")
        return None


@asynccontextmanager
async def refreshing(
    refresh: Callable[[], None], share: WorkerShare | None = None
) -> AsyncIterator[None]:
    """Run ``refresh`` every :data:`REFRESH_SECONDS` while the app runs; with ``share`` (one
    worker of several), every :data:`PUBLISH_SECONDS`, each time publishing the snapshot, and
    a last one at the end, without this worker's gauges."""
    period = REFRESH_SECONDS if share is None else PUBLISH_SECONDS

    async def loop() -> None:
        while True:
            try:
                refresh()
                if share is not None:
                    share.publish()
            except Exception:  # a metric must never take the gateway down
                logger.exception("refreshing the metrics failed")
            await asyncio.sleep(period)

    task = asyncio.get_running_loop().create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if share is not None:
            try:
                share.publish(final=True)
            except OSError:
                logger.exception("publishing the last metrics snapshot failed")
