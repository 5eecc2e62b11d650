"""OpenAI chat chunks and completions -> the normalized stream, with their shape checked once.

Anything an upstream sends that is not the shape the spec promises (a choice that is not an
object, content that is not a string, ...) is :func:`malformed`: a 502, never a crash later.
"""

from __future__ import annotations

from typing import Any

import orjson

from providers.base import Chunk, Delta, ToolCallDelta, Usage
from providers.errors import UpstreamProtocolError, malformed

FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
# What some OpenAI-compatible servers say instead of OpenAI's words.
_FINISH_ALIASES = {
    "eos": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}
# Delta keys read into Delta fields; any other key is kept in ``extra`` (audio, annotations...).
_KNOWN = frozenset({"role", "content", "reasoning_content", "reasoning", "refusal", "tool_calls"})


def finish_reason(raw: str) -> str:
    if raw in FINISH_REASONS:
        return raw
    return _FINISH_ALIASES.get(raw, "stop")


class ChunkReader:
    """Reads one upstream stream's chunks; keeps what spans chunks (tool calls, finishes)."""

    __slots__ = ("_calls", "_finished", "_unfinished")

    def __init__(self) -> None:
        # Per choice: upstream tool-call index -> (upstream id, the gateway's index).
        self._calls: dict[int, dict[int, tuple[str | None, int]]] = {}
        self._unfinished: set[int] = set()
        self._finished = False

    def read(self, data: dict[str, Any]) -> Chunk:
        choices = data.get("choices")
        deltas: list[Delta] = []
        if type(choices) is list and len(choices) == 1:
            # The common case, one choice gaining a piece of text, read without the general
            # path's calls: this runs once per streamed chunk.
            choice = choices[0]
            body = choice.get("delta") if type(choice) is dict else None
            if (
                type(body) is dict
                and len(body) == 1
                and type(body.get("content")) is str
                and choice.get("finish_reason") is None
                and not choice.get("logprobs")
            ):
                index = choice.get("index", 0)
                if type(index) is int and index >= 0:
                    self._unfinished.add(index)
                    deltas.append(Delta(index, body["content"]))
                    choices = None
        if choices:
            if type(choices) is not list:
                raise malformed("the upstream sent a chunk whose choices are not a list")
            for choice in choices:
                delta = _delta(choice, "delta", self._calls)
                if delta.finish_reason:
                    self._unfinished.discard(delta.choice)
                    self._finished = True
                else:
                    self._unfinished.add(delta.choice)
                deltas.append(delta)
        usage = data.get("usage")
        fingerprint = data.get("system_fingerprint")
        return Chunk(
            deltas=deltas,
            usage=_usage(usage) if usage else None,
            system_fingerprint=fingerprint if type(fingerprint) is str else None,
        )

    def check_finished(self) -> None:
        """At the end of the body: every choice must have finished, or the stream was cut."""
        if not self._finished or self._unfinished:
            raise UpstreamProtocolError(
                "the upstream closed the stream before it finished", code="upstream_truncated"
            )


def completion_to_chunks(data: dict[str, Any]) -> list[Chunk]:
    """A whole ``chat.completion`` as the chunks of the normalized stream."""
    choices = data.get("choices")
    if type(choices) is not list:
        raise malformed("the upstream answered with JSON that is not a chat completion")
    calls: dict[int, dict[int, tuple[str | None, int]]] = {}
    deltas = [_delta(choice, "message", calls) for choice in choices]
    for delta in deltas:
        delta.finish_reason = delta.finish_reason or "stop"
    fingerprint = data.get("system_fingerprint")
    chunks = [
        Chunk(deltas=deltas, system_fingerprint=fingerprint if type(fingerprint) is str else None)
    ]
    if data.get("usage"):
        chunks.append(Chunk(deltas=[], usage=_usage(data["usage"])))
    return chunks


