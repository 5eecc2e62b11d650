"""Gemini ``GenerateContentResponse`` objects -> the normalized stream, shape-checked once.

One reader serves a stream's events and a whole ``generateContent`` answer alike:

* ``thought: true`` text parts are reasoning; other text parts are the answer.
* A ``functionCall`` part is one whole tool call (the Gemini API does not stream arguments),
  numbered by the gateway per candidate (0, 1, 2...), its ``args`` as JSON text (``"{}"`` for
  none), its id Gemini's or ``call_<24 hex>``. Its ``thoughtSignature`` travels in
  ``ToolCallDelta.extra`` as ``extra_content.google.thought_signature``; a signature on a
  thought part is the reasoning's signature. Signatures on answer text are dropped: Gemini only
  requires them back on function calls.
* ``finishReason`` in OpenAI's words, the raw one kept as ``stop_reason``; ``STOP`` after a
  function call is ``tool_calls`` (newer models send it in a trailing chunk of its own). A
  malformed or unexpected tool call is an error, not a ``stop`` that would pass for success.
* ``usageMetadata`` is cumulative: each value replaces the last, never added to it.
* ``promptFeedback.blockReason`` without candidates: the prompt was refused, ``content_filter``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from providers.base import Chunk, Delta, ToolCallDelta, Usage
from providers.errors import UpstreamProtocolError, malformed
from providers.gemini_errors import ModelOutputError

logger = logging.getLogger("gateway.provider")

_FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "LANGUAGE",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "IMAGE_OTHER",
        "NO_IMAGE",
        "MODEL_ARMOR",
    }
)
# The model failed to produce a usable turn: "stop" would pass for a success.
_FAILED = frozenset(
    {
        "MALFORMED_FUNCTION_CALL",
        "UNEXPECTED_TOOL_CALL",
        "TOO_MANY_TOOL_CALLS",
        "MISSING_THOUGHT_SIGNATURE",
        "MALFORMED_RESPONSE",
    }
)


def new_call_id() -> str:
    """An id for a call Gemini gave none (matches gemini_request.GENERATED_ID)."""
    return "call_" + uuid.uuid4().hex[:24]


def finish_reason(raw: str, *, saw_call: bool) -> str:
    """A Gemini ``finishReason`` (not one of the failed ones) in OpenAI's words."""
    if raw == "STOP":
        return "tool_calls" if saw_call else "stop"
    if raw == "MAX_TOKENS":
        return "length"
    if raw in _FILTERED:
        return "content_filter"
    return "stop"  # OTHER and reasons newer than this code: the raw one stays in stop_reason


@dataclass(slots=True)
class _Candidate:
    calls: int = 0  # tool calls so far: the next one's gateway index
    finished: bool = False


class ResponseReader:
    """Reads one response's events; keeps what spans them (call numbering, finishes)."""

    __slots__ = ("_blocked", "_candidates", "_logger")

    def __init__(self, *, log: logging.Logger = logger) -> None:
        self._candidates: dict[int, _Candidate] = {}
        self._blocked = False
        self._logger = log

    def read(self, data: dict[str, Any]) -> list[Chunk]:
        """The chunks for one ``GenerateContentResponse``: one per run of parts of a kind
        (reasoning, text, tool calls), in order; the usage rides on the last."""
        chunks: list[Chunk] = []
        candidates = data.get("candidates")
        if candidates:
            if type(candidates) is not list:
                raise malformed("the upstream sent candidates that are not a list")
            for candidate in candidates:
                chunks.extend(Chunk(deltas=[d]) for d in self._candidate(candidate))
        else:
            feedback = data.get("promptFeedback")
            reason = feedback.get("blockReason") if type(feedback) is dict else None
            if type(reason) is str and not self._blocked:
                self._blocked = True
                blocked = Delta(choice=0, finish_reason="content_filter", stop_reason=reason)
                chunks.append(Chunk(deltas=[blocked]))
        usage = data.get("usageMetadata")
        if usage is not None:
            if chunks:
                chunks[-1].usage = _usage(usage)
            else:
                chunks.append(Chunk(deltas=[], usage=_usage(usage)))
        return chunks

    def check_finished(self) -> None:
        """At the end of the body: every candidate must have finished, or it was cut short."""
        candidates = self._candidates.values()
        if not (self._blocked or candidates) or not all(c.finished for c in candidates):
            raise UpstreamProtocolError(
                "the upstream closed the stream before it finished", code="upstream_truncated"
            )

    def _candidate(self, candidate: Any) -> list[Delta]:
        if type(candidate) is not dict:
            raise malformed("the upstream sent a candidate that is not an object")
        index = candidate.get("index", 0)
        if type(index) is not int or index < 0:
            raise malformed("the upstream sent a candidate without a valid index")
        state = self._candidates.get(index)
        if state is None:
            state = self._candidates[index] = _Candidate()
        content = candidate.get("content")
        if content is not None and type(content) is not dict:
            raise malformed("the upstream sent content that is not an object")
        parts = content.get("parts") if content else None
        deltas = _deltas(parts, index, state) if parts is not None else []
        if deltas and state.finished:
            raise malformed("the upstream sent output after its finish reason")
        raw = candidate.get("finishReason")
        if raw is None or state.finished:
            return deltas
        if type(raw) is not str:
            raise malformed("the upstream sent a finishReason that is not a string")
        if raw in _FAILED:
            raise ModelOutputError(
                f"the model ended its turn with unusable output ({raw})",
                code="upstream_" + raw.lower(),
            )
        state.finished = True
        reason = finish_reason(raw, saw_call=state.calls > 0)
        if reason == "stop" and raw != "STOP":
            self._logger.warning("Gemini finish reason %s passed on as stop", raw[:64])
        if not deltas:
            deltas.append(Delta(choice=index))
        deltas[-1].finish_reason = reason
        deltas[-1].stop_reason = raw
        return deltas


