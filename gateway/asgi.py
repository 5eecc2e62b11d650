"""Small raw-ASGI helpers shared by the hot path and the middleware."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from gateway.errors import APIError, PayloadTooLarge, anthropic_error

JSON_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
]


class ClientDisconnected(Exception):
    """The client went away (while we read its request, or waited for its answer)."""


# Where the gateway's HTTP protocol (gateway.server) puts a request's DisconnectSignal.
DISCONNECT_SCOPE_KEY = "llm_gateway.disconnect"


class DisconnectSignal:
    """Calls back when a request's connection is lost before its response completed.

    The gateway's own HTTP protocol puts one on each request's scope, so a request learns
    that its client left without a task of its own waiting on ``receive()`` (a task per
    request: its start, its wait and its cancellation cost about 4 % of a request). Under
    another ASGI server there is none, and the dispatcher keeps such a task.
    """

    __slots__ = ("_callbacks", "lost")

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []
        self.lost = False

    def add(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the connection is lost (at once if it already was)."""
        if self.lost:
            callback()
        else:
            self._callbacks.append(callback)

    def fire(self) -> None:
        if not self.lost:
            self.lost = True
            callbacks, self._callbacks = self._callbacks, []
            for callback in callbacks:
                callback()


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (``name`` in lower case)."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def read_body(scope: Scope, receive: Receive, *, limit: int) -> bytes:
    """Read the whole request body, refusing with 413 as soon as it passes ``limit``."""
    length = header(scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(
            f"request body is larger than the limit of {limit} bytes", code="body_too_large"
        )
    first = await receive()
    if first["type"] == "http.disconnect":
        raise ClientDisconnected
    body: bytes = first.get("body", b"")
    if not first.get("more_body", False):
        if len(body) > limit:
            raise PayloadTooLarge(
                f"request body is larger than the limit of {limit} bytes", code="body_too_large"
            )
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise PayloadTooLarge(
                f"request body is larger than the limit of {limit} bytes", code="body_too_large"
            )
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


async def send_json(
    send: Send,
    status: int,
    payload: Any,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *JSON_HEADERS,
                (b"content-length", str(len(body)).encode()),
                *(headers or ()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: APIError) -> None:
    """``error`` as OpenAI's error body, with its status and headers (``retry-after``)."""
    await send_json(send, error.status, error.body(), headers=_headers(error))


async def send_anthropic_error(send: Send, error: APIError) -> None:
    """``error`` as Anthropic's error body, with its status and headers (``retry-after``)."""
    status, body = anthropic_error(error)
    await send_json(send, status, body, headers=_headers(error))


def _headers(error: APIError) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