def _delta(choice: Any, key: str, calls: dict[int, dict[int, tuple[str | None, int]]]) -> Delta:
    if type(choice) is not dict:
        raise malformed("the upstream sent a choice that is not an object")
    index = choice.get("index", 0)
    if type(index) is not int or index < 0:
        raise malformed("the upstream sent a choice without a valid index")
    body = choice.get(key)
    result = Delta(index)
    if body is not None and type(body) is not dict:
        raise malformed(f"the upstream sent a {key} that is not an object")
    if body and len(body) <= 2 and "content" in body and (len(body) == 1 or "role" in body):
        result.text = _text(body["content"])  # the common case: a piece of text
    elif body:
        result.text = _text(body.get("content"))
        reasoning = body.get("reasoning_content")
        result.reasoning = _text(reasoning if reasoning is not None else body.get("reasoning"))
        result.refusal = _text(body.get("refusal"))
        tool_calls = body.get("tool_calls")
        if tool_calls:
            result.tool_calls = _tool_calls(tool_calls, calls.setdefault(index, {}))
        if not _KNOWN.issuperset(body):
            extra = {k: v for k, v in body.items() if k not in _KNOWN and v is not None}
            result.extra = extra or None
    raw_finish = choice.get("finish_reason")
    if raw_finish is not None:
        if type(raw_finish) is not str:
            raise malformed("the upstream sent a finish_reason that is not a string")
        result.finish_reason = finish_reason(raw_finish)
        stop_reason = choice.get("stop_reason")  # vLLM: the stop string or token that matched
        result.stop_reason = stop_reason if type(stop_reason) is str else raw_finish
    logprobs = choice.get("logprobs")
    if logprobs:
        if type(logprobs) is not dict:
            raise malformed("the upstream sent logprobs that are not an object")
        result.logprobs = logprobs
    return result


def _text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    raise malformed("the upstream sent text that is not a string")


def _tool_calls(value: Any, known: dict[int, tuple[str | None, int]]) -> list[ToolCallDelta]:
    """Upstream tool-call deltas, numbered by the gateway.

    Each call gets the next gateway index when it first appears: a new upstream index, or a
    new ``id`` on an index already used (servers that number every call 0).
    """
    if type(value) is not list:
        raise malformed("the upstream sent tool_calls that are not a list")
    out: list[ToolCallDelta] = []
    for call in value:
        if type(call) is not dict:
            raise malformed("the upstream sent a tool call that is not an object")
        upstream_index = call.get("index", len(known) if call.get("id") else len(known) - 1)
        if type(upstream_index) is not int:
            raise malformed("the upstream sent a tool call without a valid index")
        call_id = call.get("id")
        if call_id is not None and type(call_id) is not str:
            raise malformed("the upstream sent a tool call id that is not a string")
        seen = known.get(upstream_index)
        new = seen is None or (call_id is not None and seen[0] is not None and call_id != seen[0])
        if new:
            index = 1 + max((k for _, k in known.values()), default=-1)
            known[upstream_index] = (call_id, index)
        else:
            assert seen is not None
            index = seen[1]
            if seen[0] is None and call_id is not None:
                known[upstream_index] = (call_id, index)
        function = call.get("function") or {}
        if type(function) is not dict:
            raise malformed("the upstream sent a tool call function that is not an object")
        name = _text(function.get("name"))
        arguments = function.get("arguments")
        if arguments is not None and type(arguments) is not str:
            # Some servers send the arguments as an object: the wire format is a JSON string.
            arguments = orjson.dumps(arguments).decode()
        kind = call.get("type")
        extra = {k: v for k, v in call.items() if k not in ("index", "id", "type", "function")}
        out.append(
            ToolCallDelta(
                index=index,
                id=call_id if new or call_id else None,
                name=name or None,
                arguments=arguments or "",
                type=kind if type(kind) is str else "function",
                extra=extra or None,
            )
        )
    return out


def _usage(value: Any) -> Usage:
    if type(value) is not dict:
        raise malformed("the upstream sent usage that is not an object")
    prompt = _count(value.get("prompt_tokens"))
    completion = _count(value.get("completion_tokens"))
    prompt_details = value.get("prompt_tokens_details")
    completion_details = value.get("completion_tokens_details")
    cached = _count(prompt_details.get("cached_tokens")) if type(prompt_details) is dict else 0
    reasoning = (
        _count(completion_details.get("reasoning_tokens"))
        if type(completion_details) is dict
        else 0
    )
    return Usage(
        input_tokens=prompt,
        output_tokens=completion,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
    )


def _count(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0
