"""Our own HTTP/1.1 upstream transport: asyncio protocol, httptools parser, LIFO keep-alive pool.

Providers encode a request head once and call :meth:`PoolTransport.exchange` with it; httpx is
used only to parse URLs and to build its default (certifi) TLS context. httpcore's pool scans
every request against every connection on each acquire and release and so degrades under
concurrency; here taking a connection is a pop from a list of idle ones.

Failures are raised as this module's own errors, each ``from`` the exception behind it (so
``__cause__`` keeps the OS or TLS reason); their messages never contain request bytes::

    TransportError
    ├── ConnectFailed        no connection could be made (refused, DNS, TLS); nothing was sent
    │   └── ConnectTimedOut
    ├── PoolTimedOut         no connection slot became free within pool_timeout; nothing was
    │                        sent; the gateway's limit, not the upstream's fault
    ├── NoResponse           the request was (or may have been) sent and the connection closed
    │                        before any response byte: the upstream may have processed it
    ├── ResponseBroken       the connection closed or failed after part of the response
    └── MalformedResponse    the response is not HTTP/1.1 that httptools can parse

A request is never sent twice. A pooled connection is checked before anything is written to
it: one that the upstream closed while it sat idle (its close already seen by the loop, or
pending on the socket: one non-blocking ``poll``), or that outlived ``keepalive_expiry``, is
closed and skipped, and the request goes to the next idle connection or a new one. Once
written, a request that gets no answer is :class:`NoResponse`, whatever the connection's age.

A response with neither ``Content-Length`` nor chunked framing ends when the upstream closes
the connection (RFC 9112 §6.3), and that connection is not reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import httptools
import httpx

__all__ = [
    "ConnectFailed",
    "ConnectTimedOut",
    "MalformedResponse",
    "NoResponse",
    "PoolTimedOut",
    "PoolTransport",
    "RawResponse",
    "ResponseBroken",
    "TransportError",
]

_HIGH_WATER = 256 * 1024  # buffered response bytes before we stop reading from the socket
_HAS_POLL = hasattr(select, "poll")  # not on Windows: there only a close the loop saw counts


class TransportError(Exception):
    """Base class of every failure of an exchange with an upstream."""


class ConnectFailed(TransportError):
    """No connection could be made (refused, DNS, TLS handshake); nothing was sent."""


class ConnectTimedOut(ConnectFailed):
    """Connecting (TLS handshake included) took longer than ``connect_timeout``."""


class PoolTimedOut(TransportError):
    """No connection slot became free within ``pool_timeout``; nothing was sent."""


class NoResponse(TransportError):
    """The connection closed after the request was (or may have been) sent, before any answer."""


class ResponseBroken(TransportError):
    """The connection closed or failed after part of the response had arrived."""


class MalformedResponse(TransportError):
    """The upstream's bytes are not an HTTP/1.1 response."""


def _caused(error: TransportError, cause: BaseException | None) -> TransportError:
    """``error`` as if raised ``from cause`` (it is raised later, in the waiting task)."""
    error.__cause__ = cause
    error.__suppress_context__ = True
    return error


