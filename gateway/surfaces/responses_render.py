"""The normalized stream as OpenAI's Responses output: SSE events, and the response object.

One :class:`ResponseBuilder` folds the stream into output items and, when streaming, frames
each step as the events PROVIDERS.md §5.2 lists: ``response.created`` and
``response.in_progress`` first, then per item ``response.output_item.added`` -> its deltas ->
its ``done`` events -> ``response.output_item.done``, and last exactly one of
``response.completed``, ``response.incomplete`` (``length`` -> ``max_output_tokens``,
``content_filter``) or ``response.failed``. Every event has a ``sequence_number``, counting
from 0; every item an ``output_index`` (its place in ``output``). The non-streaming answer is
the terminal event's response object.

Items: text (and refusals) -> a ``message`` with ``output_text`` (``refusal``) parts;
reasoning -> a ``reasoning`` item with the text as a ``summary_text`` part (whatever
``reasoning.summary`` asked: the upstream's reasoning is all there is to show) and an
``encrypted_content`` that carries the text, its signature and redacted thinking back to the
deployment that produced them (:mod:`gateway.surfaces.responses_reasoning`); tool calls ->
``function_call`` items (``namespace`` set for a namespace's tools) or ``custom_tool_call``
items for custom tools. Tool calls stay open until the stream ends, so that an upstream that
interleaves several calls' argument pieces loses none; provider data on a call (Gemini's thought
signature) rides in a reasoning item right before it.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.errors import APIError
from gateway.ids import random_hex
from gateway.surfaces import responses_reasoning
from gateway.surfaces.responses_reasoning import Reasoning
from gateway.surfaces.responses_request import ResponsesRequest
from gateway.surfaces.responses_tools import CUSTOM_INPUT, ToolName
from providers.base import Chunk, Delta, ToolCallDelta, Usage

# Codes of a failed response the clients act on; anything else is a retryable server_error.
# ``context_length_exceeded`` and ``insufficient_quota`` are not in the spec's enum, but OpenAI
# sends them and Codex stops on them instead of retrying (PROVIDERS.md §5.2).
FAILED_CODES = frozenset(
    {"rate_limit_exceeded", "context_length_exceeded", "insufficient_quota", "server_error"}
)


def _id(prefix: str) -> str:
    return f"{prefix}_{random_hex()}"


def render_usage(usage: Usage) -> dict[str, Any]:
    """OpenAI's ``ResponseUsage``: all five fields, always (Codex refuses a partial one)."""
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def failed_code(error: APIError) -> str:
    """The Responses error code for a gateway error after the response started."""
    code = error.code or ""
    if "context_length" in code or "context_window" in code:
        return "context_length_exceeded"
    if error.status == 429 or code == "rate_limit_exceeded":
        return "rate_limit_exceeded"
    return code if code in FAILED_CODES else "server_error"


class _Item:
    """An output item being built; ``index`` is its ``output_index``."""

    __slots__ = ("done", "id", "index", "kind", "parts", "payload")

    def __init__(self, kind: str, index: int, prefix: str) -> None:
        self.kind = kind
        self.index = index
        self.id = _id(prefix)
        self.done = False
        self.parts: list[list[str]] = []  # message: per content part; reasoning: summary
        self.payload: dict[str, Any] = {}


