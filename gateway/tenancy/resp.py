"""A minimal Redis client for the limiter's two scripts: one pipelined connection, hiredis
for the protocol, a time limit per call and no retries.

Why not redis-py: its asyncio round trip costs several times the work of the rest of an
admission (about 350 k instructions, measured), and its retry defaults turn an outage into
seconds of waiting per request. Here a call is a future in a FIFO: commands from every request
are written as they come (coalesced per loop tick) on one connection, replies resolve the
futures in order. A call that times out fails alone; its late reply, if any, is discarded in
turn, so the connection stays aligned. A lost connection fails what was pending and the next
call connects again (bounded by the same time limit).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis


class RedisError(Exception):
    """Redis could not answer: unreachable, too slow, or it refused."""


class ReplyError(RedisError):
    """Redis answered with an error (a script's, or NOSCRIPT)."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.pending: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.outbox: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not self.pending:  # a reply nobody asked for: the stream is not ours
                self._fail(RedisError("unexpected reply from Redis"))
                return
            future = self.pending.popleft()
            if future.done():  # its caller gave up (timed out)
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(ReplyError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(RedisError("connection to Redis lost"))

    def _fail(self, error: RedisError) -> None:
        self.lost = True
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()

    def send(self, command: bytes, future: asyncio.Future[Any]) -> None:
        self.pending.append(future)
        if not self.outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self.outbox.append(command)

    def _flush(self) -> None:
        if self.transport is not None and not self.lost and self.outbox:
            self.transport.write(b"".join(self.outbox))
        self.outbox.clear()


class Redis:
    """``redis://[:password@]host[:port][/db]``; every call fails within ``timeout``."""

    def __init__(self, url: str, *, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError("expected redis://host:port/db")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.password = unquote(parts.password) if parts.password else None
        self.username = unquote(parts.username) if parts.username else None
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError("the database must be a number")
        self.db = int(path) if path else 0
        _ = parts.port  # raises ValueError for a port that is not one
        self.timeout = timeout
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._scripts: dict[str, bytes] = {}

    async def _connect(self) -> _Connection:
        connection = self._connection
        if connection is not None and not connection.lost:
            return connection
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            _, fresh = await asyncio.wait_for(
                loop.create_connection(_Connection, self.host, self.port), self.timeout
            )
            hello: list[Any] = []
            if self.password is not None:
                auth = [self.username, self.password] if self.username else [self.password]
                hello.append(self._send(fresh, ["AUTH", *auth]))
            if self.db:
                hello.append(self._send(fresh, ["SELECT", self.db]))
            for reply in hello:
                await self._wait(reply)
            self._connection = fresh
            self._connecting.set_result(fresh)
            return fresh
        except (OSError, TimeoutError, RedisError) as exc:
            error = exc if isinstance(exc, RedisError) else RedisError(f"connect: {exc!r}")
            self._connecting.set_exception(error)
            self._connecting.exception()  # retrieved: the waiters get it too
            raise error from None
        finally:
            self._connecting = None

    def _send(self, connection: _Connection, args: list[Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        connection.send(hiredis.pack_command(tuple(args)), future)
        return future

    async def _wait(self, future: asyncio.Future[Any]) -> Any:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.timeout, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    async def call(self, *args: Any) -> Any:
        connection = await self._connect()
        return await self._wait(self._send(connection, list(args)))

    def script(self, source: str) -> str:
        """Register a Lua script; its SHA1, for :meth:`evalsha`."""
        sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self._scripts[sha] = source.encode()
        return sha

    async def evalsha(self, sha: str, keys: list[str], args: list[Any]) -> Any:
        """Run a registered script; sent whole once when Redis does not know it (a restart,
        SCRIPT FLUSH): EVAL caches it for the next EVALSHA."""
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.call("EVAL", self._scripts[sha], len(keys), *keys, *args)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.transport is not None:
            connection.transport.close()


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("Redis did not answer in time"))
