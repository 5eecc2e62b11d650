"""The normalized stream in Anthropic's Messages grammar: SSE events, or one whole message.

The grammar (PROVIDERS.md §5.1), kept by construction: one ``message_start`` first; content
blocks at 0-based indices without gaps; thinking blocks (their signature in one
``signature_delta`` just before their stop) opened and closed before any text or tool block
(thinking after text gives Claude Code an empty reply: bug #11), so reasoning that comes after
the answer began is dropped; each tool call its own ``tool_use`` block at the next free index,
its argument pieces as ``input_json_delta`` on that index whatever order the upstream
interleaves them in (bugs #2, #5), never prefixed by ``{}`` (#3); then every open block closed,
``message_delta`` with the stop reason (``tool_use`` exactly when a tool block was sent: bug #6)
and the usage, and ``message_stop``. The finish and the usage go out only when the stream ended
well: a failure is an ``error`` event, never a made-up ``end_turn`` (#12).

A whole answer is the same events folded into one ``message`` (:meth:`MessageRenderer.message`),
so both modes say the same thing.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from gateway.errors import APIError, anthropic_error
from gateway.ids import random_hex
from gateway.surfaces.messages_ids import join_tool_id, tag_signature
from providers.anthropic_stream import STOP_REASONS
from providers.base import Chunk, Delta, ToolCallDelta, Usage
from providers.errors import malformed

__all__ = ["MessageRenderer", "anthropic_usage", "error_event", "stop_reason"]

logger = logging.getLogger("gateway")

_FROM_FINISH = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def error_event(error: APIError) -> bytes:
    """The ``error`` event that ends a stream which failed after its first byte."""
    _, body = anthropic_error(error)
    return event("error", body)


def anthropic_usage(usage: Usage | None, *, estimate: int = 0) -> dict[str, int]:
    """Anthropic's usage: its ``input_tokens`` exclude cache reads and writes (the gateway's
    include them), which are counted apart; ``estimate`` stands in for an unknown input."""
    if usage is None:
        return {
            "input_tokens": estimate,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
    fresh = usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens
    return {
        "input_tokens": max(fresh, 0),
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def stop_reason(finish: Delta, *, tools: bool) -> str:
    """Anthropic's stop reason for a stream's finish: the provider's own when it is one of
    Anthropic's words (``pause_turn``...), else mapped from OpenAI's; ``tool_use`` exactly when
    tool blocks were sent."""
    if tools:
        return "tool_use"
    raw = finish.stop_reason
    reason = (
        raw if raw in STOP_REASONS else _FROM_FINISH.get(finish.finish_reason or "", "end_turn")
    )
    return "end_turn" if reason == "tool_use" else reason


def _only_text(d: Delta) -> bool:
    """Whether ``d`` carries nothing but text (no reasoning, tool call or finish)."""
    return (
        d.finish_reason is None
        and not d.tool_calls
        and d.reasoning is None
        and not d.reasoning_signature
        and not d.redacted_reasoning
    )


class MessageRenderer:
    """Renders one answer's chunks as Messages events; keeps what spans them.

    ``signer`` is None for a provider whose signatures are Anthropic's own; else the provider's
    name, written into every thinking block's signature (see :mod:`messages_ids`).
    ``collect``: keep the events for :meth:`message` instead of encoding them.
    """

    def __init__(
        self, *, model: str, input_estimate: int, signer: str | None, collect: bool = False
    ) -> None:
        self.id = "msg_" + random_hex()
        self.model = model
        self.input_estimate = input_estimate
        self.signer = signer
        self.collect = collect
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.usage: Usage | None = None
        self.finish: Delta | None = None
        self.stop_reason: str | None = None
        self._next = 0  # the next block index
        self._open: list[int] = []  # open text and tool blocks, in index order
        self._thinking: int | None = None  # the open thinking block
        self._signature: list[str] = []  # its signature pieces
        self._text: int | None = None  # the text block to append to, while it is the last
        self._text_prefix = b""  # its text_delta event up to the text, while it is open
        self._tools: dict[int, int] = {}  # tool call index -> block index
        self._answered = False  # a text or tool block was opened
        self.dropped_reasoning = False

    # --- events -------------------------------------------------------------------------------

    def _emit(self, name: str, payload: dict[str, Any]) -> bytes:
        if self.collect:
            self.events.append((name, payload))
            return b""
        return event(name, payload)

    def start(self) -> bytes:
        """``message_start``: the input is the estimate until the upstream says (in
        ``message_delta``)."""
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": anthropic_usage(None, estimate=self.input_estimate),
        }
        return self._emit("message_start", {"type": "message_start", "message": message})

    def render(self, chunk: Chunk) -> bytes:
        """The events of ``chunk`` (for :meth:`Session.pump`); choice 0 only, the one there is."""
        if chunk.usage is not None:
            self.usage = chunk.usage
        out = b""
        for d in chunk.deltas:
            if d.choice != 0:
                continue
            if d.text and self._text_prefix and _only_text(d):  # the common case, pre-encoded
                out += self._text_prefix + orjson.dumps(d.text) + b"}}\n\n"
            else:
                out += self._delta(d)
        return out

    def end(self) -> bytes:
        """Close every block, then ``message_delta`` and ``message_stop``. A stream that ended
        without a finish is an upstream's fault, never an ``end_turn``."""
        if self.finish is None:
            raise malformed("the upstream ended the answer without a finish")
        out = self._close_thinking()
        for index in self._open:
            out += self._stop(index)
        self._open.clear()
        self.stop_reason = stop_reason(self.finish, tools=bool(self._tools))
        extra = self.finish.extra or {}
        sequence = extra.get("stop_sequence") if self.stop_reason == "stop_sequence" else None
        usage = anthropic_usage(self.usage, estimate=self.input_estimate)
        out += self._emit(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason, "stop_sequence": sequence},
                "usage": usage,
            },
        )
        return out + self._emit("message_stop", {"type": "message_stop"})

    # --- blocks -------------------------------------------------------------------------------

    def _delta(self, d: Delta) -> bytes:
        out = b""
        if d.reasoning is not None or d.reasoning_signature or d.redacted_reasoning:
            if self._answered:  # thinking after the answer began cannot be said: bug #11
                self.dropped_reasoning = True
            else:
                out += self._reasoning(d)
        text = d.text or d.refusal
        if text:
            out += self._close_thinking()
            if self._text is None:
                self._text, started = self._open_block({"type": "text", "text": ""})
                out += started
                if not self.collect:
                    self._text_prefix = (
                        b'event: content_block_delta\ndata: {"type":"content_block_delta",'
                        b'"index":%d,"delta":{"type":"text_delta","text":' % self._text
                    )
            out += self._block_delta(self._text, {"type": "text_delta", "text": text})
        if d.tool_calls:
            out += self._close_thinking()
            for call in d.tool_calls:
                out += self._tool(call)
        if d.finish_reason is not None:
            self.finish = d
        return out

    def _reasoning(self, d: Delta) -> bytes:
        out = b""
        if d.redacted_reasoning:
            out += self._close_thinking()
            index = self._new_index()
            block = {"type": "redacted_thinking", "data": d.redacted_reasoning}
            out += self._start(index, block) + self._stop(index)
        if d.reasoning is not None or d.reasoning_signature:
            if self._thinking is not None and self._signature and d.reasoning:
                out += self._close_thinking()  # signed, so complete: more is another block
            if self._thinking is None:
                self._thinking = self._new_index()
                out += self._start(
                    self._thinking, {"type": "thinking", "thinking": "", "signature": ""}
                )
            if d.reasoning:
                out += self._block_delta(
                    self._thinking, {"type": "thinking_delta", "thinking": d.reasoning}
                )
            if d.reasoning_signature:
                self._signature.append(d.reasoning_signature)
        return out

    def _close_thinking(self) -> bytes:
        """The open thinking block's signature (one piece: the SDK keeps only the last) and
        stop."""
        index = self._thinking
        if index is None:
            return b""
        self._thinking = None
        signature = "".join(self._signature)
        self._signature.clear()
        if self.signer is not None:
            signature = tag_signature(self.signer, signature)
        out = b""
        if signature:
            out = self._block_delta(index, {"type": "signature_delta", "signature": signature})
        return out + self._stop(index)

    def _tool(self, call: ToolCallDelta) -> bytes:
        out = b""
        index = self._tools.get(call.index)
        if index is None:
            if self._text is not None:  # text after the calls starts a block of its own
                out += self._stop(self._text)
                self._open.remove(self._text)
                self._text, self._text_prefix = None, b""
            signature = None
            if call.extra:
                google = call.extra.get("extra_content", {}).get("google", {})
                signature = google.get("thought_signature") if isinstance(google, dict) else None
            call_id = join_tool_id(call.id or "toolu_" + random_hex(12), signature)
            block = {"type": "tool_use", "id": call_id, "name": call.name or "", "input": {}}
            index, started = self._open_block(block)
            self._tools[call.index] = index
            out += started
        if call.arguments:
            out += self._block_delta(
                index, {"type": "input_json_delta", "partial_json": call.arguments}
            )
        return out

    def _open_block(self, block: dict[str, Any]) -> tuple[int, bytes]:
        """Start a text or tool block: (its index, its start event)."""
        index = self._new_index()
        self._answered = True
        self._open.append(index)
        return index, self._start(index, block)

    def _new_index(self) -> int:
        index = self._next
        self._next += 1
        return index

    def _start(self, index: int, block: dict[str, Any]) -> bytes:
        return self._emit(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": block},
        )

    def _block_delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return self._emit(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def _stop(self, index: int) -> bytes:
        return self._emit("content_block_stop", {"type": "content_block_stop", "index": index})

    # --- the whole message --------------------------------------------------------------------

    def message(self) -> dict[str, Any]:
        """The collected events folded into one ``message`` (after :meth:`end`)."""
        content: list[dict[str, Any]] = []
        pieces: dict[int, list[str]] = {}
        for name, payload in self.events:
            if name == "content_block_start":
                content.append(dict(payload["content_block"]))
            elif name == "content_block_delta":
                index, delta = payload["index"], payload["delta"]
                block = content[index]
                kind = delta["type"]
                if kind == "text_delta":
                    block["text"] += delta["text"]
                elif kind == "thinking_delta":
                    block["thinking"] += delta["thinking"]
                elif kind == "signature_delta":
                    block["signature"] = delta["signature"]
                elif kind == "input_json_delta":
                    pieces.setdefault(index, []).append(delta["partial_json"])
        for index, parts in pieces.items():
            try:
                value = orjson.loads("".join(parts))
            except orjson.JSONDecodeError:
                value = None
            if not isinstance(value, dict):
                raise malformed("the upstream sent tool call arguments that are not a JSON object")
            content[index]["input"] = value
        stop_sequence = None
        if self.stop_reason == "stop_sequence" and self.finish is not None and self.finish.extra:
            stop_sequence = self.finish.extra.get("stop_sequence")
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": stop_sequence,
            "usage": anthropic_usage(self.usage, estimate=self.input_estimate),
        }
