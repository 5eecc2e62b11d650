"""The upstream transport: keep-alive reuse, stale connections, framing, pool limits, failures.

Upstreams are real sockets on 127.0.0.1: uvicorn for well-behaved answers, and a raw socket
server (one thread per connection) for the misbehaving ones. The failure paths run under both
event loops the gateway may use, asyncio's and uvloop's.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httptools
import pytest
import uvloop

from providers.http1 import (
    ConnectFailed,
    ConnectTimedOut,
    MalformedResponse,
    NoResponse,
    PoolTimedOut,
    PoolTransport,
    RawResponse,
    ResponseBroken,
)
from tests.support.servers import free_port, serve_in_thread

T = TypeVar("T")
LOOPS = ["asyncio", "uvloop"]
HIGH_WATER = 256 * 1024  # providers.http1._HIGH_WATER


def run(loop: str, main: Coroutine[Any, Any, T]) -> T:
    if loop == "uvloop":
        result: T = uvloop.run(main)
        return result
    return asyncio.run(main)


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition()`` holds, for a state that no event announces."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - no event announces these states
            await asyncio.sleep(0)


def paused(response: RawResponse) -> Callable[[], bool]:
    """Whether reading from the response's connection is paused (back-pressure)."""
    connection = response._connection
    return lambda: connection._paused


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/chunked":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"a" * 10, b"b" * 70_000, b"c"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b"x" * 300_000 if scope["path"] == "/big" else scope["path"].encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def request_head(path: str, port: int = 80) -> bytes:
    return f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-length: 2\r\n\r\n".encode()


def ok(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in (*headers, f"content-length: {len(body)}"))
    return f"HTTP/1.1 200 OK\r\n{head}\r\n".encode() + body


async def body_of(response: RawResponse) -> bytes:
    try:
        return b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()


