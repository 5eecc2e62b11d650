"""Small raw-ASGI helpers shared by the hot path and the middleware."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from gateway.errors import APIError, PayloadTooLarge

JSON_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
]


class ClientDisconnected(Exception):
    """The client went away (while we read its request, or waited for its answer)."""


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
    extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
    await send_json(send, error.status, error.body(), headers=extra)
