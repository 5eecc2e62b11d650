"""The normalized stream in OpenAI's chat grammar: SSE chunks, or one aggregated completion.

Reasoning is rendered as ``reasoning_content`` (what DeepSeek, vLLM and most OpenAI-compatible
reasoning servers send), with its opaque ``reasoning_signature`` and ``redacted_reasoning``
when the upstream gave them, so that a client can send them back with the assistant turn (the
anthropic provider needs them to continue a conversation with thinking and tools); tool calls
carry the gateway's own per-choice index.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.ids import random_hex
from providers.base import Chunk, Delta, ToolCallDelta, Usage

DONE = b"data: [DONE]\n\n"
# What orjson makes of a choice whose delta is only text (index, dumped text).
_TEXT_CHOICE = b'[{"index":%d,"delta":{"content":%b},"finish_reason":null,"logprobs":null}]'
# The same for choice 0 around the dumped text, the event's end included: two concatenations
# and no format for the chunk nearly every stream is made of.
_TEXT0_HEAD = b'[{"index":0,"delta":{"content":'
_TEXT0_TAIL = b'},"finish_reason":null,"logprobs":null}]}\n\n'


def completion_id() -> str:
    return "chatcmpl-" + random_hex()


def render_usage(usage: Usage) -> dict[str, Any]:
    """OpenAI's ``CompletionUsage``; the details only when there is something to detail."""
    out: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cached_tokens:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def _tool_call(call: ToolCallDelta) -> dict[str, Any]:
    out: dict[str, Any] = {"index": call.index}
    if call.id is not None:
        out["id"] = call.id
        out["type"] = call.type
    function: dict[str, str] = {"arguments": call.arguments}
    if call.name is not None:
        function["name"] = call.name
    out["function"] = function
    if call.extra:
        out.update(call.extra)
    return out


class ChunkRenderer:
    """Pre-encodes what every chunk of one completion shares, so a chunk costs one dumps.

    It also keeps what the stream said last of its usage and finish, for the observers.
    """

    __slots__ = (
        "_prefix",
        "_started",
        "_text0",
        "created",
        "finish_reason",
        "id",
        "model",
        "usage",
    )

    def __init__(self, *, model: str) -> None:
        self.id = completion_id()
        self.created = int(time.time())
        self.model = model
        self._started: set[int] = set()  # choices whose first delta (with the role) went out
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        head = orjson.dumps(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": model,
            }
        )
        self._prefix = b"data: " + head[:-1] + b',"choices":'
        self._text0 = self._prefix + _TEXT0_HEAD

    def render(self, chunk: Chunk) -> bytes:
        """The SSE event for ``chunk``'s deltas; ``b""`` when it has none (usage only)."""
        if chunk.usage is not None:
            self.usage = chunk.usage
        deltas = chunk.deltas
        if not deltas:
            return b""
        d = deltas[0]
        if (  # the common case, a piece of text of a started choice: framed here, one dumps
            len(deltas) == 1
            and d.text is not None
            and d.finish_reason is None
            and d.choice in self._started
            and d.reasoning is None
            and not d.tool_calls
            and not d.extra
            and d.refusal is None
            and not d.logprobs
            and d.reasoning_signature is None
            and d.redacted_reasoning is None
        ):
            if d.choice == 0 and not chunk.system_fingerprint:
                return self._text0 + orjson.dumps(d.text) + _TEXT0_TAIL
            body = _TEXT_CHOICE % (d.choice, orjson.dumps(d.text))
        else:
            body = orjson.dumps([self._choice(d) for d in deltas])
        if chunk.system_fingerprint:
            body += b',"system_fingerprint":' + orjson.dumps(chunk.system_fingerprint)
        return self._prefix + body + b"}\n\n"

    def render_usage(self, usage: Usage) -> bytes:
        return self._prefix + b'[],"usage":' + orjson.dumps(render_usage(usage)) + b"}\n\n"

    def _choice(self, d: Delta) -> dict[str, Any]:
        if d.finish_reason is not None:
            self.finish_reason = d.finish_reason
        delta: dict[str, Any] = {}
        if d.choice not in self._started:
            self._started.add(d.choice)
            delta["role"] = "assistant"
            if d.text is None and not d.tool_calls and d.refusal is None:
                delta["content"] = ""
        if d.text is not None:
            delta["content"] = d.text
        if d.reasoning is not None:
            delta["reasoning_content"] = d.reasoning
        if d.reasoning_signature is not None:
            delta["reasoning_signature"] = d.reasoning_signature
        if d.redacted_reasoning is not None:
            delta["redacted_reasoning"] = d.redacted_reasoning
        if d.refusal is not None:
            delta["refusal"] = d.refusal
        if d.tool_calls:
            delta["tool_calls"] = [_tool_call(c) for c in d.tool_calls]
        if d.extra:
            for key, value in d.extra.items():
                delta.setdefault(key, value)
        return {
            "index": d.choice,
            "delta": delta,
            "finish_reason": d.finish_reason,
            "logprobs": d.logprobs,
        }


