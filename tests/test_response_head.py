"""gateway.response_head writes what uvicorn writes for the same headers, without its checks
on the gateway's own lines; given any other ``send``, the lines become ordinary headers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from gateway.response_head import send_start, split

LINES = (
    b"x-ratelimit-limit-requests: 60\r\nx-ratelimit-remaining-requests: 59\r\n"
    b"x-ratelimit-reset-requests: 1s\r\nx-ratelimit-limit-tokens: 1000\r\n"
    b"x-ratelimit-remaining-tokens: 900\r\nx-ratelimit-reset-tokens: 6ms\r\n"
)


class Transport(asyncio.Transport):
    """Records what the cycle writes (the bytes are the subject here, not a connection)."""

    def __init__(self) -> None:
        super().__init__()
        self.data: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def cycle(method: str = "POST", *, keep_alive: bool = True) -> tuple[Any, Transport]:
    transport = Transport()
    scope = {"type": "http", "method": method, "http_version": "1.1", "headers": []}
    made = RequestResponseCycle(
        scope,  # type: ignore[arg-type]
        transport,
        FlowControl(transport),
        logging.getLogger("test"),
        logging.getLogger("test.access"),
        False,
        [],
        asyncio.Event(),
        False,
        keep_alive,
        lambda: None,
    )
    return made, transport


STATE = ("response_started", "chunked_encoding", "expected_content_length", "keep_alive")

CASES = [
    ("POST", True, 200, [(b"content-type", b"application/json"), (b"content-length", b"2")]),
    ("POST", True, 200, [(b"content-type", b"text/event-stream")]),  # chunked
    ("POST", False, 200, [(b"content-length", b"2")]),  # connection: close added
    ("POST", True, 429, [(b"Content-Length", b"2"), (b"Connection", b"keep-alive, Close")]),
    ("POST", True, 200, [(b"transfer-encoding", b"chunked")]),
    ("HEAD", True, 200, []),
    ("POST", True, 204, []),
    ("POST", True, 200, [(b"content-length", b"2"), (b"content-length", b"5")]),
]


@pytest.mark.parametrize(("method", "keep_alive", "status", "headers"), CASES)
def test_the_bytes_and_state_are_uvicorns(
    method: str, keep_alive: bool, status: int, headers: list[tuple[bytes, bytes]]
) -> None:
    asyncio.run(_compare(method, keep_alive, status, headers))


async def _compare(
    method: str, keep_alive: bool, status: int, headers: list[tuple[bytes, bytes]]
) -> None:
    ours, our_bytes = cycle(method, keep_alive=keep_alive)
    theirs, their_bytes = cycle(method, keep_alive=keep_alive)
    start = {"type": "http.response.start", "status": status, "headers": headers}
    await send_start(ours.send, dict(start), LINES)
    await theirs.send({**start, "headers": [*headers, *split(LINES)]})
    assert our_bytes.data == their_bytes.data
    assert b"x-ratelimit-reset-tokens: 6ms\r\n" in our_bytes.data[0]
    assert [getattr(ours, name) for name in STATE] == [getattr(theirs, name) for name in STATE]
    # The body goes through uvicorn's own send: the framing chosen above must carry it.
    length = next((int(v) for n, v in headers if n.lower() == b"content-length"), 2)
    body = {"type": "http.response.body", "body": b"x" * length if method != "HEAD" else b""}
    if status != 204:
        await ours.send(dict(body))
        await theirs.send(dict(body))
        assert our_bytes.data == their_bytes.data
        assert ours.response_complete and theirs.response_complete


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ([(b"bad name", b"x")], "Invalid HTTP header name."),
        ([(b"x-evil", b"a\r\nset-cookie: 1")], "Invalid HTTP header value."),
    ],
)
def test_the_responses_own_headers_are_still_checked(
    headers: list[tuple[bytes, bytes]], error: str
) -> None:
    async def check() -> None:
        ours, written = cycle()
        start = {"type": "http.response.start", "status": 200, "headers": headers}
        with pytest.raises(RuntimeError, match=error):
            await send_start(ours.send, start, LINES)
        assert written.data == []

    asyncio.run(check())


def test_any_other_send_gets_the_lines_as_headers() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def check() -> None:
        start = {"type": "http.response.start", "status": 200, "headers": [(b"a", b"b")]}
        await send_start(send, start, LINES)

    asyncio.run(check())
    assert sent[0]["headers"] == [(b"a", b"b"), *split(LINES)]
    assert len(split(LINES)) == 6
    assert split(LINES)[0] == (b"x-ratelimit-limit-requests", b"60")


def test_uvicorns_send_takes_the_lines_as_they_are() -> None:
    """The fast path runs (uvicorn would lower the name) and writes the head at once."""

    async def check() -> None:
        ours, written = cycle()
        start = {"type": "http.response.start", "status": 200, "headers": []}
        await send_start(ours.send, start, b"X-Made-Here: 1\r\n")
        assert written.data == [
            b"HTTP/1.1 200 OK\r\nX-Made-Here: 1\r\ntransfer-encoding: chunked\r\n\r\n"
        ]

    asyncio.run(check())
