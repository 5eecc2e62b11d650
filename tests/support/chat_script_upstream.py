"""An OpenAI-compatible upstream whose answers are scripts of chunk deltas, as a raw ASGI app.

For the surfaces that re-render the normalized stream (``/v1/messages``): the ``model`` of
``POST /v1/chat/completions`` picks a script from :data:`SCRIPTS`, streamed one delta per
chunk (``stream: true``) or folded into one ``chat.completion`` (``stream: false``). Every
request is recorded (:class:`Recorder`), so tests can assert what the gateway sent.

* ``tools-interleaved`` - three tool calls whose argument pieces come round robin
  (:data:`INTERLEAVED`), finish ``tool_calls``
* ``text-then-tools`` - a sentence, then two calls one after another, finish ``stop`` (a peer
  bug: the finish must still say tool use)
* ``noarg`` - one call that never gets an argument piece
* ``reasoning`` - ``reasoning_content`` pieces, then the answer
* ``reasoning-late`` - an answer, then reasoning, then more answer
* ``cached`` - text, with usage of 100 prompt tokens of which 60 cached
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from tests.support.records import Recorder
from tests.support.servers import Receive, Scope, Send, serve_in_thread

__all__ = ["INTERLEAVED", "SCRIPTS", "ScriptUpstream", "serve_script_upstream"]

# (id, name, pieces): joined, each call's pieces are its JSON arguments.
INTERLEAVED = (
    ("call_a", "get_weather", ['{"city"', ': "Paris"', "}"]),
    ("call_b", "get_time", ['{"tz": ', '"CET"', "}"]),
    ("call_c", "search", ['{"q": "x y",', ' "n": 2', "}"]),
)


def _call(k: int, call_id: str | None, name: str | None, arguments: str) -> dict[str, Any]:
    out: dict[str, Any] = {"index": k, "function": {"arguments": arguments}}
    if call_id is not None:
        out["id"], out["type"] = call_id, "function"
        out["function"]["name"] = name
    return out


def _interleaved() -> list[dict[str, Any]]:
    deltas = [{"tool_calls": [_call(k, i, n, "")]} for k, (i, n, _) in enumerate(INTERLEAVED)]
    for round_ in range(3):
        for k, (_, _, pieces) in enumerate(INTERLEAVED):
            deltas.append({"tool_calls": [_call(k, None, None, pieces[round_])]})
    return deltas


SCRIPTS: dict[str, tuple[list[dict[str, Any]], str]] = {
    "tools-interleaved": (_interleaved(), "tool_calls"),
    "text-then-tools": (
        [
            {"content": "Let me "},
            {"content": "look."},
            {"tool_calls": [_call(0, "call_1", "get_weather", '{"city": "Oslo"}')]},
            {"tool_calls": [_call(1, "call_2", "get_time", "")]},
            {"tool_calls": [_call(1, None, None, '{"tz": "UTC"}')]},
        ],
        "stop",
    ),
    "noarg": ([{"tool_calls": [_call(0, "call_0", "ping", "")]}], "tool_calls"),
    "reasoning": (
        [
            {"reasoning_content": "Think "},
            {"reasoning_content": "hard."},
            {"content": "Answer."},
        ],
        "stop",
    ),
    "reasoning-late": (
        [{"content": "First."}, {"reasoning_content": "Too late."}, {"content": " Second."}],
        "stop",
    ),
    "cached": ([{"content": "Cached answer."}], "stop"),
}
USAGE = {
    "prompt_tokens": 100,
    "completion_tokens": 7,
    "total_tokens": 107,
    "prompt_tokens_details": {"cached_tokens": 60},
}


def _fold(deltas: list[dict[str, Any]], finish: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None}
    calls: dict[int, dict[str, Any]] = {}
    for delta in deltas:
        for key in ("content", "reasoning_content"):
            if key in delta:
                message[key] = (message.get(key) or "") + delta[key]
        for call in delta.get("tool_calls", ()):
            entry = calls.setdefault(
                call["index"],
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            entry["id"] = call.get("id") or entry["id"]
            entry["function"]["name"] += call["function"].get("name") or ""
            entry["function"]["arguments"] += call["function"]["arguments"]
    if calls:
        message["tool_calls"] = [calls[k] for k in sorted(calls)]
    return {
        "id": "chatcmpl-script",
        "object": "chat.completion",
        "created": 0,
        "model": "script",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": USAGE,
    }


class ScriptUpstream(Recorder):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = await self.accept(scope, receive, send)
        if request is None:
            return
        body = request.body if isinstance(request.body, dict) else {}
        script = SCRIPTS.get(str(body.get("model")))
        if script is None:
            await _send(send, 404, b'{"error": {"message": "no such script", "type": "x"}}')
            return
        deltas, finish = script
        if not body.get("stream"):
            await _send(send, 200, json.dumps(_fold(deltas, finish)).encode())
            return
        head = {"id": "chatcmpl-script", "object": "chat.completion.chunk", "created": 0}
        frames = []
        for n, delta in enumerate(deltas):
            if n == 0:
                delta = {"role": "assistant", **delta}
            choice = {"index": 0, "delta": delta, "finish_reason": None}
            frames.append({**head, "model": "script", "choices": [choice]})
        last = {"index": 0, "delta": {}, "finish_reason": finish}
        frames.append({**head, "model": "script", "choices": [last]})
        frames.append({**head, "model": "script", "choices": [], "usage": USAGE})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for frame in frames:
            data = b"data: " + json.dumps(frame).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


async def _send(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def serve_script_upstream() -> Iterator[tuple[str, ScriptUpstream]]:
    app = ScriptUpstream()
    with serve_in_thread(app) as url:
        yield url, app
