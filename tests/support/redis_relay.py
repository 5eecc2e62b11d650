"""A TCP relay between a gateway and a real ``redis-server`` that counts the commands it
forwards and can hold Redis's replies back, letting them through one at a time.

A request that must wait for N replies before it is answered cannot be answered while fewer
than N are let through: the relay turns "Redis adds at most one round trip per request" into
a count, with no clock in it. Commands always pass at once; replies are split on RESP
boundaries and delivered in order while the relay has credit (unlimited unless :meth:`hold`).

Loopback only; its loop runs in a thread of its own and every wait here is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from tests.support.servers import free_port


def resp_end(buf: bytes | bytearray, start: int = 0) -> int | None:
    """Where the RESP2 value that begins at ``start`` ends, or None when ``buf`` does not hold
    all of it yet."""
    line_end = buf.find(b"\r\n", start)
    if line_end < 0:
        return None
    kind, head, after = buf[start : start + 1], buf[start + 1 : line_end], line_end + 2
    if kind in (b"+", b"-", b":"):
        return after
    if kind == b"$":
        size = int(head)
        end = after + size + 2 if size >= 0 else after
        return end if len(buf) >= end else None
    if kind == b"*":
        position: int | None = after
        for _ in range(max(int(head), 0)):
            assert position is not None
            position = resp_end(buf, position)
            if position is None:
                return None
        return position
    raise ValueError(f"not RESP: {bytes(buf[start : start + 20])!r}")


def _split(buf: bytearray) -> list[bytes]:
    """The whole values at the front of ``buf``, removed from it."""
    values = []
    while buf:
        end = resp_end(buf)
        if end is None:
            break
        values.append(bytes(buf[:end]))
        del buf[:end]
    return values


def _bulks(command: bytes) -> list[bytes]:
    """A command's arguments (an array of bulk strings, as clients send them)."""
    args = []
    position = command.index(b"\r\n") + 2
    while position < len(command):
        line_end = command.index(b"\r\n", position)
        size = int(command[position + 1 : line_end])
        args.append(command[line_end + 2 : line_end + 2 + size])
        position = line_end + 2 + size + 2
    return args


def label(command: bytes) -> tuple[str, str]:
    """(the command's name, the SHA1 of the script it runs, or "")."""
    args = _bulks(command)
    name = args[0].decode().upper()
    if name == "EVALSHA":
        return name, args[1].decode()
    if name == "EVAL":
        return name, hashlib.sha1(args[1], usedforsecurity=False).hexdigest()
    return name, ""


def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not {what} after {timeout} s")
        time.sleep(0.005)


class RedisRelay:
    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.port = free_port()
        # (name, script SHA1 or ""), in the order they were forwarded
        self.commands: list[tuple[str, str]] = []
        self.delivered = 0  # replies handed to the gateway
        self._credit: int | None = None  # None: unlimited
        self._held: deque[tuple[asyncio.StreamWriter, bytes]] = deque()  # in arrival order
        self._writers: list[asyncio.StreamWriter] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    # Control, from the test's thread
    def hold(self) -> None:
        """From now on, replies wait for :meth:`release`."""
        self._in_loop(lambda: setattr(self, "_credit", 0))

    def release(self, count: int) -> None:
        """Let ``count`` more replies through (as they come)."""

        def grant() -> None:
            self._credit = (self._credit or 0) + count
            self._deliver()

        self._in_loop(grant)

    def open(self) -> None:
        """Every reply through, held ones first."""

        def unlimited() -> None:
            self._credit = None
            self._deliver()

        self._in_loop(unlimited)

    def sent(self) -> int:
        with self._lock:
            return len(self.commands)

    def wait_sent(self, count: int, timeout: float = 10.0) -> None:
        """Until ``count`` commands have been forwarded in all."""
        _until(lambda: self.sent() >= count, timeout, f"{count} commands forwarded")

    def scripts(self, start: int = 0) -> list[str]:
        """The scripts run (SHA1s) by the commands forwarded from the ``start``-th on."""
        with self._lock:
            return [sha for _, sha in self.commands[start:]]

    def wait_quiet(self, until: Callable[[], bool] = lambda: True, timeout: float = 10.0) -> None:
        """Until ``until()`` holds and every command forwarded has had its reply delivered."""
        _until(lambda: self._answered() and until(), timeout, "every reply delivered")

    def _answered(self) -> bool:
        with self._lock:
            return self.delivered >= len(self.commands)

    # The relay, in its loop
    def _in_loop(self, action: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                action()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(5):
            raise TimeoutError("the relay's loop did not run")

    def _deliver(self) -> None:
        while self._held and (self._credit is None or self._credit > 0):
            writer, reply = self._held.popleft()
            if self._credit is not None:
                self._credit -= 1
            if not writer.is_closing():
                writer.write(reply)
            with self._lock:
                self.delivered += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.redis_port)
        self._writers.append(writer)

        async def commands() -> None:
            buf = bytearray()
            while chunk := await reader.read(65536):
                buf += chunk
                labels = [label(c) for c in _split(buf)]
                with self._lock:
                    self.commands += labels
                up_writer.write(chunk)
            up_writer.close()

        async def replies() -> None:
            buf = bytearray()
            while chunk := await up_reader.read(65536):
                buf += chunk
                self._held.extend((writer, reply) for reply in _split(buf))
                self._deliver()
            writer.close()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(commands(), replies())

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    def __enter__(self) -> RedisRelay:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for writer in self._writers:
                writer.close()
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@contextlib.contextmanager
def redis_relay(redis_port: int) -> Iterator[RedisRelay]:
    with RedisRelay(redis_port) as relay:
        yield relay