def _deltas(parts: Any, choice: int, state: _Candidate) -> list[Delta]:
    if type(parts) is not list:
        raise malformed("the upstream sent parts that are not a list")
    deltas: list[Delta] = []
    kind = ""  # the kind of the last delta: a new kind starts a new delta, keeping the order
    for part in parts:
        if type(part) is not dict:
            raise malformed("the upstream sent a part that is not an object")
        signature = part.get("thoughtSignature")
        if signature is not None and type(signature) is not str:
            raise malformed("the upstream sent a thoughtSignature that is not a string")
        call = part.get("functionCall")
        text = part.get("text")
        if call is not None:
            if kind != "tool":
                deltas.append(Delta(choice=choice, tool_calls=[]))
                kind = "tool"
            assert deltas[-1].tool_calls is not None
            deltas[-1].tool_calls.append(_tool_call(call, state.calls, signature))
            state.calls += 1
        elif text is not None:
            if type(text) is not str:
                raise malformed("the upstream sent text that is not a string")
            if part.get("thought") is True:
                if kind != "reasoning":
                    deltas.append(Delta(choice=choice, reasoning=""))
                    kind = "reasoning"
                delta = deltas[-1]
                delta.reasoning = (delta.reasoning or "") + text
                if signature is not None:
                    delta.reasoning_signature = signature
            elif text:  # the empty text of a trailing finish chunk says nothing
                if kind != "text":
                    deltas.append(Delta(choice=choice, text=""))
                    kind = "text"
                deltas[-1].text = (deltas[-1].text or "") + text
        # Other parts (executableCode, inlineData...) answer tools and modalities the gateway
        # never asks for.
    return deltas


def _tool_call(call: Any, index: int, signature: str | None) -> ToolCallDelta:
    if type(call) is not dict:
        raise malformed("the upstream sent a functionCall that is not an object")
    name = call.get("name")
    if type(name) is not str or not name:
        raise malformed("the upstream sent a functionCall without a name")
    args = call.get("args")
    if args is not None and type(args) is not dict:
        raise malformed("the upstream sent functionCall args that are not an object")
    call_id = call.get("id")
    if call_id is not None and type(call_id) is not str:
        raise malformed("the upstream sent a functionCall id that is not a string")
    extra = None
    if signature is not None:
        extra = {"extra_content": {"google": {"thought_signature": signature}}}
    return ToolCallDelta(
        index=index,
        id=call_id or new_call_id(),
        name=name,
        arguments=orjson.dumps(args).decode() if args else "{}",
        extra=extra,
    )


def _usage(value: Any) -> Usage:
    if type(value) is not dict:
        raise malformed("the upstream sent usageMetadata that is not an object")
    thoughts = _count(value.get("thoughtsTokenCount"))
    return Usage(
        # Tokens of server-side tool results are prompt tokens too.
        input_tokens=_count(value.get("promptTokenCount"))
        + _count(value.get("toolUsePromptTokenCount")),
        # candidatesTokenCount is the answer alone: thoughts are output tokens as well.
        output_tokens=_count(value.get("candidatesTokenCount")) + thoughts,
        cached_tokens=_count(value.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


def _count(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0