def error_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class _Choice:
    __slots__ = (
        "content",
        "extra",
        "finish_reason",
        "function_call",
        "logprobs",
        "reasoning",
        "redacted_reasoning",
        "refusal",
        "signature",
        "tool_calls",
    )

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.signature: list[str] = []
        self.redacted_reasoning: list[str] = []
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.function_call: dict[str, str] | None = None
        self.finish_reason: str | None = None
        self.logprobs: dict[str, Any] | None = None
        self.extra: dict[str, Any] = {}


class Aggregator:
    """Folds the stream's deltas into whole messages, per choice."""

    __slots__ = ("_choices", "finish_reason", "system_fingerprint", "usage")

    def __init__(self) -> None:
        self._choices: dict[int, _Choice] = {}
        self.usage: Usage | None = None
        self.finish_reason: str | None = None  # the last one seen, for the observers
        self.system_fingerprint: str | None = None

    def add(self, chunk: Chunk) -> bytes:
        """Fold ``chunk`` in; ``b""``: nothing to send yet (see ``Session.pump``)."""
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.system_fingerprint:
            self.system_fingerprint = chunk.system_fingerprint
        for d in chunk.deltas:
            state = self._choices.get(d.choice)
            if state is None:
                state = self._choices[d.choice] = _Choice()
            if d.text is not None:
                state.content.append(d.text)
            if d.reasoning is not None:
                state.reasoning.append(d.reasoning)
            if d.reasoning_signature is not None:
                state.signature.append(d.reasoning_signature)
            if d.redacted_reasoning is not None:
                state.redacted_reasoning.append(d.redacted_reasoning)
            if d.refusal is not None:
                state.refusal.append(d.refusal)
            for call in d.tool_calls or ():
                _merge_tool_call(state.tool_calls, call)
            if d.extra:
                for key, value in d.extra.items():
                    if key == "function_call":
                        state.function_call = _merge_function(state.function_call, value)
                    else:
                        state.extra[key] = value  # audio, annotations...
            if d.finish_reason:
                state.finish_reason = self.finish_reason = d.finish_reason
            if d.logprobs:
                merged = state.logprobs or {"content": None, "refusal": None}
                for part in ("content", "refusal"):
                    if d.logprobs.get(part):
                        merged[part] = (merged[part] or []) + d.logprobs[part]
                state.logprobs = merged
        return b""

    def completion(self, *, renderer: ChunkRenderer) -> dict[str, Any]:
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(state.content) if state.content else None,
                "refusal": "".join(state.refusal) if state.refusal else None,
            }
            if state.reasoning:
                message["reasoning_content"] = "".join(state.reasoning)
            if state.signature:  # opaque: the pieces as they came, joined as a stream joins them
                message["reasoning_signature"] = "".join(state.signature)
            if state.redacted_reasoning:
                message["redacted_reasoning"] = "".join(state.redacted_reasoning)
            if state.tool_calls:
                message["tool_calls"] = [state.tool_calls[i] for i in sorted(state.tool_calls)]
            if state.function_call:
                message["function_call"] = state.function_call
            if message["content"] is None and not state.tool_calls and not state.function_call:
                message["content"] = ""
            for key, value in state.extra.items():
                message.setdefault(key, value)
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "finish_reason": state.finish_reason or "stop",
                    "logprobs": state.logprobs,
                }
            )
        result: dict[str, Any] = {
            "id": renderer.id,
            "object": "chat.completion",
            "created": renderer.created,
            "model": renderer.model,
            "choices": choices,
        }
        if self.system_fingerprint:
            result["system_fingerprint"] = self.system_fingerprint
        if self.usage is not None:
            result["usage"] = render_usage(self.usage)
        return result


def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: ToolCallDelta) -> None:
    call = calls.get(delta.index)
    if call is None:
        call = calls[delta.index] = {
            "id": "",
            "type": delta.type,
            "function": {"name": "", "arguments": ""},
        }
        if delta.extra:
            call.update(delta.extra)
    if delta.id:
        call["id"] = delta.id
    if delta.name:
        call["function"]["name"] += delta.name
    call["function"]["arguments"] += delta.arguments


def _merge_function(current: dict[str, str] | None, delta: Any) -> dict[str, str]:
    merged = current or {"name": "", "arguments": ""}
    if isinstance(delta, dict):
        merged["name"] += delta.get("name") or ""
        merged["arguments"] += delta.get("arguments") or ""
    return merged
