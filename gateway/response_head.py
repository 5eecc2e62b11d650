"""Header lines the gateway made itself, added to a response head without uvicorn's checks.

uvicorn checks every response header in a Python loop: two regular-expression searches, a
``lower()`` and three comparisons each, ~6 k instructions a header. A limited virtual key's
six ``x-ratelimit-*`` headers cost 38 k instructions a request that way, more than anything else
its admission does. Their names are constants and their values numbers the gateway formatted,
so admission makes them as finished ``name: value\\r\\n`` lines (:data:`Lines`), and
:func:`send_start` writes those lines into the head as they are, the response's own headers
still checked one by one as uvicorn does: the bytes written are the ones uvicorn writes for
the same headers (``tests/test_response_head.py`` compares them).

That takes uvicorn's own ``send`` (the bound method of its HTTP/1.1 cycle, which the
gateway's outermost middleware receives); given any other ``send`` (another server, a
wrapper), the lines become ordinary headers and go through it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from starlette.types import Message, Send
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)

Lines = bytes  # b"name: value\r\n" lines: names of tokens only, values without control bytes
_UVICORN_SEND = RequestResponseCycle.send


def send_start(send: Send, message: Message, lines: Lines) -> Awaitable[None]:
    """Send the ``http.response.start`` ``message`` with ``lines`` among its headers."""
    if getattr(send, "__func__", None) is _UVICORN_SEND:  # a bound RequestResponseCycle.send
        cycle = send.__self__  # type: ignore[attr-defined]
        if not (cycle.response_started or cycle.access_log or cycle.default_headers):
            return _start(cycle, message, lines)
    return send({**message, "headers": [*message.get("headers", ()), *split(lines)]})


def split(lines: Lines) -> list[tuple[bytes, bytes]]:
    """``lines`` as (name, value) pairs."""
    pairs = []
    for line in lines.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b": ")
            pairs.append((name, value))
    return pairs


async def _start(cycle: Any, message: Message, lines: Lines) -> None:
    """uvicorn 0.54's ``send`` for a response's first message, ``lines`` written after the
    message's own headers (where uvicorn would write them as the last of those headers)."""
    if cycle.flow.write_paused and not cycle.disconnected:
        await cycle.flow.drain()
    if cycle.disconnected:
        return
    if cycle.response_started:  # started while draining: uvicorn's own error
        await _UVICORN_SEND(cycle, message)  # type: ignore[arg-type]
        return
    if message["type"] != "http.response.start":
        raise RuntimeError(
            f"Expected ASGI message 'http.response.start', but got '{message['type']}'."
        )
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    status_code = message["status"]
    content = [STATUS_LINE[status_code]]
    has_connection_close = False
    for name, value in message.get("headers", ()):
        if HEADER_RE.search(name):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(value):
            raise RuntimeError("Invalid HTTP header value.")
        name = name.lower()
        if name == b"content-length" and cycle.chunked_encoding is None:
            cycle.expected_content_length = int(value.decode())
            cycle.chunked_encoding = False
        elif name == b"transfer-encoding" and value.lower() == b"chunked":
            cycle.expected_content_length = 0
            cycle.chunked_encoding = True
        elif name == b"connection" and b"close" in [
            token.lower().strip() for token in value.split(b",")
        ]:
            cycle.keep_alive = False
            has_connection_close = True
        content += (name, b": ", value, b"\r\n")
    content.append(lines)
    if not cycle.keep_alive and not has_connection_close:
        content.append(b"connection: close\r\n")
    if (
        cycle.chunked_encoding is None
        and cycle.scope["method"] != "HEAD"
        and status_code not in (204, 304)
    ):
        cycle.chunked_encoding = True
        content.append(b"transfer-encoding: chunked\r\n")
    content.append(b"\r\n")
    cycle.transport.write(b"".join(content))
