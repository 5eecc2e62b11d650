"""A stand-in upstream: a small HTTP/1.1 server on 127.0.0.1 that answers as scripted.

It runs its own event loop in a thread, so sync and async tests can both use it, and it speaks
raw HTTP so that it can also misbehave: pause between body pieces, cut the body short, hang, or
hang up without answering. Each request takes the next scripted :class:`Reply` (or the
``handler``'s answer once the script is used up) and is recorded as :class:`Received`::

    with StandInUpstream() as upstream:
        upstream.expect(Reply.sse([{"choices": [...]}], delay=0.01))
        ...  # point the provider at upstream.url and stream a request
        assert upstream.received[0].header("authorization") is None

Every wait is bounded; the server listens on the loopback interface only.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import httptools

__all__ = ["Pause", "Received", "Reply", "StandInUpstream"]

Framing = Literal["length", "chunked", "close"]


@dataclass(frozen=True, slots=True)
class Pause:
    """A pause of ``seconds`` between two pieces of a body."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer.

    ``body`` pieces are written as they come (one chunk each when ``framing`` is
    ``"chunked"``), with :class:`Pause` items in between. ``framing``: ``"length"`` (a
    Content-Length), ``"chunked"``, or ``"close"`` (the body ends when the connection closes).
    ``truncate`` closes the connection before the body is complete (a Content-Length then
    counts one byte more than is sent; a chunked body lacks its last chunk). ``hang`` keeps the
    connection open after the pieces, without finishing, until the client leaves.
    ``hang_up`` closes the connection without any answer at all.
    """

    status: int = 200
    headers: Sequence[tuple[str, str]] = ()
    body: Sequence[bytes | Pause] = ()
    framing: Framing = "length"
    truncate: bool = False
    hang: bool = False
    hang_up: bool = False

    @classmethod
    def json(
        cls, value: Any, *, status: int = 200, headers: Sequence[tuple[str, str]] = ()
    ) -> Reply:
        """A JSON body with its Content-Length."""
        return cls(
            status=status,
            headers=[("content-type", "application/json"), *headers],
            body=[json.dumps(value).encode()],
        )

    @classmethod
    def sse(
        cls,
        events: Sequence[Any],
        *,
        delay: float = 0.0,
        done: bool = True,
        truncate: bool = False,
        hang: bool = False,
        status: int = 200,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Reply:
        """A chunked ``text/event-stream``, one event per piece, ``delay`` seconds apart.

        An event that is ``bytes`` or ``str`` is sent as it is (a whole frame: ``"event: x\\n
        data: {...}\\n\\n"``, a ``": ping\\n\\n"`` comment, or half a frame), a :class:`Pause`
        as a pause, anything else as ``data: <JSON>``. ``done`` ends the stream with OpenAI's
        ``data: [DONE]``.
        """
        pieces: list[bytes | Pause] = []
        for event in [*events, b"data: [DONE]\n\n"] if done else events:
            if isinstance(event, Pause):
                pieces.append(event)
                continue
            if delay and pieces:
                pieces.append(Pause(delay))
            pieces.append(_frame(event))
        return cls(
            status=status,
            headers=[("content-type", "text/event-stream"), *headers],
            body=pieces,
            framing="chunked",
            truncate=truncate,
            hang=hang,
        )


def _frame(event: Any) -> bytes:
    if isinstance(event, bytes):
        return event
    if isinstance(event, str):
        return event.encode()
    return b"data: " + json.dumps(event).encode() + b"\n\n"


@dataclass(slots=True)
class Received:
    """One request as the stand-in received it; header names are lower case."""

    method: str
    path: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)

    def json(self) -> Any:
        """The body, decoded as JSON."""
        return json.loads(self.body)


Handler = Callable[[Received], Reply]


def _unscripted(received: Received) -> Reply:
    message = f"the stand-in upstream has no reply scripted for {received.method} {received.path}"
    return Reply.json({"error": {"message": message}}, status=500)


class StandInUpstream:
    """The server; use it as a context manager (``with``). See the module docstring."""

    def __init__(self, handler: Handler = _unscripted, *, start_timeout: float = 5.0) -> None:
        self.handler = handler
        self.received: list[Received] = []
        self.disconnects = 0  # times a client left while a reply was pausing or hanging
        self._script: deque[Reply] = deque()
        self._changed = threading.Condition()
        self._start_timeout = start_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._port = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._port}"

    def expect(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order."""
        with self._changed:
            self._script.extend(replies)

    def wait_for_requests(self, count: int, within: float = 5.0) -> list[Received]:
        """Block until ``count`` requests were received; AssertionError after ``within`` s."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, within):
                raise AssertionError(
                    f"{len(self.received)} requests reached the stand-in upstream in "
                    f"{within} s, not {count}"
                )
            return list(self.received)

    def wait_for_disconnect(self, count: int = 1, within: float = 5.0) -> None:
        """Block until clients left mid-reply ``count`` times; AssertionError after ``within``
        s. This is how a test sees that a provider's cancellation reached the upstream."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.disconnects >= count, within):
                raise AssertionError(
                    f"the client left the stand-in upstream mid-reply {self.disconnects} "
                    f"times in {within} s, not {count}"
                )

    async def disconnected(self, count: int = 1, within: float = 5.0) -> None:
        """:meth:`wait_for_disconnect` for async tests (it does not block their loop)."""
        await asyncio.to_thread(self.wait_for_disconnect, count, within)

    def __enter__(self) -> StandInUpstream:
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name="stand-in-upstream", daemon=True
        )
        self._thread.start()
        if not ready.wait(self._start_timeout):
            raise TimeoutError(f"the stand-in upstream did not start in {self._start_timeout} s")
        if failure:
            raise RuntimeError("the stand-in upstream failed to start") from failure[0]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(5.0)
            if self._thread.is_alive():  # pragma: no cover - would be a bug here
                raise RuntimeError("the stand-in upstream did not stop in 5 s")

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            asyncio.run(self._serve(ready))
        except BaseException as exc:  # reported to __enter__ if start-up failed
            failure.append(exc)
            ready.set()

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        connections: set[_Connection] = set()

        def factory() -> _Connection:
            connection = _Connection(self, connections)
            connections.add(connection)
            return connection

        server = await self._loop.create_server(factory, "127.0.0.1", 0)
        self._port = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for connection in list(connections):
                connection.abort()
            await server.wait_closed()

    def _next(self, received: Received) -> Reply:
        with self._changed:
            self.received.append(received)
            reply = self._script.popleft() if self._script else None
            self._changed.notify_all()
        return reply if reply is not None else self.handler(received)

    def _left(self) -> None:
        with self._changed:
            self.disconnects += 1
            self._changed.notify_all()


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, answers them one at a time (keep-alive)."""

    def __init__(self, upstream: StandInUpstream, registry: set[_Connection]) -> None:
        self._upstream = upstream
        self._registry = registry
        self._parser = httptools.HttpRequestParser(self)
        self._requests: asyncio.Queue[Received | None] = asyncio.Queue()
        self._closed = asyncio.Event()
        self._current = Received("", "")
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._task = asyncio.get_running_loop().create_task(self._answer())

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed.set()
        self._requests.put_nowait(None)
        self._registry.discard(self)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
        if self._task is not None:
            self._task.cancel()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._current = Received("", "")

    def on_url(self, url: bytes) -> None:
        self._current.path += url.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._current.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._current.body += body

    def on_message_complete(self) -> None:
        self._current.method = self._parser.get_method().decode("latin-1")
        self._requests.put_nowait(self._current)

    async def _answer(self) -> None:
        while (received := await self._requests.get()) is not None:
            reply = self._upstream._next(received)
            if not await self._send(reply):
                return

    async def _send(self, reply: Reply) -> bool:
        """Write ``reply``; True when the connection can serve another request."""
        transport = self._transport
        assert transport is not None
        if reply.hang_up:
            transport.close()
            return False
        data = [p for p in reply.body if isinstance(p, bytes)]
        headers = [*reply.headers]
        if reply.framing == "length":
            length = sum(len(p) for p in data) + (1 if reply.truncate else 0)
            headers.append(("content-length", str(length)))
        elif reply.framing == "chunked":
            headers.append(("transfer-encoding", "chunked"))
        else:
            headers.append(("connection", "close"))
        phrase = _phrase(reply.status)
        head = f"HTTP/1.1 {reply.status} {phrase}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
        transport.write(head.encode("latin-1"))
        for piece in reply.body:
            if isinstance(piece, Pause):
                if await self._client_left(piece.seconds):
                    return False
            elif reply.framing == "chunked":
                if piece:  # an empty chunk would end the body
                    transport.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                transport.write(piece)
        if reply.hang:
            await self._client_left(None)
            return False
        if reply.truncate or reply.framing == "close":
            transport.close()
            return False
        if reply.framing == "chunked":
            transport.write(b"0\r\n\r\n")
        return True

    async def _client_left(self, seconds: float | None) -> bool:
        """Wait ``seconds`` (None: until the client leaves); True if the client left."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), seconds)
        if self._closed.is_set():
            self._upstream._left()
            return True
        return False


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