def _raised(error: TransportError) -> TransportError:
    """A connection's failure, to raise in a task waiting on it: a new exception each time.
    A raised exception's traceback holds the frames it passed, the connection's among them;
    the stored one would then hold its own connection, a cycle left to the collector."""
    return _caused(type(error)(*error.args), error.__cause__)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; carries one exchange at a time."""

    # The parser holds this connection (its callbacks): made when the connection is, dropped
    # when it is lost, so that neither a failed connect nor a closed connection leaves the
    # pair to the cyclic collector.
    parser: httptools.HttpResponseParser

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        # Kept: asyncio.get_running_loop() checks the process id (a syscall) on every call.
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle = False  # in the pool's idle list
        self.expires_at = 0.0  # when idle: time.monotonic() after which it is not reused
        self._poll: select.poll | None = None
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        # State of the current exchange; "complete" also while idle, so that bytes nobody
        # asked for are noticed (on_message_begin) and a close is no one's failure.
        self._error: TransportError | None = None
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_done = False
        self.complete = True
        self._keep_alive = False
        self._keep_alive_hint: float | None = None
        self._got_bytes = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.parser = httptools.HttpResponseParser(self)  # resets itself after each message
        sock = transport.get_extra_info("socket")
        if _HAS_POLL and sock is not None:
            # Both loops give the raw socket's fd (asyncio's TransportSocket, uvloop's
            # PseudoSocket); neither allows recv(MSG_PEEK) on it, but poll needs only the fd.
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not self.complete:
                reason = exc.__context__ if isinstance(exc.__context__, TransportError) else exc
                self._fail(
                    MalformedResponse(f"malformed response from {self.pool.where}: {reason}"), exc
                )
            self.abort()  # unusable, also when the bytes came after a complete response

    def connection_lost(self, exc: Exception | None) -> None:
        by_us = self.closed
        self.closed = True
        self.pool.discard(self)
        self._poll = None  # the fd is about to be closed, and maybe reused
        if not self.complete and self._error is None:
            where = self.pool.where
            if by_us:
                error: TransportError = (ResponseBroken if self._got_bytes else NoResponse)(
                    f"the connection to {where} was closed by the gateway"
                )
                self._fail(error, exc)
            elif exc is None and self._head_done and not _framed(self._headers):
                self.complete = True  # a close-delimited body ends here
                self._wake()
            elif self._got_bytes:
                self._fail(ResponseBroken(f"{where} closed the connection mid-response"), exc)
            else:
                self._fail(NoResponse(f"{where} closed the connection without a response"), exc)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        vars(self).pop("parser", None)  # no more data comes; see the class's note

    def pause_writing(self) -> None:
        self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.complete:
            raise MalformedResponse("bytes after the end of the response")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if len(name) == 10 and name.lower() == b"keep-alive":
            self._keep_alive_hint = _timeout_hint(value)

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                raise MalformedResponse("an upgrade nobody asked for (101)")
            self._headers = []  # an interim response (100, 103): the real one follows
            return
        self._status = status
        self._head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self._head_done:
            return  # the end of an interim response
        # Only meaningful inside the parser's callbacks: read it now, not after.
        self._keep_alive = self.parser.should_keep_alive()
        self.complete = True
        self._wake()

    # used by the pool and the response
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: TransportError, cause: BaseException | None) -> None:
        if self._error is None:
            self._error = _caused(error, cause)
        self._wake()

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def send(self, head: bytes, body: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Write one request; return the status and headers of its response."""
        assert self.transport is not None
        if self.closed:  # a new connection the upstream spoke on, or closed, before we did
            raise ConnectFailed(f"{self.pool.where} closed the connection before the request")
        self._error = None
        self._headers = []
        self._head_done = False
        self.complete = False
        self._keep_alive = False
        self._keep_alive_hint = None
        self._got_bytes = False
        if len(body) < 65536:
            self.transport.write(head + body)
        else:
            self.transport.write(head)
            self.transport.write(body)
        if self._writable is not None:
            await self._writable
        while not self._head_done:
            if self._error is not None:
                raise _raised(self._error)
            await self._wait()
        return self._status, self._headers

    async def read(self) -> bytes:
        """The next piece of the response body; ``b""`` once it is complete."""
        chunks = self._chunks
        while not chunks:
            if self.complete:
                return b""
            if self._error is not None:
                raise _raised(self._error)
            # Inline, not self._wait(): this runs for every piece of a paced stream.
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        chunk = chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < _HIGH_WATER // 2 and self.transport:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    def reusable(self) -> bool:
        return self.complete and self._keep_alive and not self.closed

    def rest(self, expiry: float) -> None:
        """Become idle: drop unread body bytes, read again, expire ``expiry`` s from now."""
        self._chunks.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            # Released with unread body bytes after reading was paused: read again, so that
            # a close while idle is seen.
            self._paused = False
            self.transport.resume_reading()
        hint = self._keep_alive_hint
        if hint is not None and hint < expiry:
            expiry = hint
        self.expires_at = time.monotonic() + expiry

    def alive(self, now: float) -> bool:
        """Whether this idle connection can carry a request: not expired, nothing to read.

        An idle connection has nothing to read unless the upstream closed it (EOF or reset)
        or sent bytes nobody asked for: either way it must not carry a request. The loop may
        have seen that already (the transport is closing; uvloop may have closed the fd) or
        not yet (the socket polls readable).
        """
        assert self.transport is not None
        return (
            self.expires_at > now
            and not self.transport.is_closing()
            and not (self._poll is not None and self._poll.poll(0))
        )

    def close(self) -> None:
        """Close politely (an idle connection)."""
        if not self.closed:
            self.closed = True
            self.pool.discard(self)
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        """Drop a connection in the middle of an exchange: no flushing of a pending write."""
        if not self.closed:
            self.closed = True
            self.pool.discard(self)
            if self.transport is not None:
                self.transport.abort()


