"""A stand-in Anthropic Messages API over loopback, as a raw ASGI app, recording what it gets.

``POST /v1/messages`` picks a scenario from the request's ``model``:
``<scenario>[:<arg>...][+<framing>...]``, e.g. ``tools+split``, ``status:429:3``,
``error-event:2+crlf``. Every event of every scenario is valid for the ``anthropic`` SDK's
types (the tests check it); a ``stream: false`` request gets the scenario's events folded into
one ``message`` (:func:`fold`), as Anthropic would answer it.

* ``text`` - the last user message's text back (or ``Hello there``), in word pieces
* ``thinking`` - a thinking block (two pieces, then :data:`SIGNATURE`), then the text
* ``redacted`` - a ``redacted_thinking`` block (:data:`REDACTED`), then the text
* ``tools`` - a text block, then the three :data:`TOOLS` blocks one after another
* ``tools-interleaved`` - the same three tool blocks open at once, argument pieces round robin
* ``noarg`` - two tool calls without arguments: no ``input_json_delta``, and one ``""`` piece
* ``pings`` - ``text`` with a ``ping`` before every event
* ``usage`` - cache reads and writes; two ``message_delta`` with cumulative counts
  (the answer: :data:`USAGE_EXPECTED`)
* ``stop:<reason>`` - ``text`` ending with that ``stop_reason`` (``stop_sequence`` matches
  ``END``; ``tool_use`` ends ``noarg``)
* ``error-event:N`` - N events of ``text``, then an ``overloaded_error`` event; the body ends
  [non-stream: HTTP 529]
* ``truncate:N`` - N events of ``text`` (N < 0: all but the last -N), then a clean end of body
  [non-stream: half the JSON]
* ``status:CODE[:SECS]`` - HTTP CODE with Anthropic's error body; ``retry-after: SECS`` if given
* ``flaky:CODE:COUNT`` - the first COUNT requests for this exact model get CODE with
  ``retry-after: 0``, later ones ``text``

Framings: ``crlf`` (CRLF line ends), ``split`` (each event written in four pieces, apart),
``slow`` (0.2 s between events).
Error messages quote the key they got, so that tests can see it redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
from collections.abc import Iterator
from typing import Any

from tests.support.records import RecordedRequest, Recorder
from tests.support.servers import Receive, Scope, Send, serve_in_thread

__all__ = [
    "ERROR_TYPES",
    "REDACTED",
    "SCENARIOS",
    "SIGNATURE",
    "TOOLS",
    "USAGE_EXPECTED",
    "AnthropicUpstream",
    "answer_text",
    "fold",
    "scenario_events",
    "serve_anthropic_upstream",
]

SCENARIOS = (
    *("text", "thinking", "redacted", "tools", "tools-interleaved", "noarg", "pings", "usage"),
    *("stop", "error-event", "truncate", "status", "flaky"),
)
FRAMINGS = ("crlf", "split", "slow")
SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
REDACTED = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"
# (id, name, argument pieces, the arguments they join to)
TOOLS = (
    ("toolu_01A", "get_weather", ["", '{"city": ', '"Paris"}'], {"city": "Paris"}),
    ("toolu_01B", "get_time", ['{"tz":', ' "CET"}'], {"tz": "CET"}),
    ("toolu_01C", "search", ['{"q": "a b"', ', "n": 3}'], {"q": "a b", "n": 3}),
)
# The usage scenario's final counts, in the gateway's terms: input includes cache reads/writes.
USAGE_EXPECTED = {"input": 11 + 20 + 31, "cached": 31, "cache_write": 20, "output": 7}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",  # the docs say request_too_large, which the SDK does not know
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ids = itertools.count(1)


def answer_text(body: dict[str, Any]) -> str:
    """The last user message's text (string, or text blocks joined), or ``Hello there``."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(b.get("text", "") for b in content if b.get("type") == "text")
        if isinstance(content, str) and content.strip():
            return content
    return "Hello there"


# -- events ------------------------------------------------------------------------------


