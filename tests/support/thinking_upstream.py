"""An OpenAI-compatible upstream that thinks before it answers, and waits to be told to answer.

``POST /v1/chat/completions`` with ``stream: true`` streams :data:`REASONING` word by word as
``reasoning_content`` (as DeepSeek and vLLM do), then holds the stream open until the test
calls :meth:`ThinkingUpstream.answer`, then streams :data:`ANSWER` as content, a finish and a
usage chunk. So a browser test can look at the page *while* the model reasons, with no sleep
and no race: the reasoning phase lasts exactly until the test has seen what it wants.

Every request is recorded (see :class:`Recorder`); the hold is bounded (:data:`HOLD_S`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from tests.support.records import Recorder
from tests.support.servers import Receive, Scope, Send, serve_in_thread

__all__ = ["ANSWER", "REASONING", "ThinkingUpstream", "serve_thinking_upstream"]

REASONING = "The user asks a question. Let me think it through step by step before answering."
ANSWER = "Here is the **answer**:\n\n| x | x² |\n|---|---|\n| 2 | 4 |\n\n```python\nprint(4)\n```"
HOLD_S = 30.0


class ThinkingUpstream(Recorder):
    """The ASGI app. :meth:`answer` lets the streams that are thinking go on to the answer."""

    def __init__(self) -> None:
        super().__init__()
        self._go = threading.Event()

    def answer(self) -> None:
        self._go.set()

    def hold(self) -> None:
        """From now on, streams stop after their reasoning until :meth:`answer` is called."""
        self._go.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        req = await self.accept(scope, receive, send)
        if req is None:
            return
        if (req.method, req.path) == ("GET", "/v1/models"):
            models = {"object": "list", "data": [{"id": "think", "object": "model"}]}
            return await _json(send, 200, models)
        if (req.method, req.path) != ("POST", "/v1/chat/completions") or not isinstance(
            req.body, dict
        ):
            return await _json(send, 404, {"error": {"message": "not here", "type": "x"}})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for word in _pieces(REASONING):
            await _event(send, {"reasoning_content": word, "content": None})
            await asyncio.sleep(0.01)
        await asyncio.to_thread(self._go.wait, HOLD_S)
        for word in _pieces(ANSWER):
            await _event(send, {"content": word})
        await _event(send, {}, finish="stop")
        usage = {"prompt_tokens": 7, "completion_tokens": 30, "total_tokens": 37}
        await _send_data(send, json.dumps(_chunk({}, usage=usage, choices=False)))
        await _send_data(send, "[DONE]")
        await send({"type": "http.response.body", "body": b""})


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + words[-1:]


def _chunk(
    delta: dict[str, Any],
    *,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    choices: bool = True,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-think",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "think",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else [],
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


async def _event(send: Send, delta: dict[str, Any], finish: str | None = None) -> None:
    await _send_data(send, json.dumps(_chunk(delta, finish=finish)))


async def _send_data(send: Send, data: str) -> None:
    body = f"data: {data}\n\n".encode()
    await send({"type": "http.response.body", "body": body, "more_body": True})


async def _json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


@contextlib.contextmanager
def serve_thinking_upstream() -> Iterator[tuple[str, ThinkingUpstream]]:
    """Run a fresh :class:`ThinkingUpstream` in a thread; yield ``("http://…/v1", app)``."""
    upstream = ThinkingUpstream()
    with serve_in_thread(upstream) as base_url:
        try:
            yield f"{base_url}/v1", upstream
        finally:
            upstream.answer()  # release any stream still holding, so the server can stop