def _framed(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a response head says where its body ends (otherwise: at connection close)."""
    for name, value in headers:
        name = name.lower()
        if name == b"content-length":
            return True
        if name == b"transfer-encoding":
            return value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
    return False


def _timeout_hint(value: bytes) -> float | None:
    """From ``Keep-Alive: timeout=5, max=100``: how long to keep the connection, with margin."""
    for part in value.split(b","):
        key, _, number = part.partition(b"=")
        if key.strip().lower() == b"timeout":
            try:
                return max(0.0, float(number) - 1.0)  # a second less than the upstream waits
            except ValueError:
                return None
    return None


class RawResponse:
    """A response whose body is read straight from its pooled connection."""

    __slots__ = ("_connection", "_pool", "_released", "headers", "status")

    def __init__(
        self, status: int, headers: list[tuple[bytes, bytes]], connection: _Connection, pool: _Pool
    ) -> None:
        self.status = status
        self.headers = headers
        self._connection = connection
        self._pool = pool
        self._released = False

    def header(self, name: bytes) -> str | None:
        """The first value of header ``name`` (lower case), decoded as Latin-1."""
        for key, value in self.headers:
            if key.lower() == name:
                return value.decode("latin-1")
        return None

    def read(self) -> Awaitable[bytes]:
        """The next piece of the body as it arrives; ``b""`` once it is complete.

        Raises :class:`ResponseBroken` or :class:`MalformedResponse`. (The connection's own
        coroutine, not one wrapping it: this runs for every piece of a stream.)
        """
        return self._connection.read()

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        read = self._connection.read
        while chunk := await read():
            yield chunk

    async def aclose(self) -> None:
        """Give the connection back: to the idle list if the body was complete, else closed."""
        if not self._released:
            self._released = True
            self._pool.release(self._connection)


class _Pool:
    """Connections to one origin: idle ones in a LIFO list, a bound on how many exist.

    A slot is the right to hold one connection for one exchange; ``free`` counts the slots
    nobody holds. A released slot goes to the longest waiter first.
    """

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        limit: int,
        keepalive_expiry: float,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.host = host
        self.port = port
        self.where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.ssl_context = ssl_context if scheme == "https" else None
        self.limit = limit
        self.free = limit
        self.keepalive_expiry = keepalive_expiry
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.idle: deque[_Connection] = deque()  # oldest first
        self.connections: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    # slots
    async def wait_for_slot(
        self, pool_timeout: float | None, on_queue: Callable[[bool], None] | None
    ) -> None:
        """Wait until a slot is handed over (called only when none is free)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if on_queue is not None:
            on_queue(True)
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout(pool_timeout):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.release_slot()  # handed a slot just as the wait ended: pass it on
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):  # release_slot() may have dropped it
                    self.waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise PoolTimedOut(
                    f"no connection to {self.where} became free within {pool_timeout} s "
                    f"({self.limit} in use)"
                ) from exc
            raise
        finally:
            if on_queue is not None:
                on_queue(False)

    def release_slot(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1

    # connections
    async def connect(self, connect_timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context else None,
                )
        except TimeoutError as exc:
            raise ConnectTimedOut(
                f"connecting to {self.where} timed out after {connect_timeout} s"
            ) from exc
        except OSError as exc:  # ssl.SSLError and socket.gaierror are OSErrors too
            raise ConnectFailed(_connect_failure(exc, self.host, self.where)) from exc
        self.connections.add(connection)
        return connection

    def acquire_idle(self) -> _Connection | None:
        """The most recently used idle connection that can carry a request, if any."""
        idle = self.idle
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            connection.idle = False
            if connection.alive(now):
                return connection
            connection.close()
        return None

    def release(self, connection: _Connection) -> None:
        if connection.reusable():
            connection.rest(self.keepalive_expiry)
            connection.idle = True
            self.idle.append(connection)
            if self._sweeper is None:
                self._sweeper = connection._loop.call_later(self.keepalive_expiry, self._sweep)
        elif connection.complete:
            connection.close()  # the upstream said "connection: close"
        else:
            connection.abort()  # released mid-response
        self.release_slot()

    def discard(self, connection: _Connection) -> None:
        """Forget a closed connection."""
        self.connections.discard(connection)
        if connection.idle:
            connection.idle = False
            self.idle.remove(connection)

    def _sweep(self) -> None:
        """Close idle connections that expired while no request came to take them."""
        self._sweeper = None
        now = time.monotonic()
        for connection in [c for c in self.idle if c.expires_at <= now]:
            connection.close()
        if self.idle:
            delay = max(min(c.expires_at for c in self.idle) - now, 1.0)
            self._sweeper = self.idle[0]._loop.call_later(delay, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in list(self.connections):
            connection.abort()
        self.connections.clear()
        self.idle.clear()


def _connect_failure(exc: OSError, host: str, where: str) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {host}: {exc.strerror}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the TLS certificate of {where} is not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {where} failed: {exc.reason or exc}"
    return f"cannot connect to {where}: {exc.strerror or exc}"


class PoolTransport:
    """HTTP/1.1 only, no proxies; ``max_connections`` per origin.

    TLS verifies certificates against certifi's bundle (as httpx does), or against
    ``ca_bundle`` (a PEM file) for upstreams behind a private CA. An idle connection is closed
    after ``keepalive_expiry`` seconds, or a second before the upstream's ``Keep-Alive:
    timeout=N`` if that is sooner. The default stays under the 5 s that uvicorn (so vLLM) and
    Node servers keep idle connections without saying so: a request written just as the
    upstream closes would get no answer, and it is never sent twice.
    """

    def __init__(
        self,
        *,
        max_connections: int = 1024,
        ca_bundle: str | None = None,
        keepalive_expiry: float = 4.0,
    ) -> None:
        self._limit = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._ca_bundle = ca_bundle
        self._ssl_context: ssl.SSLContext | None = None

    def origin(self, url: httpx.URL | str) -> _Pool:
        """The connection pool for ``url``'s scheme, host and port."""
        url = httpx.URL(url)
        port = url.port or (443 if url.scheme == "https" else 80)
        key = (url.scheme, url.host, port)
        pool = self._pools.get(key)
        if pool is None:
            if url.scheme == "https" and self._ssl_context is None:
                self._ssl_context = (
                    ssl.create_default_context(cafile=self._ca_bundle)
                    if self._ca_bundle
                    else httpx.create_ssl_context()
                )
                self._ssl_context.set_alpn_protocols(["http/1.1"])
            pool = self._pools[key] = _Pool(
                url.scheme,
                url.host,
                port,
                limit=self._limit,
                keepalive_expiry=self._keepalive_expiry,
                ssl_context=self._ssl_context,
            )
        return pool

    async def exchange(
        self,
        pool: _Pool,
        head: bytes,
        body: bytes,
        *,
        connect_timeout: float | None = None,
        pool_timeout: float | None = None,
        on_queue: Callable[[bool], None] | None = None,
    ) -> RawResponse:
        """Send an encoded request head and body; return once the response head arrived.

        When all ``max_connections`` slots are taken, ``on_queue(True)`` is called as the
        request starts to wait for one and ``on_queue(False)`` when the wait ends, however it
        ends. Raises :class:`PoolTimedOut`, :class:`ConnectFailed` (:class:`ConnectTimedOut`),
        :class:`NoResponse`, :class:`ResponseBroken` or :class:`MalformedResponse`.

        The caller must ``aclose()`` the response, which returns the connection to the pool.
        Not for ``HEAD`` requests: the parser would expect the body their head announces.
        """
        if pool.free:
            pool.free -= 1
        else:
            await pool.wait_for_slot(pool_timeout, on_queue)
        connection = None
        try:
            connection = pool.acquire_idle()
            if connection is None:
                connection = await pool.connect(connect_timeout)
            status, headers = await connection.send(head, body)
        except BaseException:
            if connection is not None:
                connection.abort()
            pool.release_slot()
            raise
        return RawResponse(status, headers, connection, pool)

    def connection_counts(self) -> tuple[int, int, int]:
        """Connections in use, idle connections and requests waiting for one, over every
        origin: what the gateway's metrics show of the pool."""
        in_use = idle = waiting = 0
        for pool in self._pools.values():
            in_use += pool.limit - pool.free
            idle += len(pool.idle)
            waiting += len(pool.waiters)
        return in_use, idle, waiting

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
