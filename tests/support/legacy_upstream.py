"""An OpenAI-compatible upstream for ``/v1/embeddings`` and the legacy ``/v1/completions``, as
a raw ASGI app that records what it receives.

The request's ``model`` picks a behaviour, with parameters after colons:

* ``ok`` (or any unknown name) - a normal answer. Embeddings: a vector of ``dimensions``
  (default 3) numbers per input, the same for the same input, with usage. Completions: each
  prompt's text echoed back in word-sized pieces (a token array answers ``tokens:<count>``),
  ``n`` choices per prompt (index = prompt * n + choice), logprobs when asked; streamed with a
  finish chunk and, when asked, a usage chunk, then ``[DONE]``.
* ``status:CODE[:TIMES]`` - HTTP CODE with an OpenAI error body for the first TIMES requests
  with this model (default: always), a normal answer after; 429 carries ``retry-after: 0``.
* ``reversed`` - embeddings listed last index first; ``base64`` - embeddings as base64 even
  though floats were asked for; ``wrong-count`` - one embedding too few; ``no-usage``.
* ``error-frame:N`` / ``truncate:N`` - a stream with N text events, then an ``{"error"}``
  event / the end of the body (no finish, no ``[DONE]``).
* ``sse-always`` - a stream even when none was asked for.
* ``slow:SECS`` - a normal answer after SECS seconds.
"""

from __future__ import annotations

import array
import asyncio
import base64
import collections
import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

from tests.support.records import Recorder
from tests.support.servers import Receive, Scope, Send, serve_in_thread

__all__ = ["LegacyUpstream", "serve_legacy_upstream", "upstream_vector"]

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream")]
_PIECE = re.compile(r"\s+|\S+\s*")


def upstream_vector(item: Any, dimensions: int) -> list[float]:
    """The vector this upstream gives ``item`` (a text or a token-id list)."""
    digest = hashlib.sha256(json.dumps(item).encode()).digest()
    return [round((digest[i % 32] - 128) / 128, 4) for i in range(dimensions)]


def _error(status: int) -> dict[str, Any]:
    kind = "rate_limit_error" if status == 429 else "invalid_request_error"
    return {"error": {"message": f"legacy upstream: status {status}", "type": kind}}


class LegacyUpstream(Recorder):
    """The ASGI app; :attr:`requests` lists what it received (see :class:`Recorder`)."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: collections.Counter[str] = collections.Counter()

    def reset(self) -> None:
        super().reset()
        self._seen.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        req = await self.accept(scope, receive, send)
        if req is None:
            return
        body: dict[str, Any] = req.body if isinstance(req.body, dict) else {}
        behaviour, *args = str(body.get("model", "ok")).split(":")
        self._seen[body.get("model", "")] += 1
        if behaviour == "status" and (len(args) < 2 or self._seen[body["model"]] <= int(args[1])):
            status = int(args[0])
            headers = [(b"retry-after", b"0")] if status == 429 else []
            return await _send_json(send, status, _error(status), headers)
        if behaviour == "slow":
            await asyncio.sleep(float(args[0]))
        if req.path == "/v1/embeddings":
            return await _send_json(send, 200, _embeddings(body, behaviour))
        if req.path == "/v1/completions":
            return await _completions(send, body, behaviour, int(float(args[0])) if args else 0)
        await _send_json(send, 404, {"error": {"message": f"no route {req.path}"}})


def _inputs(given: Any) -> list[Any]:
    if isinstance(given, str) or (given and isinstance(given[0], int)):
        return [given]
    return list(given)


def _embeddings(body: dict[str, Any], behaviour: str) -> dict[str, Any]:
    inputs = _inputs(body["input"])
    dimensions = body.get("dimensions") or 3
    data: list[dict[str, Any]] = []
    for i, item in enumerate(inputs):
        vector: Any = upstream_vector(item, dimensions)
        if behaviour == "base64":
            vector = base64.b64encode(array.array("f", vector).tobytes()).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    if behaviour == "reversed":
        data.reverse()
    if behaviour == "wrong-count":
        data.pop()
    tokens = sum(len(x) if isinstance(x, list) else len(x.split()) for x in inputs)
    answer: dict[str, Any] = {"object": "list", "data": data, "model": body["model"]}
    if behaviour != "no-usage":
        answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return answer


def _choices(body: dict[str, Any]) -> list[tuple[int, list[str]]]:
    """(choice index, pieces of its text) for every prompt and ``n``."""
    n = body.get("n") or 1
    out = []
    for p, prompt in enumerate(_inputs(body.get("prompt") or "")):
        text = prompt if isinstance(prompt, str) else f"tokens:{len(prompt)}"
        out += [(p * n + j, _PIECE.findall(text) or [""]) for j in range(n)]
    return out


def _choice(index: int, text: str, offset: int, body: dict[str, Any]) -> dict[str, Any]:
    logprobs = None
    if body.get("logprobs") is not None:
        logprobs = {
            "tokens": [text],
            "token_logprobs": [-0.5],
            "top_logprobs": [{text: -0.5}],
            "text_offset": [offset],
        }
    return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": None}


async def _completions(send: Send, body: dict[str, Any], behaviour: str, arg: int) -> None:
    head = {
        "id": "cmpl-upstream",
        "object": "text_completion",
        "created": 1,
        "model": body["model"],
    }
    choices = _choices(body)
    completion_tokens = sum(len(pieces) for _, pieces in choices)
    usage = {"prompt_tokens": 5, "completion_tokens": completion_tokens}
    usage["total_tokens"] = 5 + completion_tokens
    if not body.get("stream") and behaviour != "sse-always":
        whole = []
        for index, pieces in choices:
            choice = _choice(index, "".join(pieces), 0, body)
            whole.append({**choice, "finish_reason": "stop"})
        return await _send_json(send, 200, {**head, "choices": whole, "usage": usage})
    events = []
    for index, pieces in choices:
        offset = 0
        for piece in pieces:
            events.append({**head, "choices": [_choice(index, piece, offset, body)]})
            offset += len(piece)
    for index, _ in choices:
        finish = {"text": "", "index": index, "logprobs": None, "finish_reason": "length"}
        events.append({**head, "choices": [finish]})
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append({**head, "choices": [], "usage": usage})
    await send({"type": "http.response.start", "status": 200, "headers": _SSE})
    for i, event in enumerate(events):
        if behaviour in ("error-frame", "truncate") and i == arg:
            if behaviour == "error-frame":
                await _write(send, {"error": {"message": "upstream exploded", "type": "server"}})
            return await send({"type": "http.response.body", "body": b""})
        await _write(send, event)
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


async def _write(send: Send, event: dict[str, Any]) -> None:
    data = b"data: " + json.dumps(event).encode() + b"\n\n"
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _send_json(
    send: Send, status: int, obj: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": _JSON + (headers or [])}
    )
    await send({"type": "http.response.body", "body": json.dumps(obj).encode()})


@contextlib.contextmanager
def serve_legacy_upstream() -> Iterator[tuple[str, LegacyUpstream]]:
    """Run a fresh :class:`LegacyUpstream` in a thread; yield ``("http://127.0.0.1:P/v1", app)``."""
    upstream = LegacyUpstream()
    with serve_in_thread(upstream) as base_url:
        yield f"{base_url}/v1", upstream