class Peer:
    """The server's side of one connection."""

    def __init__(self, sock: socket.socket, log: list[bytes]) -> None:
        self.sock = sock
        self._log = log
        self._buffer = b""

    def request(self) -> bytes | None:
        """The request line of the next request, read whole; None once the client closed."""
        while b"\r\n\r\n" not in self._buffer:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self._buffer += data
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            data = self.sock.recv(65536)
            assert data, "the client closed mid-request"
            rest += data
        self._buffer = rest[length:]
        line = head.split(b"\r\n", 1)[0]
        self._log.append(line)
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reset(self) -> None:
        """Close with a TCP reset rather than a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class RawServer:
    """127.0.0.1:0; every accepted connection runs ``handle(peer, index)`` in its own thread.

    ``requests`` lists the request lines read through any peer, in order.
    """

    def __init__(self, handle: Callable[[Peer, int], None]) -> None:
        self.handle = handle
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        self.requests: list[bytes] = []
        self.errors: list[BaseException] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._threads: list[threading.Thread] = []

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return  # the listener was shut down
            index, self.accepted = self.accepted, self.accepted + 1
            thread = threading.Thread(target=self._serve, args=(sock, index), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, index: int) -> None:
        try:
            with sock:
                self.handle(Peer(sock, self.requests), index)
        except BaseException as exc:
            self.errors.append(exc)

    def __enter__(self) -> RawServer:
        self._acceptor.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self._acceptor.join(5)
        self.listener.close()
        for thread in self._threads:
            thread.join(5)
        assert not self.errors, self.errors


def keep_answering(peer: Peer, index: int) -> None:
    while (line := peer.request()) is not None:
        peer.send(ok(line.split(b" ")[1]))


@contextmanager
def uvicorn_port() -> Iterator[tuple[str, int]]:
    with serve_in_thread(app) as url:
        yield url, int(url.rsplit(":", 1)[1])


# -- reuse and framing --------------------------------------------------------------------------


def test_sequential_requests_reuse_one_connection() -> None:
    with uvicorn_port() as (url, port):

        async def main() -> tuple[list[bytes], int]:
            transport = PoolTransport()
            pool = transport.origin(url)
            bodies = []
            for i in range(5):
                response = await transport.exchange(pool, request_head(f"/r{i}", port), b"{}")
                bodies.append(await body_of(response))
            count = len(pool.connections)
            await transport.aclose()
            return bodies, count

        bodies, connections = asyncio.run(main())
    assert bodies == [f"/r{i}".encode() for i in range(5)]
    assert connections == 1


def test_chunked_bodies_arrive_whole() -> None:
    with uvicorn_port() as (url, port):

        async def main() -> bytes:
            transport = PoolTransport()
            response = await transport.exchange(
                transport.origin(url), request_head("/chunked", port), b"{}"
            )
            body = await body_of(response)
            await transport.aclose()
            return body

        assert asyncio.run(main()) == b"a" * 10 + b"b" * 70_000 + b"c"


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    "head",
    [b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\n"],
    ids=["connection-close", "http-1.0"],
)
def test_a_body_without_framing_ends_at_close_and_its_connection_is_not_reused(
    loop: str, head: bytes
) -> None:
    def handle(peer: Peer, index: int) -> None:
        assert peer.request() is not None
        peer.send(head + b'{"choices": ')
        peer.send(b"[]}")

    with RawServer(handle) as server:

        async def main() -> tuple[list[bytes], int]:
            transport = PoolTransport()
            pool = transport.origin(server.url)
            bodies = []
            for _ in range(2):
                response = await transport.exchange(pool, request_head("/"), b"{}")
                bodies.append(await body_of(response))
                assert not pool.idle and not pool.connections
            await transport.aclose()
            return bodies, server.accepted

        bodies, accepted = run(loop, main())
    assert bodies == [b'{"choices": []}'] * 2
    assert accepted == 2


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 10,
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-le",
    ],
    ids=["content-length", "chunked", "head"],
)
def test_a_framed_answer_cut_by_the_upstream_is_broken(loop: str, answer: bytes) -> None:
    def handle(peer: Peer, index: int) -> None:
        assert peer.request() is not None
        peer.send(answer)

    with RawServer(handle) as server:

        async def main() -> ResponseBroken:
            transport = PoolTransport()
            try:
                response = await transport.exchange(
                    transport.origin(server.url), request_head("/"), b"{}"
                )
                await body_of(response)
            except ResponseBroken as exc:
                return exc
            finally:
                await transport.aclose()
            raise AssertionError("the cut answer was read as whole")

        error = run(loop, main())
    assert "closed the connection mid-response" in str(error)


@pytest.mark.parametrize("loop", LOOPS)
def test_answers_without_a_body_are_complete_at_their_head_and_interim_ones_are_skipped(
    loop: str,
) -> None:
    answers = [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n" + ok(b"final", "x-final: yes"),
    ]

    def handle(peer: Peer, index: int) -> None:
        for answer in answers:
            assert peer.request() is not None
            peer.send(answer)
        assert peer.request() is None

    with RawServer(handle) as server:

        async def main() -> list[tuple[int, list[tuple[bytes, bytes]], bytes]]:
            transport = PoolTransport()
            pool = transport.origin(server.url)
            seen = []
            for _ in answers:
                response = await transport.exchange(pool, request_head("/"), b"{}")
                seen.append((response.status, response.headers, await body_of(response)))
            await transport.aclose()
            return seen

        seen = run(loop, main())
        assert server.accepted == 1
    assert seen == [
        (204, [], b""),
        (304, [(b"content-length", b"5")], b""),
        (200, [(b"x-final", b"yes"), (b"content-length", b"5")], b"final"),
    ]


# -- stale connections and replays --------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("loop_saw_it", [False, True], ids=["close-pending", "close-seen"])
def test_a_connection_the_upstream_closed_while_idle_is_replaced_before_sending(
    loop: str, how: str, loop_saw_it: bool
) -> None:
    released = threading.Event()
    closed = threading.Event()

    def handle(peer: Peer, index: int) -> None:
        if index == 0:
            assert peer.request() is not None
            peer.send(ok(b"first"))
            released.wait(5)
            if how == "reset":
                peer.reset()
            else:
                peer.sock.close()
            closed.set()
        else:
            keep_answering(peer, index)

    with RawServer(handle) as server:

        async def main() -> bytes:
            transport = PoolTransport()
            pool = transport.origin(server.url)
            assert await body_of(await transport.exchange(pool, request_head("/1"), b"{}"))
            stale = pool.idle[-1]
            released.set()
            if loop_saw_it:
                await asyncio.to_thread(closed.wait, 5)
                await until(lambda: not pool.connections)  # gone from the pool, not lingering
                assert not pool.idle
            else:
                # Block the loop itself: the close is pending on the socket, unseen.
                assert closed.wait(5)
                assert not stale.closed and pool.idle == type(pool.idle)([stale])
            second = await body_of(await transport.exchange(pool, request_head("/2"), b"{}"))
            await transport.aclose()
            return second

        assert run(loop, main()) == b"/2"
        assert server.requests == [b"POST /1 HTTP/1.1", b"POST /2 HTTP/1.1"]
        assert server.accepted == 2


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("reused", [True, False], ids=["reused", "new"])
def test_a_request_the_upstream_read_and_dropped_is_not_sent_again(
    loop: str, how: str, reused: bool
) -> None:
    def handle(peer: Peer, index: int) -> None:
        if reused:
            assert peer.request() is not None
            peer.send(ok(b"warm"))
        assert peer.request() is not None
        if how == "reset":
            peer.reset()
        # else: `with sock` in RawServer closes it with a FIN

    with RawServer(handle) as server:

        async def main() -> NoResponse:
            transport = PoolTransport()
            pool = transport.origin(server.url)
            try:
                if reused:
                    await body_of(await transport.exchange(pool, request_head("/warm"), b"{}"))
                await transport.exchange(pool, request_head("/once"), b"{}")
            except NoResponse as exc:
                assert not pool.connections and pool.free == pool.limit
                return exc
            finally:
                await transport.aclose()
            raise AssertionError("an answer came from nowhere")

        error = run(loop, main())
        assert server.requests.count(b"POST /once HTTP/1.1") == 1
        assert server.accepted == 1
    assert "closed the connection without a response" in str(error)
    if how == "reset":
        assert isinstance(error.__cause__, ConnectionResetError)


@pytest.mark.parametrize("loop", LOOPS)
def test_bytes_nobody_asked_for_make_a_connection_unusable(loop: str) -> None:
    def handle(peer: Peer, index: int) -> None:
        assert peer.request() is not None
        peer.send(ok(b"first") + b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
        if index == 1:
            keep_answering(peer, index)

    with RawServer(handle) as server:

        async def main() -> list[bytes]:
            transport = PoolTransport()
            pool = transport.origin(server.url)
            bodies = []
            for path in ("/1", "/2"):
                bodies.append(
                    await body_of(await transport.exchange(pool, request_head(path), b"{}"))
                )
            await transport.aclose()
            return bodies

        assert run(loop, main()) == [b"first", b"first"]
        assert server.accepted == 2


# -- pool limits and keep-alive expiry ----------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_a_full_pool_times_out_with_its_own_error_and_leaks_no_slot(loop: str) -> None:
    received, answer = threading.Event(), threading.Event()

    def handle(peer: Peer, index: int) -> None:
        assert peer.request() is not None
        received.set()
        answer.wait(5)
        peer.send(ok(b"slow"))
        keep_answering(peer, index)

    with RawServer(handle) as server:

        async def main() -> tuple[list[bool], list[bool], PoolTimedOut]:
            transport = PoolTransport(max_connections=1)
            pool = transport.origin(server.url)
            holder = asyncio.create_task(transport.exchange(pool, request_head("/1"), b"{}"))
            assert await asyncio.to_thread(received.wait, 5)  # the holder has the one slot
            queued: list[bool] = []
            with pytest.raises(PoolTimedOut) as caught:
                await transport.exchange(
                    pool, request_head("/2"), b"{}", pool_timeout=0.05, on_queue=queued.append
                )
            answer.set()
            assert await body_of(await holder) == b"slow"
            after: list[bool] = []
            third = await transport.exchange(pool, request_head("/3"), b"{}", on_queue=after.append)
            assert await body_of(third) == b"/3"
            assert pool.free == 1 and not pool.waiters
            await transport.aclose()
            return queued, after, caught.value

        queued, after, error = run(loop, main())
        assert server.requests == [b"POST /1 HTTP/1.1", b"POST /3 HTTP/1.1"]
    assert queued == [True, False]
    assert after == []  # a free slot: no waiting, no call
    assert isinstance(error.__cause__, TimeoutError)
    assert str(error) == (
        f"no connection to 127.0.0.1:{server.port} became free within 0.05 s (1 in use)"
    )


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("handed_over", [False, True], ids=["waiting", "slot-just-handed-over"])
def test_a_request_cancelled_while_queued_leaks_no_slot(loop: str, handed_over: bool) -> None:
    with RawServer(keep_answering) as server:

        async def main() -> list[bool]:
            transport = PoolTransport(max_connections=1)
            pool = transport.origin(server.url)
            holder = await transport.exchange(pool, request_head("/1"), b"{}")
            queued: list[bool] = []
            waiting = asyncio.Event()

            def on_queue(waits: bool) -> None:
                queued.append(waits)
                if waits:
                    waiting.set()

            task = asyncio.create_task(
                transport.exchange(pool, request_head("/2"), b"{}", on_queue=on_queue)
            )
            await waiting.wait()
            if handed_over:
                await holder.aclose()  # gives the slot to the waiting task, which is not run yet
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            if not handed_over:
                await holder.aclose()
            assert pool.free == 1 and not pool.waiters
            third = await transport.exchange(pool, request_head("/3"), b"{}")
            assert await body_of(third) == b"/3"
            await transport.aclose()
            return queued

        assert run(loop, main()) == [True, False]
        assert b"POST /2 HTTP/1.1" not in server.requests


@pytest.mark.parametrize("loop", LOOPS)
def test_an_idle_connection_past_keepalive_expiry_is_not_reused(loop: str) -> None:
    ended: list[threading.Event] = [threading.Event(), threading.Event()]

    def handle(peer: Peer, index: int) -> None:
        keep_answering(peer, index)
        ended[index].set()

    with RawServer(handle) as server:

        async def main() -> None:
            transport = PoolTransport(keepalive_expiry=0)
            pool = transport.origin(server.url)
            for path in ("/1", "/2"):
                await body_of(await transport.exchange(pool, request_head(path), b"{}"))
            assert await asyncio.to_thread(ended[0].wait, 5)  # the first one was closed
            await transport.aclose()

        run(loop, main())
        assert server.accepted == 2


@pytest.mark.parametrize("loop", LOOPS)
def test_an_expired_idle_connection_is_closed_without_waiting_for_a_request(loop: str) -> None:
    ended = threading.Event()

    def handle(peer: Peer, index: int) -> None:
        keep_answering(peer, index)
        ended.set()

    with RawServer(handle) as server:

        async def main() -> None:
            transport = PoolTransport(keepalive_expiry=0.05)
            pool = transport.origin(server.url)
            await body_of(await transport.exchange(pool, request_head("/1"), b"{}"))
            assert await asyncio.to_thread(ended.wait, 5)
            await until(lambda: not pool.connections)
            assert not pool.idle
            await transport.aclose()

        run(loop, main())


def test_an_upstream_keep_alive_timeout_shortens_the_expiry() -> None:
    # "timeout=1": the upstream closes idle connections after 1 s; we stop reusing at 0 s.
    def handle(peer: Peer, index: int) -> None:
        while (line := peer.request()) is not None:
            peer.send(ok(line.split(b" ")[1], "keep-alive: timeout=1, max=100"))

    with RawServer(handle) as server:

        async def main() -> None:
            transport = PoolTransport()
            pool = transport.origin(server.url)
            for path in ("/1", "/2"):
                await body_of(await transport.exchange(pool, request_head(path), b"{}"))
            await transport.aclose()

        asyncio.run(main())
        assert server.accepted == 2


# -- back-pressure ------------------------------------------------------------------------------


def test_reading_pauses_above_the_high_water_mark_and_resumes() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB

    def handle(peer: Peer, index: int) -> None:
        while peer.request() is not None:
            peer.send(ok(body))

    with RawServer(handle) as server:

        async def main() -> None:
            transport = PoolTransport()
            pool = transport.origin(server.url)
            response = await transport.exchange(pool, request_head("/big"), b"{}")
            connection = response._connection
            await until(paused(response))
            assert connection._buffered > HIGH_WATER and not connection.complete
            assert await body_of(response) == body
            assert not connection._paused and pool.idle[-1] is connection
            again = await transport.exchange(pool, request_head("/big"), b"{}")
            assert again._connection is connection
            assert await body_of(again) == body
            await transport.aclose()

        asyncio.run(main())
        assert server.accepted == 1


def test_a_connection_released_with_unread_paused_bytes_serves_the_next_request() -> None:
    # A 300 KB answer passes the read buffer's high-water mark, so reading pauses; released
    # after one read (as an error body read up to its limit is), the connection is reused
    # reading again if the answer was complete, or closed if it was not.
    with uvicorn_port() as (url, port):

        async def main() -> list[bytes]:
            transport = PoolTransport()
            pool = transport.origin(url)
            bodies = []
            for _ in range(5):
                big = await transport.exchange(pool, request_head("/big", port), b"{}")
                connection = big._connection
                await until(paused(big))
                await big.read()
                await big.aclose()
                assert connection.closed or not connection._paused
                small = await asyncio.wait_for(
                    transport.exchange(pool, request_head("/small", port), b"{}"), 5
                )
                bodies.append(await body_of(small))
            assert len(pool.connections) == 1
            await transport.aclose()
            return bodies

        assert asyncio.run(main()) == [b"/small"] * 5


# -- failures to connect, and malformed answers ------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_a_refused_connection_keeps_its_reason(loop: str) -> None:
    port = free_port()

    async def main() -> None:
        transport = PoolTransport()
        try:
            await transport.exchange(transport.origin(f"http://127.0.0.1:{port}"), b"", b"")
        finally:
            await transport.aclose()

    with pytest.raises(ConnectFailed) as caught:
        run(loop, main())
    assert str(caught.value) == f"connection refused by 127.0.0.1:{port}"
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_tls_handshake_that_fails_or_hangs_is_a_connect_failure(loop: str) -> None:
    def handle(peer: Peer, index: int) -> None:
        if index == 0:
            peer.send(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # plain HTTP to a TLS client hello
        with contextlib.suppress(ConnectionResetError):
            while peer.sock.recv(65536):  # the client hello, then nothing until it gives up
                pass

    with RawServer(handle) as server:
        https = server.url.replace("http:", "https:")

        async def main() -> tuple[ConnectFailed, ConnectFailed]:
            transport = PoolTransport()
            pool = transport.origin(https)
            errors = []
            for _ in range(2):
                with pytest.raises(ConnectFailed) as caught:
                    await transport.exchange(pool, b"", b"", connect_timeout=0.2)
                errors.append(caught.value)
            await transport.aclose()
            return errors[0], errors[1]

        failed, hung = run(loop, main())
    assert str(failed).startswith(f"TLS handshake with 127.0.0.1:{server.port} failed")
    assert isinstance(failed.__cause__, ssl.SSLError)
    assert isinstance(hung, ConnectTimedOut)
    assert str(hung) == f"connecting to 127.0.0.1:{server.port} timed out after 0.2 s"


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    "answer",
    [b"SSH-2.0-OpenSSH_9.6\r\n\r\n", b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n"],
    ids=["not-http", "upgrade"],
)
def test_a_malformed_answer_is_malformed(loop: str, answer: bytes) -> None:
    def handle(peer: Peer, index: int) -> None:
        assert peer.request() is not None
        peer.send(answer)
        peer.request()  # until the client closes

    with RawServer(handle) as server:

        async def main() -> None:
            transport = PoolTransport()
            pool = transport.origin(server.url)
            try:
                await transport.exchange(pool, request_head("/"), b"{}")
            finally:
                assert not pool.connections and pool.free == pool.limit
                await transport.aclose()

        with pytest.raises(MalformedResponse) as caught:
            run(loop, main())
    assert str(caught.value).startswith(f"malformed response from 127.0.0.1:{server.port}: ")
    assert isinstance(caught.value.__cause__, httptools.HttpParserError)
