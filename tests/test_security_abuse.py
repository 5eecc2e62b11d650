"""Abuse: huge, deep or endless requests get a 4xx or a closed connection, quickly, in bounded
memory; slow clients cannot hold connections.

Memory is the real console script's, read from /proc: its peak RSS (VmHWM, reset through
clear_refs before each attempt) against its RSS before. Complements tests/test_bad_input.py
(which checks the statuses of 100k messages, absurd n and max_tokens, an over-limit body).
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.app import create_app
from tests.conftest import fault_provider, post_chat, settings
from tests.support import rawhttp
from tests.support.fault_upstream import FaultUpstream
from tests.support.servers import GATEWAY, ProcessServer, free_port, serve_in_thread, spawn

MIB = 1 << 20
OK_BODY = {"model": "echo/echo", "messages": [{"role": "user", "content": "still served"}]}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessServer]:
    """The console script on its defaults (16 MiB bodies), with 1-second client deadlines."""
    port = free_port()
    with spawn(
        [GATEWAY, "--no-ui", "--port", str(port)],
        env={"GATEWAY_HEADER_TIMEOUT": "1", "GATEWAY_BODY_TIMEOUT": "1"},
        ready_url=f"http://127.0.0.1:{port}/health",
        cwd=tmp_path_factory.mktemp("abuse"),
    ) as server:
        yield server
    assert "Traceback" not in server.output()


class Memory:
    """The growth of a process's peak RSS over a block, in MiB."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
        raise AssertionError(f"no {field} for {self.pid}")

    def __enter__(self) -> Memory:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # peak RSS := current RSS
        self.before = self._status("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth = self._status("VmHWM") - self.before


def flood(
    server: ProcessServer, head: bytes, chunk: bytes, *, total: int, seconds: float = 15.0
) -> tuple[int, bytes, float]:
    """Send ``head``, then ``chunk`` until ``total`` bytes went, the server answers or closes
    the connection, or ``seconds`` pass. Returns the bytes of body sent, what came back, and
    the seconds until the server answered or closed."""
    sent = 0
    received = b""
    started = time.monotonic()
    deadline = started + seconds
    with socket.create_connection(rawhttp.address(server.base_url), timeout=5) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        pending = b""
        while time.monotonic() < deadline and (sent < total or pending):
            readable, writable, _ = select.select([sock], [sock], [], 1.0)
            if readable:
                break
            if writable:
                pending = pending or chunk
                try:
                    n = sock.send(pending)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:  # the server closed on us: that is an answer too
                    break
                sent += n
                pending = pending[n:]
        answered = time.monotonic() - started
        sock.setblocking(True)
        sock.settimeout(max(0.1, min(5.0, deadline - time.monotonic())))
        try:
            while len(received) < 65536 and (data := sock.recv(65536)):
                received += data
        except OSError:
            pass
    return sent, received, answered


def status_of(received: bytes) -> int | None:
    return rawhttp.parse(received).status if received.startswith(b"HTTP/1.1 ") else None


def test_a_200_mb_body_with_content_length_is_refused_before_it_is_read(
    gateway: ProcessServer,
) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % (200 * MIB)
    )
    with Memory(gateway.proc.pid) as memory:
        sent, received, answered = flood(gateway, head, b"x" * MIB, total=200 * MIB)
    assert status_of(received) == 413, received[:300]
    assert b'"code":"body_too_large"' in received
    assert sent < 64 * MIB, f"the answer came only after {sent / MIB:.0f} MiB"
    assert answered < 2, f"the answer took {answered:.1f} s"
    assert memory.growth < 20, f"peak RSS grew by {memory.growth} MiB"


def test_a_200_mb_chunked_body_is_cut_off_at_the_limit(gateway: ProcessServer) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n" % MIB + b"y" * MIB + b"\r\n"
    with Memory(gateway.proc.pid) as memory:
        sent, received, answered = flood(gateway, head, chunk, total=200 * MIB)
    # The client sees the 413, or a connection closed early: never 200 MB swallowed.
    assert status_of(received) in (413, None), received[:300]
    assert sent < 100 * MIB, f"the server read {sent / MIB:.0f} MiB of a 16 MiB limit"
    assert answered < 5, f"the answer took {answered:.1f} s"
    assert memory.growth < 50, f"peak RSS grew by {memory.growth} MiB"
    assert httpx.post(gateway.base_url + "/v1/chat/completions", json=OK_BODY).status_code == 200


def test_endless_headers_are_cut_off_in_bounded_memory(gateway: ProcessServer) -> None:
    with Memory(gateway.proc.pid) as memory:
        sent, received, answered = flood(
            gateway, b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-pad: ", b"p" * MIB, total=200 * MIB
        )
    assert status_of(received) in (431, None), received[:300]
    assert sent < 32 * MIB, f"the server read {sent / MIB:.0f} MiB of headers"
    assert answered < 2, f"the answer took {answered:.1f} s"
    assert memory.growth < 20, f"peak RSS grew by {memory.growth} MiB"


