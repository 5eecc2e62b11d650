"""Anthropic Messages events and messages -> the normalized stream (PROVIDERS.md §3.3-3.5).

Tool calls get the gateway's own index, 0, 1, 2... in the order their blocks start (never
Anthropic's block index: litellm#5231); their arguments are the ``input_json_delta`` pieces as
they come, with no ``{}`` from the start event's ``input`` in front (ai-gateway#1465), and a
call that got no pieces gets ``"{}"`` at its block's stop (litellm#5063). The finish and the
usage go out at ``message_stop`` only: a stream cut after ``message_delta`` is an error, never a
finish (litellm#20347); it is ``tool_calls`` exactly when tool calls were made (unless the
answer was cut), with Anthropic's own ``stop_reason`` kept beside it. Usage is cumulative: the
last value of each count wins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson

from providers.base import Chunk, Delta, ToolCallDelta, Usage
from providers.errors import UpstreamStreamError, malformed

__all__ = [
    "FINISH_REASONS",
    "STOP_REASONS",
    "EventReader",
    "finish_reason",
    "malformed",
    "message_to_chunks",
    "stream_error",
    "usage",
]

logger = logging.getLogger("gateway.provider")

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
    "pause_turn": "stop",  # only with server tools; the raw reason tells the client to resume
}
STOP_REASONS = frozenset(FINISH_REASONS)  # every stop reason Anthropic's Messages API has
# Errors that say nothing about the request: retried if nothing reached the client yet.
_TRANSIENT = frozenset({"overloaded_error", "api_error", "rate_limit_error"})


def finish_reason(stop_reason: str | None) -> str:
    """OpenAI's finish_reason for Anthropic's ``stop_reason`` (§3.4); unknown ones: stop."""
    if stop_reason is None:
        return "stop"
    mapped = FINISH_REASONS.get(stop_reason)
    if mapped is None:
        logger.warning("unknown Anthropic stop_reason %r, reported as stop", stop_reason[:100])
        return "stop"
    return mapped


def usage(raw: dict[str, Any]) -> Usage:
    """Anthropic's usage; its input excludes cache reads and writes, OpenAI's includes them."""
    fresh = _count(raw.get("input_tokens"))
    written = _count(raw.get("cache_creation_input_tokens"))
    read = _count(raw.get("cache_read_input_tokens"))
    details = raw.get("output_tokens_details")
    return Usage(
        input_tokens=fresh + written + read,
        output_tokens=_count(raw.get("output_tokens")),
        cached_tokens=read,
        cache_write_tokens=written,
        reasoning_tokens=_count(details.get("thinking_tokens")) if type(details) is dict else 0,
    )


def _count(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0


def _finish(stop_reason: Any, stop_sequence: Any, *, tools: bool) -> Delta:
    if stop_reason is not None and type(stop_reason) is not str:
        raise malformed("the upstream sent a stop_reason that is not a string")
    finish = finish_reason(stop_reason)
    # Clients act on tool_calls: it comes exactly when calls were made (bifrost#3638), unless
    # the answer was cut (length, content_filter). The raw stop_reason stays as it was.
    if tools and finish == "stop":
        finish = "tool_calls"
    elif not tools and finish == "tool_calls":
        finish = "stop"
    delta = Delta(finish_reason=finish, stop_reason=stop_reason)
    if type(stop_sequence) is str:
        delta.extra = {"stop_sequence": stop_sequence}  # which stop sequence matched
    return delta


def _str(value: Any, what: str) -> str:
    if type(value) is not str:
        raise malformed(f"the upstream sent {what} that is not a string")
    return value


class _Block:
    __slots__ = ("args", "input", "kind", "tool")

    def __init__(self, kind: str, tool: int = -1, input: Any = None) -> None:
        self.kind = kind  # text, thinking, tool, or other (server tools: never tool_calls)
        self.tool = tool  # the gateway's tool-call index
        self.input = input  # a tool's start ``input``: used only if no pieces follow
        self.args = False  # whether argument pieces came


class EventReader:
    """Reads one stream's events (JSON objects); keeps what spans them.

    :meth:`read` returns the chunk an event makes, or None (``message_start``, ``ping``,
    block starts of text, unknown events: Anthropic's versioning policy says to ignore them).
    ``produced`` tells whether any chunk came out; ``finished`` that ``message_stop`` came.
    """

    __slots__ = (
        "_blocks",
        "_redact",
        "_seen",
        "_started",
        "_stop",
        "_tools",
        "_usage",
        "finished",
        "produced",
    )

    def __init__(self, *, redact: Callable[[str], str] = str) -> None:
        self._redact = redact
        self._started = False
        self._blocks: dict[int, _Block] = {}  # open blocks by Anthropic's index
        self._seen: set[int] = set()
        self._tools = 0
        self._usage: dict[str, Any] = {}
        self._stop: tuple[Any, Any] = (None, None)
        self.produced = False
        self.finished = False

    def read(self, event: dict[str, Any]) -> Chunk | None:
        kind = event.get("type")
        if kind == "ping":
            return None
        if kind == "error":
            raise stream_error(event.get("error"), redact=self._redact, produced=self.produced)
        if kind == "message_start":
            message = event.get("message")
            if self._started or type(message) is not dict:
                raise malformed("the upstream sent a second or malformed message_start")
            self._started = True
            self._merge_usage(message.get("usage"))
            return None
        if kind not in ("content_block_start", "content_block_delta", "content_block_stop"):
            if kind == "message_delta":
                self._message_delta(event)
            elif kind == "message_stop":
                return self._message_stop()
            return None
        if not self._started:
            raise malformed(f"the upstream sent {kind} before message_start")
        index = event.get("index")
        if type(index) is not int:
            raise malformed(f"the upstream sent {kind} without an index")
        if kind == "content_block_start":
            return self._start(index, event.get("content_block"))
        block = self._blocks.get(index)
        if block is None:
            raise malformed(f"the upstream sent {kind} for a block that is not open")
        if kind == "content_block_delta":
            return self._delta(block, event.get("delta"))
        del self._blocks[index]
        if block.kind == "tool" and not block.args:
            start = block.input
            arguments = orjson.dumps(start).decode() if start and type(start) is dict else "{}"
            return self._chunk(Delta(tool_calls=[ToolCallDelta(block.tool, arguments=arguments)]))
        return None

    def _chunk(self, delta: Delta) -> Chunk:
        self.produced = True
        return Chunk(deltas=[delta])

    def _start(self, index: int, block: Any) -> Chunk | None:
        if index in self._seen or type(block) is not dict:
            raise malformed("the upstream sent a repeated or malformed content_block_start")
        self._seen.add(index)
        kind = block.get("type")
        if kind == "text":
            self._blocks[index] = _Block("text")
            text = _str(block.get("text", ""), "text")
            return self._chunk(Delta(text=text)) if text else None
        if kind == "thinking":
            self._blocks[index] = _Block("thinking")
            thinking = _str(block.get("thinking", ""), "thinking")
            signature = _str(block.get("signature", ""), "a signature")
            if thinking or signature:
                return self._chunk(
                    Delta(reasoning=thinking or None, reasoning_signature=signature or None)
                )
            return None
        if kind == "redacted_thinking":
            self._blocks[index] = _Block("other")
            return self._chunk(Delta(redacted_reasoning=_str(block.get("data"), "redacted data")))
        if kind == "tool_use":
            call = ToolCallDelta(
                self._tools,
                id=_str(block.get("id"), "a tool id"),
                name=_str(block.get("name"), "a tool name"),
            )
            self._blocks[index] = _Block("tool", self._tools, block.get("input"))
            self._tools += 1
            return self._chunk(Delta(tool_calls=[call]))
        self._blocks[index] = _Block("other")  # server tools and their results, citations...
        return None

    def _delta(self, block: _Block, delta: Any) -> Chunk | None:
        if type(delta) is not dict:
            raise malformed("the upstream sent a content_block_delta without a delta")
        kind = delta.get("type")
        if kind == "text_delta" and block.kind == "text":
            return self._chunk(Delta(text=_str(delta.get("text"), "text")))
        if kind == "thinking_delta" and block.kind == "thinking":
            return self._chunk(Delta(reasoning=_str(delta.get("thinking"), "thinking")))
        if kind == "signature_delta" and block.kind == "thinking":
            signature = _str(delta.get("signature"), "a signature")
            return self._chunk(Delta(reasoning_signature=signature))
        if kind == "input_json_delta" and block.kind == "tool":
            piece = _str(delta.get("partial_json"), "partial_json")
            if not piece:  # the first piece is often "": nothing to send
                return None
            block.args = True
            return self._chunk(Delta(tool_calls=[ToolCallDelta(block.tool, arguments=piece)]))
        return None  # citations, server tools' input, deltas of types to come

    def _message_delta(self, event: dict[str, Any]) -> None:
        delta = event.get("delta")
        if type(delta) is not dict:
            raise malformed("the upstream sent a message_delta without a delta")
        if delta.get("stop_reason") is not None:
            self._stop = (delta.get("stop_reason"), delta.get("stop_sequence"))
        self._merge_usage(event.get("usage"))

    def _merge_usage(self, raw: Any) -> None:
        """Cumulative counts: a non-null value replaces the one before (SDK accumulate_event)."""
        if raw is None:
            return
        if type(raw) is not dict:
            raise malformed("the upstream sent usage that is not an object")
        self._usage.update((key, value) for key, value in raw.items() if value is not None)

    def _message_stop(self) -> Chunk:
        if not self._started:
            raise malformed("the upstream sent message_stop before message_start")
        self.finished = True
        self.produced = True
        finish = _finish(*self._stop, tools=self._tools > 0)
        return Chunk(deltas=[finish], usage=usage(self._usage))


def stream_error(
    error: Any, *, redact: Callable[[str], str], produced: bool = False
) -> UpstreamStreamError:
    """The error for Anthropic's ``{"type": "error", "error": {"type", "message"}}`` inside a
    200 answer; ``produced``: whether any chunk went out before it."""
    kind = error.get("type") if type(error) is dict else None
    detail = error.get("message") if type(error) is dict else None
    what = kind if type(kind) is str else "error"
    message = f"the upstream reported an error mid-stream ({what[:50]})"
    if type(detail) is str and detail:
        message += ": " + redact(detail)
    failure = UpstreamStreamError(message)
    failure.overloaded = kind == "overloaded_error"
    # Before anything reached the client, another attempt is as good as the first.
    failure.retryable = not produced and kind in _TRANSIENT
    return failure


def message_to_chunks(data: dict[str, Any]) -> list[Chunk]:
    """A whole (non-streamed) ``message`` as the chunks of the normalized stream."""
    content = data.get("content")
    if data.get("type") != "message" or type(content) is not list:
        raise malformed("the upstream answered with JSON that is not a message")
    chunks: list[Chunk] = []
    tools = 0
    for block in content:
        kind = block.get("type") if type(block) is dict else None
        delta: Delta | None = None
        if kind == "text":
            delta = Delta(text=_str(block.get("text"), "text"))
        elif kind == "thinking":
            signature = _str(block.get("signature", ""), "a signature")
            delta = Delta(
                reasoning=_str(block.get("thinking"), "thinking"),
                reasoning_signature=signature or None,
            )
        elif kind == "redacted_thinking":
            delta = Delta(redacted_reasoning=_str(block.get("data"), "redacted data"))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            call = ToolCallDelta(
                tools,
                id=_str(block.get("id"), "a tool id"),
                name=_str(block.get("name"), "a tool name"),
                arguments=arguments,
            )
            tools += 1
            delta = Delta(tool_calls=[call])
        if delta is not None:
            chunks.append(Chunk(deltas=[delta]))
    raw_usage = data.get("usage")
    if type(raw_usage) is not dict:
        raise malformed("the upstream answered with a message without usage")
    finish = _finish(data.get("stop_reason"), data.get("stop_sequence"), tools=tools > 0)
    chunks.append(Chunk(deltas=[finish], usage=usage(raw_usage)))
    return chunks