class ResponseBuilder:
    """Folds one completion's chunks into a Responses response, as events or as one object.

    :meth:`render` is ``Session.pump``'s render function (``b""`` when not streaming);
    :meth:`finish` closes the open items and gives the terminal event (or the object).
    """

    def __init__(self, request: ResponsesRequest, *, model: str, origin: str, stream: bool) -> None:
        self.request = request
        self.model = model
        self.origin = origin  # the deployment, stamped on reasoning items
        self.stream = stream
        self.id = _id("resp")
        self.created_at = int(time.time())
        self.sequence = 0
        self.items: list[_Item] = []
        self.message: _Item | None = None
        self.thinking: _Item | None = None
        self.thought: Reasoning | None = None
        self.calls: dict[int, _Item] = {}  # the gateway's tool call index -> item
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self._out: list[bytes] = []
        self._started = False

    # -- events ----------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> None:
        if not self.stream:
            return
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        self._out.append(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n")

    def _flush(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def response(self, status: str, **fields: Any) -> dict[str, Any]:
        """The response object as it stands (``output`` holds the finished items)."""
        echo = self.request.echo
        out: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "model": self.model,
            "output": [_item_object(i) for i in self.items if i.done],
            **echo,
        }
        out.update(fields)
        if status not in ("in_progress", "queued"):
            out["completed_at"] = int(time.time()) if status == "completed" else None
        return out

    # -- the stream ------------------------------------------------------------------------

    def render(self, chunk: Chunk) -> bytes:
        if not self._started:
            self._started = True
            created = self.response("in_progress")
            self._event("response.created", response=created)
            self._event("response.in_progress", response=created)
        if chunk.usage is not None:
            self.usage = chunk.usage
        for delta in chunk.deltas:
            if delta.choice == 0:  # the Responses API has one answer
                self._delta(delta)
        return self._flush()

    def _delta(self, d: Delta) -> None:
        if d.reasoning or d.reasoning_signature or d.redacted_reasoning:
            self._reasoning(d)
        if d.text:
            self._text("output_text", d.text)
        if d.refusal:
            self._text("refusal", d.refusal)
        for call in d.tool_calls or ():
            self._tool_call(call)
        if d.finish_reason is not None:
            self.finish_reason = d.finish_reason

    def _open(self, kind: str, prefix: str, item: dict[str, Any]) -> _Item:
        opened = _Item(kind, len(self.items), prefix)
        self.items.append(opened)
        opened.payload = item
        self._event(
            "response.output_item.added",
            output_index=opened.index,
            item={"id": opened.id, **item, **_open_status(kind)},
        )
        return opened

    def _close(self, item: _Item, status: str = "completed") -> None:
        item.done = True
        item.payload["status"] = status
        self._event("response.output_item.done", output_index=item.index, item=_item_object(item))

    # text ---------------------------------------------------------------------------------

    def _text(self, kind: str, text: str) -> None:
        self._close_thinking()
        message = self.message
        if message is None:
            message = self.message = self._open(
                "message", "msg", {"type": "message", "role": "assistant", "content": []}
            )
            message.payload["kinds"] = []
        kinds: list[str] = message.payload["kinds"]
        if not kinds or kinds[-1] != kind:
            if kinds:
                self._close_part(message)
            kinds.append(kind)
            message.parts.append([])
            self._event(
                "response.content_part.added",
                item_id=message.id,
                output_index=message.index,
                content_index=len(kinds) - 1,
                part=_part(kind, ""),
            )
        message.parts[-1].append(text)
        where = {"item_id": message.id, "output_index": message.index}
        if kind == "output_text":
            self._event(
                "response.output_text.delta",
                **where,
                content_index=len(kinds) - 1,
                delta=text,
                logprobs=[],
            )
        else:
            self._event("response.refusal.delta", **where, content_index=len(kinds) - 1, delta=text)

    def _close_part(self, message: _Item) -> None:
        kinds: list[str] = message.payload["kinds"]
        index = len(kinds) - 1
        kind, text = kinds[index], "".join(message.parts[index])
        where = {"item_id": message.id, "output_index": message.index, "content_index": index}
        if kind == "output_text":
            self._event("response.output_text.done", **where, text=text, logprobs=[])
        else:
            self._event("response.refusal.done", **where, refusal=text)
        self._event("response.content_part.done", **where, part=_part(kind, text))

    def _close_message(self, status: str = "completed") -> None:
        message, self.message = self.message, None
        if message is None:
            return
        if message.payload["kinds"]:
            self._close_part(message)
        message.payload["content"] = [
            _part(kind, "".join(pieces))
            for kind, pieces in zip(message.payload.pop("kinds"), message.parts, strict=True)
        ]
        self._close(message, status)

    # reasoning ----------------------------------------------------------------------------

    def _reasoning(self, d: Delta) -> None:
        self._close_message()
        item = self.thinking
        if item is None:
            item = self.thinking = self._open(
                "reasoning", "rs", {"type": "reasoning", "summary": []}
            )
            self.thought = Reasoning(self.origin)
        thought = self.thought
        assert thought is not None
        if d.reasoning:
            where = {"item_id": item.id, "output_index": item.index, "summary_index": 0}
            if not item.parts:
                item.parts.append([])
                self._event(
                    "response.reasoning_summary_part.added",
                    **where,
                    part={"type": "summary_text", "text": ""},
                )
            item.parts[0].append(d.reasoning)
            self._event("response.reasoning_summary_text.delta", **where, delta=d.reasoning)
        thought.signature += d.reasoning_signature or ""
        thought.redacted += d.redacted_reasoning or ""

    def _close_thinking(self, status: str = "completed") -> None:
        item, self.thinking = self.thinking, None
        thought, self.thought = self.thought, None
        if item is None or thought is None:
            return
        summary = []
        if item.parts:
            text = "".join(item.parts[0])
            where = {"item_id": item.id, "output_index": item.index, "summary_index": 0}
            self._event("response.reasoning_summary_text.done", **where, text=text)
            part = {"type": "summary_text", "text": text}
            self._event("response.reasoning_summary_part.done", **where, part=part)
            summary.append(part)
            thought.text = text
        item.payload["summary"] = summary
        item.payload["encrypted_content"] = responses_reasoning.encode(thought)
        self._close(item, status)

    # tool calls ---------------------------------------------------------------------------

    def _tool_call(self, call: ToolCallDelta) -> None:
        item = self.calls.get(call.index)
        if item is None:
            self._close_message()
            name = call.name or ""
            call_id = call.id or _id("call")
            if call.extra:
                self._carry(call_id, call.extra)
            else:
                self._close_thinking()
            tool = self.request.tools.get(name) or ToolName(name)
            if tool.custom:
                payload: dict[str, Any] = {
                    "type": "custom_tool_call",
                    "call_id": call_id,
                    "name": tool.name,
                    "input": "",
                }
                item = self._open("custom_tool_call", "ctc", payload)
            else:
                payload = {
                    "type": "function_call",
                    "call_id": call_id,
                    "name": tool.name,
                    "arguments": "",
                }
                item = self._open("function_call", "fc", payload)
            if tool.namespace is not None:
                payload["namespace"] = tool.namespace
            self.calls[call.index] = item
            item.parts.append([])
        if call.arguments:
            item.parts[0].append(call.arguments)
            if item.kind == "function_call":
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item.id,
                    output_index=item.index,
                    delta=call.arguments,
                )

    def _carry(self, call_id: str, extra: dict[str, Any]) -> None:
        """Provider data on a tool call, in the open reasoning item or one of its own."""
        if self.thinking is None:
            self.thinking = self._open("reasoning", "rs", {"type": "reasoning", "summary": []})
            self.thought = Reasoning(self.origin)
        assert self.thought is not None
        self.thought.call_extras[call_id] = extra
        self._close_thinking()

    def _close_call(self, item: _Item, status: str) -> None:
        arguments = "".join(item.parts[0])
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind == "function_call":
            arguments = arguments or "{}"  # a call without arguments still sends an object
            self._event(
                "response.function_call_arguments.done",
                **where,
                name=item.payload["name"],
                arguments=arguments,
            )
            item.payload["arguments"] = arguments
        else:
            value = _custom_input(arguments)
            if value:
                self._event("response.custom_tool_call_input.delta", **where, delta=value)
            self._event("response.custom_tool_call_input.done", **where, input=value)
            item.payload["input"] = value
        self._close(item, status)

    # the end ------------------------------------------------------------------------------

    def _close_all(self, status: str) -> None:
        self._close_thinking(status)
        self._close_message(status)
        for index in sorted(self.calls, key=lambda i: self.calls[i].index):
            self._close_call(self.calls[index], status)
        self.calls = {}

    def finish(self, error: APIError | None) -> tuple[bytes, dict[str, Any]]:
        """The terminal events (when streaming) and the final response object."""
        if not self._started:  # pump always renders the first item; for completeness
            self.render(Chunk(deltas=[]))
        usage = {"usage": render_usage(self.usage)} if self.usage is not None else {}
        if error is not None:
            self._close_all("incomplete")
            final = self.response(
                "failed", error={"code": failed_code(error), "message": error.message}, **usage
            )
            self._event("response.failed", response=final)
        elif self.finish_reason in ("length", "content_filter"):
            self._close_all("incomplete")
            reason = "max_output_tokens" if self.finish_reason == "length" else "content_filter"
            final = self.response("incomplete", incomplete_details={"reason": reason}, **usage)
            self._event("response.incomplete", response=final)
        else:
            self._close_all("completed")
            final = self.response("completed", **usage)
            self._event("response.completed", response=final)
        return self._flush(), final


def _open_status(kind: str) -> dict[str, Any]:
    return {} if kind == "custom_tool_call" else {"status": "in_progress"}


def _item_object(item: _Item) -> dict[str, Any]:
    out = {"id": item.id, **item.payload}
    out.pop("kinds", None)
    if item.kind == "custom_tool_call":
        out.pop("status", None)  # the spec's custom_tool_call has none
    return out


def _part(kind: str, text: str) -> dict[str, Any]:
    if kind == "output_text":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "refusal", "refusal": text}


def _custom_input(arguments: str) -> str:
    """A custom tool's input from the function arguments the upstream gave it: the one
    ``input`` string, else the arguments as they are (a model that ignored the schema)."""
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get(CUSTOM_INPUT), str):
        return str(value[CUSTOM_INPUT])
    return arguments
