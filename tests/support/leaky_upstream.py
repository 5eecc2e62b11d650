"""An OpenAI-compatible upstream that leaks the credentials it receives, as a raw ASGI app.

It echoes the ``Authorization`` header it got - whole, bare, upper-cased and as a masked
prefix - everywhere an upstream can put text: error messages, error codes, non-OpenAI error
bodies, response headers, mid-stream error frames and redirect locations. A gateway in front
of it must redact all of that. Behaviours, chosen by the request's ``model``:

* ``status-CODE`` - HTTP CODE with an OpenAI error body full of the key (``Retry-After: 1``
  on 429)
* ``detail-CODE`` - HTTP CODE with a FastAPI-style ``{"detail": ...}`` body, ``text/plain``
* ``frame`` - a 200 SSE stream: one content chunk, then a ``data: {"error": ...}`` frame
  holding the key, then a clean end (sent whatever ``stream`` says)
* ``redirect-CODE`` - HTTP CODE (301, 302, 303, 307, 308) with ``Location`` set to
  ``redirect_to`` plus ``?key=<the key>``
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from tests.support.records import Recorder
from tests.support.servers import Receive, Scope, Send, serve_in_thread

__all__ = ["LeakyUpstream", "leaky_texts", "serve_leaky_upstream"]


def leaky_texts(authorization: str) -> list[str]:
    """Every form of the credentials the upstream echoes."""
    key = authorization.removeprefix("Bearer ").strip()
    return [authorization, key, key.upper(), key[:16] + "*" * 8 + key[-4:]]


class LeakyUpstream(Recorder):
    def __init__(self, redirect_to: str = "http://127.0.0.1:9/v1/chat/completions") -> None:
        super().__init__()
        self.redirect_to = redirect_to

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        req = await self.accept(scope, receive, send)
        if req is None:
            return
        headers = req.headers
        auth = headers.get("authorization", "(none)")
        texts = leaky_texts(auth)
        said = "; ".join(texts)
        behaviour, _, arg = (req.model or "").partition("-")
        code = int(arg) if arg.isdigit() else 500
        leak_headers = [
            (b"x-upstream-saw", auth.encode("latin-1")),
            (b"www-authenticate", f'Bearer error="invalid_token", key="{texts[1]}"'.encode()),
        ]
        if behaviour == "status":
            error = {
                "message": f"Incorrect API key provided: {said}",
                "type": "invalid_request_error",
                "param": texts[1],
                "code": texts[1],
            }
            extra = [(b"retry-after", b"1")] if code == 429 else []
            await self._send(
                send, code, b"application/json", {"error": error}, leak_headers + extra
            )
        elif behaviour == "detail":
            text = f"upstream failure, credentials were {said}".encode()
            await self._send(send, code, b"text/plain", text, leak_headers)
        elif behaviour == "frame":
            chunk = {
                "id": "chatcmpl-leaky",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "frame",
                "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
            }
            error_frame = {"error": {"message": f"stream broke for {said}", "code": texts[1]}}
            events = b"".join(
                b"data: " + json.dumps(e).encode() + b"\n\n" for e in (chunk, error_frame)
            )
            await self._send(send, 200, b"text/event-stream", events, leak_headers)
        elif behaviour == "redirect":
            location = f"{self.redirect_to}?key={texts[1]}".encode()
            text = f"Redirecting you, {said}".encode()
            await self._send(send, code, b"text/plain", text, [(b"location", location)])
        else:
            error = {"message": f"unknown model for {said}", "type": "invalid_request_error"}
            await self._send(send, 404, b"application/json", {"error": error}, leak_headers)

    @staticmethod
    async def _send(
        send: Send,
        status: int,
        content_type: bytes,
        payload: Any,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type), *headers],
            }
        )
        await send({"type": "http.response.body", "body": data})


@contextlib.contextmanager
def serve_leaky_upstream(
    redirect_to: str = "http://127.0.0.1:9/v1/chat/completions",
) -> Iterator[tuple[str, LeakyUpstream]]:
    """Run a :class:`LeakyUpstream` in a thread; yield ``("http://127.0.0.1:P/v1", app)``."""
    upstream = LeakyUpstream(redirect_to)
    with serve_in_thread(upstream) as base_url:
        yield f"{base_url}/v1", upstream
