"""uvicorn, tuned for a gateway: a deadline for request headers, graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import InvalidRequest


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """Closes a connection whose request headers do not arrive within ``header_timeout``.

    uvicorn has no such deadline: a client trickling header bytes would hold a connection
    (and a file descriptor) forever. The clock starts when the connection opens and again when
    each new request begins, and stops when the headers are complete.
    """

    header_timeout = 10.0  # seconds; the gateway's config sets GATEWAY_HEADER_TIMEOUT instead

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._header_timeout: float = getattr(config, "header_timeout", self.header_timeout)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_header_timer()

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """A request the HTTP parser refuses gets OpenAI's error shape too, not plain text."""
        body = InvalidRequest(f"malformed HTTP request ({msg.rstrip('.')})", code="bad_http").body()
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
        self.transport.close()

    def _start_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self._header_timeout, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.cycle is None or self.cycle.response_complete:
            # Not inside a request whose headers arrived: nothing is owed to this client.
            self.transport.close()


def make_config(
    app: Any,
    *,
    host: str,
    port: int,
    drain_timeout: float,
    header_timeout: float,
    workers: int = 1,
    factory: bool = False,
) -> uvicorn.Config:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=HeaderDeadlineProtocol,
        ws="none",
        lifespan="on",
        access_log=False,  # uvicorn's would log query strings; ours does not
        proxy_headers=False,
        server_header=False,
        date_header=False,
        workers=workers,
        factory=factory,
        # On SIGTERM uvicorn stops accepting, lets requests run this long, then cancels them;
        # a cancelled stream ends with an error event (see gateway.completions).
        timeout_graceful_shutdown=drain_timeout,  # type: ignore[arg-type]
    )
    config.header_timeout = header_timeout  # type: ignore[attr-defined]
    return config
