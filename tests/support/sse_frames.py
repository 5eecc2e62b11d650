"""Payloads and SSE framings for :mod:`tests.support.fault_upstream`.

Payloads are valid OpenAI ``chat.completion.chunk`` / ``chat.completion`` objects built from
the request; framings turn one ``data`` payload into the exact bytes of one SSE event.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from typing import Any

__all__ = [
    "FRAMINGS",
    "answer_text",
    "completion",
    "frame",
    "parse_sse",
    "pieces",
    "stream_events",
    "wants_usage",
]

# framing name -> (line ending, field prefix)
_EOL_PREFIX = {
    "ok": (b"\n", b"data: "),
    "crlf": (b"\r\n", b"data: "),
    "cr": (b"\r", b"data: "),
    "nospace": (b"\n", b"data:"),
    "multiline": (b"\n", b"data: "),
    "comments": (b"\n", b"data: "),
    "split": (b"\n", b"data: "),
}
FRAMINGS = tuple(_EOL_PREFIX)
_ids = itertools.count(1)


def frame(payload: str, framing: str = "ok") -> bytes:
    """The bytes of one SSE event carrying ``payload`` as its data.

    ``multiline`` re-serialises JSON over several ``data:`` lines (a reader joins them with
    "\\n", which JSON treats as whitespace); ``comments`` adds a ``: keep-alive`` comment, a
    lone blank line, and ``event: message`` / ``id:`` / ``retry:`` fields around the data.
    """
    eol, prefix = _EOL_PREFIX[framing]
    lines = [payload]
    if framing == "multiline" and payload.startswith("{"):
        lines = json.dumps(json.loads(payload), indent=1).split("\n")
    data = b"".join(prefix + line.encode() + eol for line in lines)
    if framing == "comments":
        head = b": keep-alive" + eol + eol + eol + b"event: message" + eol
        data = head + b"id: %d" % next(_ids) + eol + b"retry: 3000" + eol + data
    return data + eol


def parse_sse(raw: bytes) -> list[str]:
    """A reference SSE decoder (the WHATWG rules): the ``data`` of every dispatched event.

    Lines end in CRLF, LF or CR; ``:`` lines are comments; one space after the colon is
    dropped; several ``data`` lines join with "\n"; other fields are ignored; an event
    whose data is empty is not dispatched, nor is an unterminated one at the end.
    """
    text = raw.decode("utf-8")
    events: list[str] = []
    data: list[str] | None = None
    for line in re.split(r"\r\n|\r|\n", text)[:-1]:  # the last item is unterminated
        if not line:
            if data is not None and data != [""]:
                events.append("\n".join(data))
            data = None
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data = [*(data or []), value[1:] if value.startswith(" ") else value]
    return events


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def answer_text(body: dict[str, Any]) -> str:
    """The last user message's text: string content, or text parts joined with "\\n"."""
    messages = body.get("messages")
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def pieces(text: str) -> list[str]:
    """Word-sized pieces keeping whitespace: ``"a b  c"`` -> ``["a ", "b  ", "c"]``."""
    return re.findall(r"\s*\S+\s*|\s+", text)


def wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _usage(body: dict[str, Any], completion_tokens: int) -> dict[str, int]:
    """prompt_tokens = words in all messages' text; completion_tokens = content chunks."""
    messages = body.get("messages")
    prompt = sum(
        len(_text_of(m.get("content")).split())
        for m in (messages if isinstance(messages, list) else [])
        if isinstance(m, dict)
    )
    total = prompt + completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": total}


def _tool_call(body: dict[str, Any]) -> tuple[str, list[str]]:
    """(function name, argument pieces): first requested tool's name, else get_weather."""
    name = "get_weather"
    tools = body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[0], dict):
        function = tools[0].get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            name = function["name"]
    args = json.dumps({"input": answer_text(body)})
    third = max(1, len(args) // 3)
    return name, [args[:third], args[third : 2 * third], args[2 * third :]]


REASONING = ["Thinking ", "it ", "over."]


def stream_events(
    body: dict[str, Any],
    *,
    tools: bool = False,
    echo: str | None = None,
    reasoning: bool = False,
) -> list[dict[str, Any]]:
    """Every chunk of a normal stream: content (or tool-call) chunks, the finish chunk, and
    the usage chunk if ``stream_options.include_usage`` - everything but ``[DONE]``.
    ``echo``: send this text as the one and only content chunk instead. ``reasoning``: first
    stream :data:`REASONING` as ``reasoning_content`` (as DeepSeek and vLLM do)."""
    cid, created, model = f"chatcmpl-fault{next(_ids)}", int(time.time()), str(body.get("model"))

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
        }

    if tools:
        name, args = _tool_call(body)
        head = {"index": 0, "id": "call_fault_1", "type": "function"}
        deltas: list[dict[str, Any]] = [
            {"tool_calls": [{**head, "function": {"name": name, "arguments": args[0]}}]}
        ]
        deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": a}}]} for a in args[1:]]
        deltas[0] = {"role": "assistant", "content": None, **deltas[0]}
    else:
        texts = [echo] if echo is not None else pieces(answer_text(body))
        deltas = [{"content": t} for t in texts or [""]]
        if reasoning:
            deltas[:0] = [{"reasoning_content": r, "content": None} for r in REASONING]
        deltas[0] = {"role": "assistant", **deltas[0]}
    events = [chunk(d) for d in deltas]
    events.append(chunk({}, "tool_calls" if tools else "stop"))
    if wants_usage(body):
        events.append({**chunk({}), "choices": [], "usage": _usage(body, len(deltas))})
    return events


def completion(
    body: dict[str, Any], *, tools: bool = False, echo: str | None = None, reasoning: bool = False
) -> dict[str, Any]:
    """The non-stream ``chat.completion`` answer to the same request."""
    text = echo if echo is not None else answer_text(body)
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if reasoning:
        message["reasoning_content"] = "".join(REASONING)
    if tools:
        name, args = _tool_call(body)
        function = {"name": name, "arguments": "".join(args)}
        message["content"] = None
        message["tool_calls"] = [{"id": "call_fault_1", "type": "function", "function": function}]
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": "tool_calls" if tools else "stop",
        "logprobs": None,
    }
    return {
        "id": f"chatcmpl-fault{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model")),
        "choices": [choice],
        "usage": _usage(body, 3 if tools else 1 if echo is not None else len(pieces(text)) or 1),
    }
