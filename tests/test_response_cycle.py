"""GatewayCycle writes what uvicorn's RequestResponseCycle writes, message for message.

Each case runs the same ASGI messages through both classes, each over a transport that
records its writes, and compares the bytes, the error raised (if any) and the state the cycle
leaves: keep-alive, chunked or not, the length still expected, whether it closed and how
often it said the response was complete. The server
tests run the gateway's cycle end to end; these pin down the corners they do not reach.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from gateway.response_cycle import GatewayCycle

C = TypeVar("C", bound=RequestResponseCycle)


class Recorder(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _cycle(
    cls: type[C],
    transport: Recorder,
    *,
    method: str = "GET",
    keep_alive: bool = True,
    default_headers: list[tuple[bytes, bytes]] | None = None,
    on_response: Callable[[], None] = lambda: None,
) -> C:
    return cls(
        scope={"type": "http", "method": method, "http_version": "1.1", "path": "/"},  # type: ignore[typeddict-item]
        transport=transport,
        flow=FlowControl(transport),
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"),
        access_log=False,
        default_headers=default_headers or [],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=on_response,
    )


def _run(
    cls: type[RequestResponseCycle],
    messages: list[dict[str, Any]],
    *,
    method: str = "GET",
    keep_alive: bool = True,
    default_headers: list[tuple[bytes, bytes]] | None = None,
    log: list[bytes] | None = None,
) -> tuple[bytes, str | None, tuple[Any, ...]]:
    async def go() -> tuple[bytes, str | None, tuple[Any, ...]]:
        transport = Recorder()
        completed: list[int] = []
        cycle = _cycle(
            cls,
            transport,
            method=method,
            keep_alive=keep_alive,
            default_headers=default_headers or [],
            on_response=lambda: completed.append(1),
        )
        error = None
        try:
            for message in messages:
                await cycle.send(message)  # type: ignore[arg-type]
        except Exception as exc:
            error = type(exc).__name__
        await asyncio.sleep(0)  # the end of this turn of the loop: a head waiting is written
        state = (
            cycle.keep_alive,
            cycle.chunked_encoding,
            cycle.expected_content_length,
            cycle.response_started,
            cycle.response_complete,
            transport.closed,
            len(completed),
        )
        writes.extend(transport.written)
        return b"".join(transport.written), error, state

    writes: list[bytes] = []
    result = asyncio.run(go())
    if log is not None:
        log.extend(writes)
    return result


def start(status: int = 200, *headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": list(headers)}


def body(data: bytes = b"", more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


JSON = (b"content-type", b"application/json")
CASES: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {
    "json with a length": ([start(200, JSON, (b"content-length", b"2")), body(b"{}")], {}),
    "a virtual key's headers": (
        [
            start(
                200,
                JSON,
                (b"content-length", b"2"),
                (b"x-request-id", b"req_1"),
                (b"x-ratelimit-limit-requests", b"600"),
                (b"x-ratelimit-remaining-requests", b"599"),
                (b"x-ratelimit-reset-requests", b"100ms"),
                (b"x-ratelimit-limit-tokens", b"100000"),
                (b"x-ratelimit-remaining-tokens", b"98000"),
                (b"x-ratelimit-reset-tokens", b"1.2s"),
            ),
            body(b"{}"),
        ],
        {},
    ),
    "no headers at all": ([start(200), body(b"hi")], {}),
    "a stream, chunked by default": (
        [
            start(200, (b"content-type", b"text/event-stream")),
            body(b"data: 1\n\n", more=True),
            body(b"", more=True),
            body(b"data: 2\n\n", more=True),
            body(),
        ],
        {},
    ),
    "a stream ending with data": ([start(200), body(b"a", more=True), body(b"b")], {}),
    "names lowered": ([start(200, (b"Content-Length", b"2"), (b"X-Thing", b"A")), body(b"ok")], {}),
    "HEAD with a length": (
        [start(200, (b"content-length", b"10")), body(b"")],
        {"method": "HEAD"},
    ),
    "HEAD without a length": ([start(200), body(b"")], {"method": "HEAD"}),
    "204": ([start(204), body()], {}),
    "304": ([start(304), body()], {}),
    "connection: close among tokens": (
        [start(200, (b"connection", b"keep-alive, Close"), (b"content-length", b"1")), body(b"x")],
        {},
    ),
    "connection: keep-alive only": (
        [start(200, (b"Connection", b"keep-alive"), (b"content-length", b"1")), body(b"x")],
        {},
    ),
    "the client asked to close": (
        [start(200, (b"content-length", b"1")), body(b"x")],
        {"keep_alive": False},
    ),
    "explicit chunked": (
        [start(200, (b"transfer-encoding", b"Chunked")), body(b"abc", more=True), body()],
        {},
    ),
    "length, then chunked": (
        [start(200, (b"content-length", b"3"), (b"transfer-encoding", b"chunked")), body(b"abc")],
        {},
    ),
    "chunked, then length": (
        [start(200, (b"transfer-encoding", b"chunked"), (b"content-length", b"3")), body(b"abc")],
        {},
    ),
    "other transfer-encoding": (
        [start(200, (b"transfer-encoding", b"gzip"), (b"content-length", b"3")), body(b"abc")],
        {},
    ),
    "two lengths": (
        [start(200, (b"content-length", b"1"), (b"content-length", b"9")), body(b"x")],
        {},
    ),
    "default headers first": (
        [start(200, (b"content-length", b"1")), body(b"x")],
        {"default_headers": [(b"server", b"uvicorn"), (b"date", b"today")]},
    ),
    "a body longer than its length": ([start(200, (b"content-length", b"1")), body(b"xy")], {}),
    "a body shorter than its length": ([start(200, (b"content-length", b"3")), body(b"xy")], {}),
    "a length that is not a number": ([start(200, (b"content-length", b"two")), body(b"xy")], {}),
    "a bad name": ([start(200, (b"bad name", b"v")), body()], {}),
    "a bad value": ([start(200, (b"x-a", b"ok"), (b"x-b", b"line\nbreak")), body()], {}),
    "a tab in a value is fine": ([start(200, (b"x-a", b"a\tb")), body()], {}),
    "body before start": ([body(b"x")], {}),
    "start twice": ([start(200), start(200)], {}),
    "after the end": ([start(200, (b"content-length", b"1")), body(b"x"), body(b"y")], {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_gateway_cycle_writes_what_uvicorn_writes(case: str) -> None:
    messages, options = CASES[case]
    ours = _run(GatewayCycle, messages, **options)
    theirs = _run(RequestResponseCycle, messages, **options)
    assert ours == theirs


def test_a_header_that_is_not_a_pair_is_refused() -> None:
    for bad in ([(b"a", b"b", b"c")], [(b"a",)], [(b"a", b"b"), (b"c", b"d", b"e"), (b"f",)]):
        written, error, _ = _run(
            GatewayCycle, [{"type": "http.response.start", "status": 200, "headers": bad}]
        )
        assert error is not None and written == b""


def test_a_head_goes_out_with_the_first_body_message() -> None:
    writes: list[bytes] = []
    messages = [start(200, JSON, (b"content-length", b"2")), body(b"{}")]
    _run(GatewayCycle, messages, log=writes)
    assert len(writes) == 1 and writes[0].endswith(b"\r\n\r\n{}")
    writes.clear()
    stream = [start(200), body(b"a", more=True), body(b"b", more=True), body()]
    _run(GatewayCycle, stream, log=writes)
    assert writes == [writes[0], b"1\r\nb\r\n", b"0\r\n\r\n"]
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(
        b"\r\n\r\n1\r\na\r\n"
    )


def test_a_head_whose_body_is_slow_is_written_at_the_end_of_the_loop_turn() -> None:
    async def go() -> list[bytes]:
        transport = Recorder()
        cycle = _cycle(GatewayCycle, transport)
        await cycle.send(start(200, (b"content-type", b"text/event-stream")))
        before = list(transport.written)
        await asyncio.sleep(0.05)  # an upstream slow to send its first event
        assert before == [] and len(transport.written) == 1
        await cycle.send(body(b"x", more=True))
        return transport.written

    written = asyncio.run(go())
    assert written[0].startswith(b"HTTP/1.1 200 OK\r\n") and written[1] == b"1\r\nx\r\n"
