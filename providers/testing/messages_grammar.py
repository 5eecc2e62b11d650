"""The grammar of an Anthropic Messages event stream, checked over a whole stream.

For a gateway's ``/v1/messages`` answers, or a plugin that speaks Messages:
:func:`parse_messages_sse` reads an SSE body into its events, :func:`check_messages_stream` raises
``AssertionError`` naming the event and the rule a stream breaks, and otherwise returns what it
said (:class:`MessagesSummary`). The rules are the ones clients rely on (PROVIDERS.md §5.1, §6):

* exactly one ``message_start``, first (bug #22; ``ping`` may come anywhere);
* content blocks at indices 0, 1, 2... in the order they start; deltas and stops only for open
  blocks, each delta of its block's kind; a thinking block's ``signature_delta`` after its text;
* thinking and redacted thinking only before any text or tool block, and closed before one
  starts (bug #11: thinking after text is an empty reply in Claude Code);
* every tool block's joined ``input_json_delta`` is a JSON object, or nothing (bugs #3, #4);
* every block stopped before ``message_delta``, whose last ``stop_reason`` is one of
  Anthropic's, ``tool_use`` exactly when a tool block was sent (bug #6), with integer usage;
* ``message_stop`` last, exactly once; or else an ``error`` event last, and then no
  ``message_stop`` and no stop reason (bug #12: a failure is never a made-up ``end_turn``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from providers.anthropic_stream import STOP_REASONS
from providers.testing.typed_sse import expect, parse_typed_sse

__all__ = [
    "STOP_REASONS",
    "MessagesSummary",
    "ThinkingBlock",
    "ToolUse",
    "check_messages_stream",
    "parse_messages_sse",
]

_DELTAS = {
    "text": {"text_delta", "citations_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
    "tool_use": {"input_json_delta"},
    "redacted_thinking": set(),
}
_REASONING = frozenset({"thinking", "redacted_thinking"})


@dataclass(slots=True)
class ThinkingBlock:
    thinking: str = ""
    signature: str = ""
    redacted: str | None = None  # the data of a redacted_thinking block


@dataclass(slots=True)
class ToolUse:
    id: str
    name: str
    input: dict[str, Any]
    index: int  # its block index


@dataclass(slots=True)
class MessagesSummary:
    """What a stream that passed :func:`check_messages_stream` said."""

    message: dict[str, Any]  # message_start's message
    text: str = ""
    thinking: list[ThinkingBlock] = field(default_factory=list)
    tools: list[ToolUse] = field(default_factory=list)
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)  # message_start's, updated by deltas
    error: dict[str, Any] | None = None  # the error event's error, when it ended that way
    blocks: list[str] = field(default_factory=list)  # block types, by index


def parse_messages_sse(body: str | bytes) -> list[dict[str, Any]]:
    """The events of a Messages SSE body, in order (see :func:`parse_typed_sse`)."""
    return parse_typed_sse(body)


class _Checker:
    def __init__(self) -> None:
        self.summary: MessagesSummary | None = None
        self.open: dict[int, str] = {}
        self.signed: set[int] = set()
        self.json: dict[int, list[str]] = {}
        self.answered = False  # a text or tool block started
        self.deltas = 0  # message_delta events
        self.stopped = False
        self.failed = False

    def event(self, n: int, data: dict[str, Any]) -> None:
        kind = data.get("type")
        where = f"event {n} ({kind})"
        expect(not self.stopped, f"{where}: an event after message_stop")
        expect(not self.failed, f"{where}: an event after the error event")
        if kind == "ping":
            return
        if kind == "error":
            error = data.get("error")
            expect(isinstance(error, dict), f"{where}: no error object")
            assert isinstance(error, dict)
            expect(isinstance(error.get("type"), str), f"{where}: the error has no type")
            expect(isinstance(error.get("message"), str), f"{where}: the error has no message")
            self.failed = True
            if self.summary is not None:
                self.summary.error = error
            else:
                self.summary = MessagesSummary(message={}, error=error)
            return
        if kind == "message_start":
            expect(self.summary is None, f"{where}: a second message_start")
            message = data.get("message")
            expect(isinstance(message, dict), f"{where}: no message")
            assert isinstance(message, dict)
            expect(message.get("content") == [], f"{where}: the message's content is not []")
            expect(message.get("role") == "assistant", f"{where}: role is not assistant")
            expect(isinstance(message.get("id"), str), f"{where}: the message has no id")
            usage = message.get("usage")
            expect(isinstance(usage, dict), f"{where}: the message has no usage")
            self.summary = MessagesSummary(message=message, usage=dict(usage or {}))
            return
        expect(self.summary is not None, f"{where}: before message_start")
        summary = self.summary
        assert summary is not None
        if kind == "content_block_start":
            self.start(where, data, summary)
        elif kind == "content_block_delta":
            self.delta(where, data, summary)
        elif kind == "content_block_stop":
            self.stop(where, data, summary)
        elif kind == "message_delta":
            expect(not self.open, f"{where}: blocks {sorted(self.open)} are still open")
            delta = data.get("delta")
            expect(isinstance(delta, dict), f"{where}: no delta")
            assert isinstance(delta, dict)
            reason = delta.get("stop_reason")
            expect(
                reason is None or reason in STOP_REASONS,
                f"{where}: stop_reason {reason!r} is not Anthropic's",
            )
            if reason is not None:
                summary.stop_reason = reason
                summary.stop_sequence = delta.get("stop_sequence")
            usage = data.get("usage")
            expect(isinstance(usage, dict), f"{where}: no usage")
            assert isinstance(usage, dict)
            expect(
                type(usage.get("output_tokens")) is int,
                f"{where}: usage.output_tokens is not an int",
            )
            for key, value in usage.items():
                if value is not None:
                    summary.usage[key] = value
            self.deltas += 1
        elif kind == "message_stop":
            expect(self.deltas > 0, f"{where}: message_stop without message_delta")
            self.stopped = True
        # other types: Anthropic's versioning policy says to ignore them

    def start(self, where: str, data: dict[str, Any], summary: MessagesSummary) -> None:
        index = data.get("index")
        expect(
            index == len(summary.blocks),
            f"{where}: index {index!r}, expected {len(summary.blocks)} "
            "(0-based, contiguous, in order)",
        )
        assert isinstance(index, int)
        block = data.get("content_block")
        expect(isinstance(block, dict), f"{where}: no content_block")
        assert isinstance(block, dict)
        kind = block.get("type")
        expect(isinstance(kind, str), f"{where}: the block has no type")
        assert isinstance(kind, str)
        if kind in _REASONING:
            expect(not self.answered, f"{where}: a {kind} block after a text or tool block")
            expect(not self.open, f"{where}: a {kind} block while {sorted(self.open)} are open")
            if kind == "thinking":
                summary.thinking.append(
                    ThinkingBlock(block.get("thinking", ""), block.get("signature", ""))
                )
            else:
                data_ = block.get("data")
                expect(isinstance(data_, str), f"{where}: redacted_thinking without data")
                summary.thinking.append(ThinkingBlock(redacted=str(data_)))
        else:
            reasoning = [i for i, k in self.open.items() if k in _REASONING]
            expect(not reasoning, f"{where}: starts while thinking block {reasoning} is open")
            self.answered = True
            if kind == "text":
                summary.text += block.get("text", "")
            elif kind == "tool_use":
                for name in ("id", "name"):
                    value = block.get(name)
                    expect(
                        isinstance(value, str) and bool(value), f"{where}: tool_use without {name}"
                    )
                expect(block.get("input") == {}, f"{where}: tool_use input is not {{}}")
                summary.tools.append(ToolUse(block["id"], block["name"], {}, index))
                self.json[index] = []
        summary.blocks.append(kind)
        self.open[index] = kind

    def delta(self, where: str, data: dict[str, Any], summary: MessagesSummary) -> None:
        index = data.get("index")
        expect(index in self.open, f"{where}: index {index!r} is not an open block")
        assert isinstance(index, int)
        kind = self.open[index]
        delta = data.get("delta")
        expect(isinstance(delta, dict), f"{where}: no delta")
        assert isinstance(delta, dict)
        dkind = delta.get("type")
        known = _DELTAS.get(kind)
        expect(known is None or dkind in known, f"{where}: a {dkind!r} in a {kind!r} block {index}")
        if dkind == "text_delta":
            expect(isinstance(delta.get("text"), str), f"{where}: text is not a string")
            summary.text += delta["text"]
        elif dkind == "thinking_delta":
            expect(index not in self.signed, f"{where}: thinking after the block's signature")
            expect(isinstance(delta.get("thinking"), str), f"{where}: thinking is not a str")
            summary.thinking[-1].thinking += delta["thinking"]
        elif dkind == "signature_delta":
            expect(isinstance(delta.get("signature"), str), f"{where}: signature is not a str")
            self.signed.add(index)
            summary.thinking[-1].signature = delta["signature"]
        elif dkind == "input_json_delta":
            piece = delta.get("partial_json")
            expect(isinstance(piece, str), f"{where}: partial_json is not a string")
            self.json[index].append(str(piece))

    def stop(self, where: str, data: dict[str, Any], summary: MessagesSummary) -> None:
        index = data.get("index")
        expect(index in self.open, f"{where}: index {index!r} is not an open block")
        assert isinstance(index, int)
        if self.open.pop(index) == "tool_use":
            joined = "".join(self.json[index])
            try:
                value = json.loads(joined) if joined else {}
            except ValueError:
                raise AssertionError(
                    f"{where}: tool block {index}'s arguments are not JSON: {joined[:200]!r}"
                ) from None
            expect(isinstance(value, dict), f"{where}: tool block {index}'s input is not an object")
            tool = next(t for t in summary.tools if t.index == index)
            tool.input = value

    def end(self) -> MessagesSummary:
        expect(self.summary is not None, "the stream has no message_start")
        summary = self.summary
        assert summary is not None
        if self.failed:
            expect(
                summary.stop_reason is None,
                f"the stream failed after it said stop_reason {summary.stop_reason!r}",
            )
            return summary
        expect(self.stopped, "the stream ended without message_stop or an error event")
        expect(summary.stop_reason is not None, "no message_delta gave a stop_reason")
        if summary.tools:
            expect(
                summary.stop_reason == "tool_use",
                f"stop_reason {summary.stop_reason!r} after tool blocks (expected 'tool_use')",
            )
        else:
            expect(summary.stop_reason != "tool_use", "stop_reason 'tool_use' without a tool")
        return summary


def check_messages_stream(events: Sequence[dict[str, Any]]) -> MessagesSummary:
    """Check that ``events`` (the data of each event, as :func:`parse_messages_sse` reads
    them) form one well-made Messages stream; return what it said."""
    checker = _Checker()
    for n, data in enumerate(events):
        expect(isinstance(data, dict), f"event {n} is a {type(data).__name__}, not a dict")
        checker.event(n, data)
    return checker.end()