def test_100k_messages_are_refused_quickly_in_bounded_memory(gateway: ProcessServer) -> None:
    body = orjson.dumps(
        {"model": "echo/echo", "messages": [{"role": "user", "content": "x"}] * 100_000}
    )
    with Memory(gateway.proc.pid) as memory:
        started = time.monotonic()
        response = httpx.post(gateway.base_url + "/v1/chat/completions", content=body, timeout=10)
        elapsed = time.monotonic() - started
    assert response.status_code == 400 and response.json()["error"]["code"] == "too_many_messages"
    assert elapsed < 3, f"{elapsed:.1f} s"
    assert memory.growth < 100, f"peak RSS grew by {memory.growth} MiB"


def wait_closed(socks: list[socket.socket], seconds: float) -> list[socket.socket]:
    """The sockets the server has not closed (EOF or reset) within ``seconds``."""
    open_ = list(socks)
    deadline = time.monotonic() + seconds
    while open_ and time.monotonic() < deadline:
        readable, _, _ = select.select(open_, [], [], 0.1)
        for sock in readable:
            try:
                while sock.recv(65536):
                    pass
            except BlockingIOError:
                continue  # an answer (a 408), the close follows
            except OSError:
                pass
            open_.remove(sock)
    return open_


def test_slow_clients_are_closed_while_others_are_served(gateway: ProcessServer) -> None:
    address = rawhttp.address(gateway.base_url)
    partial = [
        b"POST /v1/chat/comp",  # a request line, never finished
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n",  # headers, never finished
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{",  # body
        b"GET /health HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n",  # answered; body never
    ]
    socks: list[socket.socket] = []
    try:
        for i in range(52):
            sock = socket.create_connection(address, timeout=5)
            socks.append(sock)
            sock.sendall(partial[i % len(partial)])
            sock.setblocking(False)
        started = time.monotonic()
        with httpx.Client(base_url=gateway.base_url, timeout=5) as client:
            assert client.get("/health").status_code == 200
            assert client.post("/v1/chat/completions", json=OK_BODY).status_code == 200
        assert time.monotonic() - started < 1, "a normal client is served at once"
        still_open = wait_closed(socks, seconds=6)
        assert not still_open, f"{len(still_open)} of {len(socks)} slow connections still open"
        assert httpx.get(gateway.base_url + "/health").status_code == 200
    finally:
        for sock in socks:
            sock.close()


def test_a_client_that_stops_sending_its_body_gets_a_408() -> None:
    from gateway.server import HeaderDeadlineProtocol

    class Quick(HeaderDeadlineProtocol):
        body_timeout = 0.5

    with serve_in_thread(create_app(settings()), http=Quick) as url:
        started = time.monotonic()
        response = rawhttp.exchange(
            url,
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b'content-length: 100\r\n\r\n{"model": "echo/echo"',
        )
        assert response.status == 408
        assert orjson.loads(response.body)["error"]["code"] == "body_timeout"
        assert time.monotonic() - started < 5
        assert post_chat(url, OK_BODY).status_code == 200


@pytest.fixture(scope="module")
def deep_gateway(fault_upstream: tuple[str, FaultUpstream]) -> Iterator[str]:
    app = create_app(
        settings(
            providers={
                "echo": {"type": "echo"},
                "fault": fault_provider(fault_upstream[0], max_retries=0),
            }
        )
    )
    with serve_in_thread(app) as url:
        yield url


def nested(depth: int, model: str, where: str) -> bytes:
    deep = b"[" * depth + b"]" * depth
    user = b'{"role": "user", "content": "hi"}'
    if where == "top":
        return b'{"model": "%s", "messages": [%s], "x": %s}' % (model.encode(), user, deep)
    if where == "metadata":
        deep = b'{"a": ' * depth + b"1" + b"}" * depth
        return b'{"model": "%s", "messages": [%s], "metadata": %s}' % (model.encode(), user, deep)
    tool = b'{"type": "function", "function": {"name": "f", "parameters": %s}}' % deep
    return b'{"model": "%s", "messages": [%s], "tools": [%s]}' % (model.encode(), user, tool)


@pytest.mark.parametrize("model", ["echo/echo", "fault/ok"])
@pytest.mark.parametrize("where", ["top", "metadata", "tool-schema"])
def test_deep_nesting_is_400_at_any_depth_past_the_limit(
    deep_gateway: str, model: str, where: str
) -> None:
    for depth in (100,):
        response = post_chat(deep_gateway, nested(depth, model, where))
        assert response.status_code == 200, (depth, response.text)
    for depth in (130, 254, 255, 256, 300, 1000, 1023, 1024, 1025, 5000):
        started = time.monotonic()
        response = post_chat(deep_gateway, nested(depth, model, where))
        assert response.status_code == 400, (depth, response.text)
        assert response.json()["error"]["code"] in ("too_deep", "invalid_json"), response.text
        assert time.monotonic() - started < 2
