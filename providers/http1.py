"""A lean HTTP/1.1 transport for httpx: asyncio protocol, httptools parser, LIFO keep-alive pool.

httpx stays the client API of the providers; this replaces httpcore's connection pool, whose
bookkeeping scans every request against every connection on each acquire and release and so
degrades under concurrency. Here acquiring a connection is a pop from a list of idle ones.

Failures are raised as httpx's own exceptions (``ConnectError``, ``ConnectTimeout``,
``ReadError``, ``RemoteProtocolError``, ``WriteError``), so callers map them as usual.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, cast

import httptools
import httpx

_HIGH_WATER = 256 * 1024  # buffered response bytes before we stop reading from the socket


class _Connection(asyncio.Protocol):
    """One keep-alive connection; carries one request at a time."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        # Kept: asyncio.get_running_loop() checks the process id (a syscall) on every call.
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._chunks: deque[bytes] = deque()
        self._reset()

    def _reset(self) -> None:
        """Fresh state for the next exchange on this connection."""
        self.parser = httptools.HttpResponseParser(self)
        self._error: Exception | None = None
        self._head: asyncio.Future[None] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks.clear()
        self._buffered = 0
        self._complete = False
        self._keep_alive = False
        self.got_bytes = False
        if self._paused and self.transport is not None:
            # Released with unread body bytes after reading was paused: read again.
            self._paused = False
            self.transport.resume_reading()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed response from upstream: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._complete:
            if self.got_bytes:
                self._fail(httpx.ReadError("connection closed mid-response"))
            else:
                self._fail(httpx.RemoteProtocolError("server disconnected without a response"))
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        # Only meaningful inside the parser's callbacks: read it now, not after.
        self._keep_alive = self.parser.should_keep_alive()
        self._complete = True
        self._wake()

    # used by the transport
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        self._wake()

    async def send(self, head: bytes, body: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
        assert self.transport is not None
        self._reset()
        self._head = self._loop.create_future()
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        if self._writable is not None:
            await self._writable
        if self.closed and self._error is None:
            raise httpx.WriteError("connection closed while sending")
        await self._head
        return self.parser.get_status_code(), self._headers

    async def read(self) -> bytes:
        """The next piece of the response body; ``b""`` once it is complete."""
        chunks = self._chunks
        while not chunks:
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < _HIGH_WATER // 2 and self.transport:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    def reusable(self) -> bool:
        return self._complete and self._keep_alive and not self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


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

    async def read(self) -> bytes:
        """The next piece of the body as it arrives; ``b""`` once it is complete."""
        return await self._connection.read()

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        read = self._connection.read
        while chunk := await read():
            yield chunk

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self._connection)


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: RawResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.aiter_raw():
            yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


class _Pool:
    """Connections to one origin: idle ones in a LIFO list, a bound on how many exist."""

    def __init__(
        self, scheme: str, host: str, port: int, *, limit: int, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context if scheme == "https" else None
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(limit)
        self.connections: set[_Connection] = set()

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
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {self.host}:{self.port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        self.connections.add(connection)
        return connection

    def acquire_idle(self) -> _Connection | None:
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                return connection
            self.connections.discard(connection)
        return None

    def forget(self, connection: _Connection) -> None:
        connection.close()
        self.connections.discard(connection)

    def release(self, connection: _Connection) -> None:
        if connection.reusable():
            self.idle.append(connection)
        else:
            connection.close()
            self.connections.discard(connection)
        self.slots.release()

    def close(self) -> None:
        for connection in list(self.connections):
            connection.close()
        self.connections.clear()
        self.idle.clear()


class PoolTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 only, no proxies; ``max_connections`` per origin.

    TLS verifies certificates against certifi's bundle (as httpx does), or against
    ``ca_bundle`` (a PEM file) for upstreams behind a private CA.
    """

    def __init__(self, *, max_connections: int = 1024, ca_bundle: str | None = None) -> None:
        self._limit = max_connections
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
                url.scheme, url.host, port, limit=self._limit, ssl_context=self._ssl_context
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
    ) -> RawResponse:
        """Send an encoded request head and body; return once the response head arrived.

        The caller must ``aclose()`` the response, which returns the connection to the pool.
        """
        try:
            async with asyncio.timeout(pool_timeout):
                await pool.slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no upstream connection free in time") from None
        connection = pool.acquire_idle()
        try:
            if connection is not None:
                try:
                    status, headers = await connection.send(head, body)
                except (httpx.RemoteProtocolError, httpx.WriteError):
                    # The server closed this idle connection before reading our request, so it
                    # never saw it: one more try on a fresh connection is safe.
                    if connection.got_bytes:
                        raise
                    pool.forget(connection)
                    connection = None
            if connection is None:
                connection = await pool.connect(connect_timeout)
                status, headers = await connection.send(head, body)
        except BaseException:
            if connection is not None:
                pool.forget(connection)
            pool.slots.release()
            raise
        return RawResponse(status, headers, connection, pool)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        body = await request.aread()
        response = await self.exchange(
            self.origin(request.url),
            _request_head(request, body),
            body,
            connect_timeout=timeouts.get("connect"),
            pool_timeout=timeouts.get("pool"),
        )
        return httpx.Response(
            response.status,
            headers=response.headers,
            stream=_Body(response),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def _request_head(request: httpx.Request, body: bytes) -> bytes:
    target = request.url.raw_path
    lines = [request.method.encode() + b" " + target + b" HTTP/1.1"]
    has_length = False
    for name, value in request.headers.raw:
        if name.lower() == b"content-length":
            has_length = True
        elif name.lower() == b"transfer-encoding":
            continue  # the body is sent whole, with its length
        lines.append(name + b": " + value)
    if not has_length and (body or request.method in ("POST", "PUT", "PATCH")):
        lines.append(b"content-length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"