def _start(model: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": f"msg_stand_in_{next(_ids):06d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage
        or {
            "input_tokens": 12,
            "output_tokens": 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    return {"type": "message_start", "message": message}


def _block(index: int, start: dict[str, Any], deltas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"type": "content_block_start", "index": index, "content_block": start},
        *({"type": "content_block_delta", "index": index, "delta": d} for d in deltas),
        {"type": "content_block_stop", "index": index},
    ]


def _text(index: int, text: str) -> list[dict[str, Any]]:
    pieces = [p for p in text.replace(" ", " \0").split("\0") if p]
    return _block(
        index, {"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in pieces]
    )


def _tool_start(index: int, tool: int) -> dict[str, Any]:
    call_id, name, _, _ = TOOLS[tool]
    block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
    return {"type": "content_block_start", "index": index, "content_block": block}


def _args(index: int, piece: str) -> dict[str, Any]:
    delta = {"type": "input_json_delta", "partial_json": piece}
    return {"type": "content_block_delta", "index": index, "delta": delta}


def _end(reason: str, output: int, *, sequence: str | None = None, **usage: Any) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": reason, "stop_sequence": sequence},
        "usage": {"output_tokens": output, **usage},
    }


_STOP = {"type": "message_stop"}
_PING = {"type": "ping"}


def _content(scenario: str, text: str) -> tuple[list[dict[str, Any]], str]:
    """The content blocks' events of a scenario, and its stop reason."""
    if scenario == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": p} for p in ("Let me ", "think.")]
        deltas.append({"type": "signature_delta", "signature": SIGNATURE})
        start = {"type": "thinking", "thinking": "", "signature": ""}
        return [*_block(0, start, deltas), *_text(1, text)], "end_turn"
    if scenario == "redacted":
        start = {"type": "redacted_thinking", "data": REDACTED}
        return [*_block(0, start, []), *_text(1, text)], "end_turn"
    if scenario == "tools":
        events = _text(0, "Let me check.")
        for k, (_, _, pieces, _) in enumerate(TOOLS):
            events += [_tool_start(k + 1, k), *(_args(k + 1, p) for p in pieces)]
            events.append({"type": "content_block_stop", "index": k + 1})
        return events, "tool_use"
    if scenario == "tools-interleaved":
        events = [_tool_start(k, k) for k in range(len(TOOLS))]
        rounds = itertools.zip_longest(*(tool[2] for tool in TOOLS))
        events += [_args(k, p) for row in rounds for k, p in enumerate(row) if p is not None]
        events += [{"type": "content_block_stop", "index": k} for k in (2, 0, 1)]
        return events, "tool_use"
    if scenario == "noarg":
        events = [_tool_start(0, 1), {"type": "content_block_stop", "index": 0}]
        events += [_tool_start(1, 0), _args(1, ""), {"type": "content_block_stop", "index": 1}]
        return events, "tool_use"
    return _text(0, text), "end_turn"


def scenario_events(model: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The whole event stream of a successful scenario (``error-event`` and ``truncate``: the
    ``text`` stream they cut; ``flaky``: the ``text`` it ends with)."""
    scenario, args, _ = parse_model(model)
    text = answer_text(body)
    content, reason = _content(scenario, text)
    if scenario == "usage":
        usage = {
            "input_tokens": 10,
            "output_tokens": 1,
            "cache_creation_input_tokens": 20,
            "cache_read_input_tokens": 30,
        }
        tail = [
            {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 3}},
            _end("end_turn", 7, input_tokens=11, cache_read_input_tokens=31),
        ]
        return [_start(model, usage), *content, *tail, _STOP]
    if scenario == "stop":
        stop = args[0] if args else "end_turn"
        if stop == "tool_use":
            content, _ = _content("noarg", text)
        sequence = "END" if stop == "stop_sequence" else None
        return [_start(model), *content, _end(stop, 5, sequence=sequence), _STOP]
    end = _end(reason, 9)
    if scenario == "thinking":
        end["usage"]["output_tokens_details"] = {"thinking_tokens": 4}
    events = [_start(model), *content, end, _STOP]
    if scenario == "pings":
        events = [e for event in events for e in (_PING, event)]
    return events


def fold(events: list[dict[str, Any]]) -> dict[str, Any]:
    """A stream's events as the one ``message`` a ``stream: false`` request gets."""
    message: dict[str, Any] = {}
    pieces: dict[int, str] = {}
    for event in events:
        kind, index = event["type"], event.get("index", -1)
        if kind == "message_start":
            message = json.loads(json.dumps(event["message"]))
        elif kind == "content_block_start":
            message["content"].append(dict(event["content_block"]))
        elif kind == "content_block_delta":
            block, delta = message["content"][index], event["delta"]
            if delta["type"] == "input_json_delta":
                pieces[index] = pieces.get(index, "") + delta["partial_json"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            else:
                field = "text" if delta["type"] == "text_delta" else "thinking"
                block[field] += delta[field]
        elif kind == "content_block_stop" and pieces.get(index):
            message["content"][index]["input"] = json.loads(pieces[index])
        elif kind == "message_delta":
            message.update((k, v) for k, v in event["delta"].items())
            message["usage"].update((k, v) for k, v in event["usage"].items() if v is not None)
    return message


def parse_model(model: str) -> tuple[str, list[str], set[str]]:
    """``scenario:arg:arg+framing`` -> (scenario, args, framings)."""
    name, *framings = model.split("+")
    scenario, *args = name.split(":")
    return scenario, args, set(framings)


def frame(event: dict[str, Any], framings: set[str]) -> bytes:
    """One SSE event as Anthropic writes it: the ``event:`` name equals the data's type."""
    data = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
    return data.replace(b"\n", b"\r\n") if "crlf" in framings else data


# -- the server --------------------------------------------------------------------------

_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8")]
_JSON_HEADERS = [(b"content-type", b"application/json")]


class AnthropicUpstream(Recorder):
    """The ASGI app; what it saw is readable from any thread (see :class:`Recorder`)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._served: dict[str, int] = {}  # flaky scenarios: requests seen per model

    def calls(self, model: str) -> list[RecordedRequest]:
        """The ``/v1/messages`` requests that asked for exactly this ``model``."""
        return [r for r in self.requests if r.path == "/v1/messages" and r.model == model]

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._served.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        req = await self.accept(scope, receive, send)
        if req is None:
            return
        if (req.method, req.path) != ("POST", "/v1/messages") or req.model is None:
            return await _json(send, 404, _error(404, f"no route {req.method} {req.path}"))
        scenario, args, framings = parse_model(req.model)
        if scenario not in SCENARIOS:
            return await _json(send, 404, _error(404, f"model: {req.model!r} not found"))
        # The gateway sends x-api-key; the anthropic SDK 2.15 sends its api_key as a Bearer.
        key = req.headers.get("x-api-key") or req.headers.get("authorization", "")[7:]
        code, retry = _failure(scenario, args, self._count(req.model))
        if code:
            message = f"stand-in status {code} for key {key}"
            headers = [] if retry is None else [(b"retry-after", retry.encode())]
            return await _json(send, code, _error(code, message), headers)
        events = scenario_events(req.model, req.body)
        stream = bool(req.body.get("stream"))
        if not stream:
            return await self._whole(send, scenario, events)
        if scenario in ("error-event", "truncate"):
            events = events[: int(args[0]) if args else 1]
        if scenario == "error-event":
            overloaded = {"type": "overloaded_error", "message": f"Overloaded (key {key})"}
            events.append({"type": "error", "error": overloaded})
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        for event in events:
            data = frame(event, framings)
            cuts = [0, 1, len(data) // 2, len(data) - 1, len(data)] if "split" in framings else []
            for a, b in itertools.pairwise(cuts or [0, len(data)]):
                await send({"type": "http.response.body", "body": data[a:b], "more_body": True})
                if cuts:
                    await asyncio.sleep(0.005)  # separate TCP segments, separate reads
            if "slow" in framings:
                await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _count(self, model: str) -> int:
        with self._lock:
            seen = self._served.get(model, 0)
            self._served[model] = seen + 1
            return seen

    async def _whole(self, send: Send, scenario: str, events: list[dict[str, Any]]) -> None:
        if scenario == "error-event":
            return await _json(send, 529, _error(529, "Overloaded"))
        data = json.dumps(fold(events)).encode()
        if scenario == "truncate":
            data = data[: len(data) // 2]
        await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
        await send({"type": "http.response.body", "body": data, "more_body": False})


def _failure(scenario: str, args: list[str], seen: int) -> tuple[int, str | None]:
    """(status, retry-after) for the failing scenarios; (0, None) to answer normally."""
    if scenario == "status":
        return int(args[0]), args[1] if len(args) > 1 else None
    if scenario == "flaky" and seen < int(args[1]):
        return int(args[0]), "0"
    return 0, None


def _error(status: int, message: str) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error")
    error = {"type": kind, "message": message}
    return {"type": "error", "error": error, "request_id": f"req_stand_in_{next(_ids):06d}"}


async def _json(
    send: Send, status: int, obj: object, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": _JSON_HEADERS + (headers or []),
    }
    await send(start)
    await send({"type": "http.response.body", "body": json.dumps(obj).encode(), "more_body": False})


@contextlib.contextmanager
def serve_anthropic_upstream(**uvicorn_kwargs: Any) -> Iterator[tuple[str, AnthropicUpstream]]:
    """Run a fresh :class:`AnthropicUpstream` in a thread; yield ``("http://127.0.0.1:P", app)``."""
    upstream = AnthropicUpstream()
    with serve_in_thread(upstream, **uvicorn_kwargs) as base_url:
        yield base_url, upstream
