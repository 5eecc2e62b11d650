"""uvicorn's request/response cycle with a response head built in a few C calls and sent
with the first part of the body.

uvicorn checks and lowers every response header in a Python loop: two regular-expression
searches, a ``lower()`` and three comparisons each, ~44 bytecodes a header. A gateway
response carries 5-13 of them (a virtual key's six ``x-ratelimit-*`` among them), so that loop
was ~6 % of a request's bytecodes. :class:`GatewayCycle` does the same checks on the joined
names and values at once (uvicorn's expressions are character classes: a joined string has
a bad character exactly when one of its parts has), lowers the names in one call and joins the
head with ``map``/``zip``; only ``content-length``, ``transfer-encoding`` and ``connection``
are looked at one by one, as uvicorn does. What it writes, what it raises and the state it
leaves (keep-alive, chunked or not, the length still expected, the response-complete
callback) are uvicorn 0.54's, which ``tests/test_response_cycle.py`` checks side by side.

The head is not written on its own: every response the gateway makes sends its first body
message right after its head, so both go out in one ``write`` (one TCP segment, one wake-up
of the client, one system call fewer a request). A head whose body is slow to come (an
application that streams after a pause) is written at the end of the event loop's turn.

:class:`gateway.server.HeaderDeadlineProtocol` gives each cycle this class; ``uvicorn<0.55``
is pinned because this extends its private ``RequestResponseCycle``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

_flatten = itertools.chain.from_iterable
_SPECIAL = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_LENGTH_ONLY = frozenset({b"content-length"})
_COALESCE = 64 * 1024  # a head and a body up to this size go out in one write


class GatewayCycle(RequestResponseCycle):
    # The connection's event loop (set by the protocol that makes the cycle) and the head
    # not written yet; class defaults, as uvicorn's __init__ does not know them.
    _loop: asyncio.AbstractEventLoop | None = None
    _pending_head: bytes | None = None

    async def send(self, message: Any) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{message['type']}'."
                )
            self.response_started = True
            self.waiting_for_100_continue = False
            status_code = message["status"]
            headers = list(message.get("headers", ()))
            if self.default_headers:
                headers = self.default_headers + headers
            if self.access_log:
                self.access_logger.info(
                    '%s - "%s %s HTTP/%s" %d',
                    get_client_addr(self.scope),
                    self.scope["method"],
                    get_path_with_query_string(self.scope),
                    self.scope["http_version"],
                    status_code,
                )
            # Written with the first body message, which follows at once in every response
            # the gateway makes (one write, one segment, where there were two); or, if the
            # body is slow to come, at the end of this turn of the event loop.
            self._pending_head = self._head(status_code, headers)
            (self._loop or asyncio.get_running_loop()).call_soon(self._write_head)
        elif not self.response_complete:
            if message["type"] != "http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.body', but got '{message['type']}'."
                )
            body = message.get("body", b"")
            more_body = message.get("more_body", False)
            if self.scope["method"] == "HEAD":
                self.expected_content_length = 0
                data = b""
            elif self.chunked_encoding:
                if more_body:
                    data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
                elif body:
                    data = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
                else:
                    data = b"0\r\n\r\n"
            else:
                size = len(body)
                if size > self.expected_content_length:
                    raise RuntimeError("Response content longer than Content-Length")
                self.expected_content_length -= size
                data = body
            head = self._pending_head
            if head is not None:
                self._pending_head = None
                if len(data) <= _COALESCE:
                    data = head + data
                else:  # not worth copying a large body for
                    self.transport.write(head)
            if data:
                self.transport.write(data)
            if not more_body:
                if self.expected_content_length != 0:
                    raise RuntimeError("Response content shorter than Content-Length")
                self.response_complete = True
                self.message_event.set()
                if not self.keep_alive:
                    self.transport.close()
                self.on_response()
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{message['type']}' sent, after the response completed."
            )

    def _write_head(self) -> None:
        """The response head, if no body message has taken it yet."""
        head = self._pending_head
        if head is not None:
            self._pending_head = None
            if not self.disconnected and not self.transport.is_closing():
                self.transport.write(head)

    def _head(self, status_code: int, headers: list[Any]) -> bytes:
        """The status line and headers, checked and lowered as uvicorn does."""
        if headers and set(map(len, headers)) != {2}:
            raise RuntimeError("Invalid HTTP header: not a (name, value) pair.")
        flat = list(_flatten(headers))
        names: list[bytes] = flat[::2]
        values: list[bytes] = flat[1::2]
        if HEADER_RE.search(b"".join(names)):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(b"".join(values)):
            raise RuntimeError("Invalid HTTP header value.")
        content = [STATUS_LINE[status_code]]
        has_connection_close = False
        if names:
            names = b"\n".join(names).lower().split(b"\n")  # no name holds a newline
            special = _SPECIAL.intersection(names)
            if special == _LENGTH_ONLY and self.chunked_encoding is None:
                # The common case: the first length is the one uvicorn reads.
                self.expected_content_length = int(values[names.index(b"content-length")])
                self.chunked_encoding = False
            elif special:
                has_connection_close = self._special(names, values)
            content += (b"\r\n".join(map(b": ".join, zip(names, values, strict=True))), b"\r\n")
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if (
            self.chunked_encoding is None
            and self.scope["method"] != "HEAD"
            and status_code not in (204, 304)
        ):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        return b"".join(content)

    def _special(self, names: Iterable[bytes], values: Iterable[bytes]) -> bool:
        """uvicorn's reading of the framing headers, in order; True if one says close."""
        has_connection_close = False
        for name, value in zip(names, values, strict=True):
            if name not in _SPECIAL:
                continue
            if name == b"content-length":
                if self.chunked_encoding is None:
                    self.expected_content_length = int(value.decode())
                    self.chunked_encoding = False
            elif name == b"transfer-encoding":
                if value.lower() == b"chunked":
                    self.expected_content_length = 0
                    self.chunked_encoding = True
            elif b"close" in [token.lower().strip() for token in value.split(b",")]:
                self.keep_alive = False
                has_connection_close = True
        return has_connection_close
