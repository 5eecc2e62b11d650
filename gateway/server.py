"""uvicorn, tuned for a gateway: deadlines for request headers and bodies, graceful drain."""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from gateway.asgi import DISCONNECT_SCOPE_KEY, DisconnectSignal
from gateway.errors import InvalidRequest


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """Deadlines and a size limit on what a client sends before the gateway can answer it,
    and a :class:`gateway.asgi.DisconnectSignal` on each request's scope, fired for every
    request read and not yet answered when the connection is lost (uvicorn's ``receive()``
    tells only the latest: with pipelining, not the one running).

    uvicorn has none: a client trickling its headers or its body would hold a connection (and a
    file descriptor) forever, and one sending endless header bytes would grow the server's
    memory. Here a request's headers must arrive within ``header_timeout`` (the clock starts
    when the connection opens and again when each new request begins) and within
    ``max_header_bytes``; its body must then arrive within ``body_timeout``.

    These deadlines and uvicorn's keep-alive one are not a timer each: a connection notes when
    each is due, and one :class:`_Sweep` per event loop looks at every connection a few times
    a second (a timer made and cancelled three times per request cost ~4 % of a request).
    """

    header_timeout = 10.0  # seconds; the gateway's config sets GATEWAY_HEADER_TIMEOUT instead
    body_timeout = 60.0  # seconds; GATEWAY_BODY_TIMEOUT
    max_header_bytes = 64 * 1024

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._header_timeout: float = getattr(config, "header_timeout", self.header_timeout)
        self._body_timeout: float = getattr(config, "body_timeout", self.body_timeout)
        # When each deadline is due (the loop's clock), None when it does not run.
        self._headers_due: float | None = None
        self._body_due: float | None = None
        self._idle_due: float | None = None
        # Bytes received while a request head is awaited; None while a body is being read.
        self._head_bytes: int | None = 0
        # The disconnect signals of the requests read and not answered yet, oldest first.
        self._signals: deque[DisconnectSignal] = deque()
        self._sweep = _Sweep.of(
            self.loop, min(self._header_timeout, self._body_timeout, self.timeout_keep_alive)
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_headers_deadline()
        self._sweep.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._sweep.discard(self)
        self._stop_headers_deadline()
        self._stop_body_deadline()
        super().connection_lost(exc)
        # Every request not answered yet: uvicorn tells only the latest, but with pipelining
        # an earlier one may be the one running.
        signals, self._signals = self._signals, deque()
        for signal in signals:
            signal.fire()

    def data_received(self, data: bytes) -> None:
        counting = self._head_bytes is not None
        if self._head_bytes is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        # Over the limit only if the head is still unfinished after this read (a read may hold
        # a small head and the start of a large body).
        if (
            counting
            and self._head_bytes is not None
            and self._head_bytes > self.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._head_bytes = None
            self._reply_and_close(
                431,
                b"Request Header Fields Too Large",
                f"request headers larger than {self.max_header_bytes} bytes",
                "headers_too_large",
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_headers_deadline()

    def on_headers_complete(self) -> None:
        self._stop_headers_deadline()
        self._head_bytes = None
        super().on_headers_complete()
        if self.cycle is not None:  # its task has not run yet: the scope is still ours
            signal = _scope(self.cycle)[DISCONNECT_SCOPE_KEY] = DisconnectSignal()
            self._signals.append(signal)
        self._stop_body_deadline()
        if not self.pipeline:  # a pipelined request's body is not read until its turn
            self._body_due = self.loop.time() + self._body_timeout

    def on_message_complete(self) -> None:
        self._stop_body_deadline()
        self._head_bytes = 0
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """A request the HTTP parser refuses gets OpenAI's error shape too, not plain text."""
        self._reply_and_close(
            400, b"Bad Request", f"malformed HTTP request ({msg.rstrip('.')})", "bad_http"
        )

    def _reply_and_close(self, status: int, reason: bytes, message: str, code: str) -> None:
        """Answer in OpenAI's error shape, unless a response has begun; then close."""
        if self.cycle is None or not self.cycle.response_started:
            body = InvalidRequest(message, code=code).body()
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                b"cache-control: no-store\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                % (status, reason, len(body))
                + body
            )
        self.transport.close()

    def on_response_complete(self) -> None:
        """uvicorn's, but the keep-alive deadline is noted for the sweep, not a timer.

        A pipelined request to start, or a closing connection, is uvicorn's own business (no
        keep-alive timer is armed then): only the idle case is done here."""
        if self._signals:  # responses complete in the order their requests came
            self._signals.popleft()
        if self.pipeline or self.transport.is_closing():
            super().on_response_complete()
            return
        self.server_state.total_requests += 1
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        self._idle_due = self.loop.time() + self.timeout_keep_alive

    def _unset_keepalive_if_required(self) -> None:
        super()._unset_keepalive_if_required()
        self._idle_due = None

    def check_deadlines(self, now: float) -> None:
        """Act on every deadline due at ``now`` (called by the sweep)."""
        if self._headers_due is not None and now >= self._headers_due:
            self._headers_due = None
            self._headers_late()
        if self._body_due is not None and now >= self._body_due:
            self._body_due = None
            self._body_late()
        if self._idle_due is not None and now >= self._idle_due:
            self._idle_due = None
            self.timeout_keep_alive_handler()

    def _start_headers_deadline(self) -> None:
        if self._headers_due is None:
            self._headers_due = self.loop.time() + self._header_timeout

    def _stop_headers_deadline(self) -> None:
        self._headers_due = None

    def _stop_body_deadline(self) -> None:
        self._body_due = None

    def _headers_late(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            # Not inside a request whose headers arrived: nothing is owed to this client.
            self.transport.close()
        else:
            # The next request trickles in while this one is answered: close once it is done.
            self.cycle.keep_alive = False

    def _body_late(self) -> None:
        self._reply_and_close(
            408, b"Request Timeout", "the request body did not arrive in time", "body_timeout"
        )


class _Sweep:
    """The deadlines of one event loop's connections, looked at every ``interval`` seconds
    (a quarter of the shortest deadline, at most half a second) while any connection is open:
    a deadline acts at most that late."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the sweep is the value of its loop's entry in _SWEEPS, which a strong
        # reference back would keep for ever (a test process runs many loops).
        self._loop = weakref.ref(loop)
        self.interval = 0.5
        self.live: set[HeaderDeadlineProtocol] = set()
        self._armed = False  # not the timer's handle: it refers to the loop

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop, shortest: float) -> _Sweep:
        sweep = _SWEEPS.get(loop)
        if sweep is None:
            sweep = _SWEEPS[loop] = cls(loop)
        sweep.interval = min(sweep.interval, shortest / 4)
        return sweep

    def add(self, protocol: HeaderDeadlineProtocol) -> None:
        self.live.add(protocol)
        if not self._armed:
            self._armed = True
            protocol.loop.call_later(self.interval, self._run)

    def discard(self, protocol: HeaderDeadlineProtocol) -> None:
        self.live.discard(protocol)

    def _run(self) -> None:
        self._armed = False
        loop = self._loop()
        if loop is None or not self.live:
            return
        now = loop.time()
        for protocol in list(self.live):
            protocol.check_deadlines(now)
        if self.live:
            self._armed = True
            loop.call_later(self.interval, self._run)


_SWEEPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweep] = weakref.WeakKeyDictionary()


def _scope(cycle: RequestResponseCycle) -> dict[str, Any]:
    """A request's ASGI scope as the plain dict it is (uvicorn types it as a TypedDict)."""
    return cast(dict[str, Any], cycle.scope)


def make_config(
    app: Any,
    *,
    host: str,
    port: int,
    drain_timeout: float,
    header_timeout: float,
    body_timeout: float = HeaderDeadlineProtocol.body_timeout,
    workers: int = 1,
    factory: bool = False,
    json_logs: bool = False,
) -> uvicorn.Config:
    extra: dict[str, Any] = {"log_config": None} if json_logs else {}  # ours: JSON lines
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
        # a cancelled stream ends with an error event (see gateway.dispatch).
        timeout_graceful_shutdown=drain_timeout,  # type: ignore[arg-type]
        **extra,
    )
    config.header_timeout = header_timeout  # type: ignore[attr-defined]
    config.body_timeout = body_timeout  # type: ignore[attr-defined]
    return config
