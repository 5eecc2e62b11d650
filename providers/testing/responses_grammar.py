"""The grammar of an OpenAI Responses event stream, checked over a whole stream.

For tests of anything behind the gateway's ``POST /v1/responses`` (a plugin's provider
included): :func:`parse_responses_sse` reads the raw body, :func:`check_responses_stream` raises
``AssertionError`` naming the event and the rule it breaks, and otherwise returns what the
response said (:class:`ResponsesSummary`). The rules are what strict clients enforce (the
openai SDK's ``responses.stream()``, the agents SDK, Codex; PROVIDERS.md §5.2):

* every event has a ``type`` and an integer ``sequence_number``, strictly increasing;
  ``response.created`` comes first (``response.in_progress`` may follow it);
* an item's ``response.output_item.added`` comes before any event about it, with
  ``output_index`` 0, 1, 2... in order and an id no other item has; events about an item
  name it by ``output_index`` and ``item_id``; nothing about it follows its
  ``response.output_item.done``, and every item is done before the end;
* a message's ``content_part.added`` comes before its text deltas (``content_index`` 0, 1...),
  text ``done`` events repeat the joined deltas; the same for reasoning summary parts,
  function call arguments and custom tool input; the done item holds what the deltas said;
* the stream ends with exactly one of ``response.completed``, ``response.incomplete`` (with
  ``incomplete_details.reason``) and ``response.failed`` (with ``error.code`` and
  ``error.message``), whose ``output`` is the done items in order; nothing follows it;
* usage, when given, has all five counts as non-negative integers, total = input + output,
  cached within input and reasoning within output (Codex refuses anything less);
* with ``json_arguments`` a completed response's function call arguments parse as a JSON
  object.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from providers.testing.typed_sse import expect, parse_typed_sse

TERMINAL = ("response.completed", "response.incomplete", "response.failed")


@dataclass(slots=True)
class ResponsesToolCall:
    """A function or custom tool call of the response."""

    type: str  # function_call, custom_tool_call
    call_id: str
    name: str
    arguments: str  # a custom tool's input
    namespace: str | None = None


@dataclass(slots=True)
class ResponsesSummary:
    """What a stream that passed :func:`check_responses_stream` said."""

    status: str
    response: dict[str, Any]
    text: str = ""
    refusal: str = ""
    reasoning: str = ""
    tool_calls: list[ResponsesToolCall] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    event_types: list[str] = field(default_factory=list)


def parse_responses_sse(body: str | bytes) -> list[dict[str, Any]]:
    """The events of a Responses SSE body, in order (see :func:`parse_typed_sse`)."""
    return parse_typed_sse(body)


@dataclass(slots=True)
class _Open:
    item: dict[str, Any]
    parts: list[str] = field(default_factory=list)  # content or summary parts, joined
    part_kinds: list[str] = field(default_factory=list)
    part_done: list[bool] = field(default_factory=list)
    arguments: str = ""
    arguments_done: bool = False
    reasoning_text: dict[int, str] = field(default_factory=dict)
    done: bool = False


class _Checker:
    def __init__(self, json_arguments: bool) -> None:
        self.json_arguments = json_arguments
        self.items: list[_Open] = []
        self.ids: set[str] = set()
        self.last_sequence: int | None = None
        self.terminal: dict[str, Any] | None = None
        self.response_id: str | None = None

    def event(self, n: int, event: Mapping[str, Any]) -> None:
        expect(isinstance(event, Mapping), f"event {n} is not an object")
        kind = event.get("type")
        at = f"event {n} ({kind})"
        expect(isinstance(kind, str), f"event {n} has no type")
        sequence = event.get("sequence_number")
        expect(
            type(sequence) is int and sequence >= 0,
            f"{at}: sequence_number {sequence!r} is not a non-negative integer",
        )
        expect(
            self.last_sequence is None or sequence > self.last_sequence,  # type: ignore[operator]
            f"{at}: sequence_number {sequence} does not follow {self.last_sequence}",
        )
        assert isinstance(kind, str) and isinstance(sequence, int)
        self.last_sequence = sequence
        expect(self.terminal is None, f"{at}: an event after the response ended")
        if n == 0:
            expect(kind == "response.created", f"{at}: the first event must be response.created")
        if kind in ("response.created", "response.in_progress"):
            expect(
                (kind == "response.created" and n == 0)
                or (kind == "response.in_progress" and n == 1),
                f"{at}: {kind} only opens the stream",
            )
            self._response(event, at, "in_progress")
            return
        if kind in TERMINAL:
            self._terminal(event, at)
            return
        expect(kind != "error", f"{at}: an error event; a started response ends response.failed")
        if kind == "response.output_item.added":
            self._added(event, at)
            return
        item = self._item(event, at)
        getattr(self, "_" + kind.removeprefix("response.").replace(".", "_"), self._unknown)(
            event, item, at
        )

    def _response(self, event: Mapping[str, Any], at: str, status: str | None) -> dict[str, Any]:
        response = event.get("response")
        expect(isinstance(response, dict), f"{at}: no response object")
        assert isinstance(response, dict)
        expect(response.get("object") == "response", f"{at}: response.object is not 'response'")
        expect(isinstance(response.get("id"), str), f"{at}: response.id is not a string")
        if self.response_id is None:
            self.response_id = response["id"]
        expect(response["id"] == self.response_id, f"{at}: the response id changed")
        if status is not None:
            expect(response.get("status") == status, f"{at}: status is not {status!r}")
        return response

    def _added(self, event: Mapping[str, Any], at: str) -> None:
        item = event.get("item")
        expect(isinstance(item, dict), f"{at}: no item")
        assert isinstance(item, dict)
        expect(
            event.get("output_index") == len(self.items),
            f"{at}: output_index {event.get('output_index')!r}, expected {len(self.items)}",
        )
        item_id = item.get("id")
        expect(isinstance(item_id, str) and bool(item_id), f"{at}: the item has no id")
        assert isinstance(item_id, str)
        expect(item_id not in self.ids, f"{at}: item id {item_id!r} is used twice")
        self.ids.add(item_id)
        expect(
            item.get("type")
            in ("message", "reasoning", "function_call", "custom_tool_call", "web_search_call"),
            f"{at}: item type {item.get('type')!r}",
        )
        self.items.append(_Open(dict(item)))

    def _item(self, event: Mapping[str, Any], at: str) -> _Open:
        index = event.get("output_index")
        expect(
            type(index) is int and 0 <= index < len(self.items),
            f"{at}: output_index {index!r} names no added item",
        )
        assert isinstance(index, int)
        state = self.items[index]
        expect(not state.done, f"{at}: item {index} is already done")
        item_id = event.get("item_id", event.get("item", {}).get("id"))
        expect(item_id == state.item["id"], f"{at}: item_id {item_id!r} is not item {index}'s")
        return state

    def _unknown(self, event: Mapping[str, Any], state: _Open, at: str) -> None:
        raise AssertionError(f"{at}: not an event of this grammar")

    def _of(self, state: _Open, kind: str, at: str) -> None:
        expect(state.item["type"] == kind, f"{at}: not an event of a {state.item['type']} item")

    # message parts
    def _content_part_added(self, event: Mapping[str, Any], state: _Open, at: str) -> None:
        self._of(state, "message", at)
        expect(all(state.part_done), f"{at}: a part opens before the last one is done")
        expect(
            event.get("content_index") == len(state.parts),
            f"{at}: content_index {event.get('content_index')!r}, expected {len(state.parts)}",
        )
        part = event.get("part") or {}
        expect(part.get("type") in ("output_text", "refusal"), f"{at}: part type")
        state.parts.append("")
        state.part_kinds.append(part["type"])
        state.part_done.append(False)

    def _open_part(
        self, event: Mapping[str, Any], state: _Open, item: str, key: str, what: str, at: str
    ) -> int:
        """The index ``event[key]`` names: a part of this ``item`` added and not yet done."""
        self._of(state, item, at)
        index = event.get(key)
        expect(
            type(index) is int and 0 <= index < len(state.parts),
            f"{at}: {key} {index!r} names no added part",
        )
        assert isinstance(index, int)
        expect(not state.part_done[index], f"{at}: {what} {index} is already done")
        return index

    def _part(self, event: Mapping[str, Any], state: _Open, kind: str, at: str) -> int:
        index = self._open_part(event, state, "message", "content_index", "part", at)
        expect(state.part_kinds[index] == kind, f"{at}: part {index} is not {kind}")
        return index

    def _output_text_delta(self, event: Mapping[str, Any], state: _Open, at: str) -> None:
        index = self._part(event, state, "output_text", at)
        expect(isinstance(event.get("delta"), str), f"{at}: delta is not a string")
        expect(isinstance(event.get("logprobs"), list), f"{at}: logprobs is required")
        state.parts[index] += event["delta"]

    def _output_text_done(self, event: Mapping[str, Any], state: _Open, at: str) -> None:
        index = self._part(event, state, "output_text", at)
        expect(event.get("text") == state.parts[index], f"{at}: text is not the deltas joined")
        expect(isinstance(event.get("logprobs"), list), f"{at}: logprobs is required")

    def _refusal_delta(self, event: Mapping[str, Any], state: _Open, at: str) -> None:
        index = self._part(event, state, "refusal", at)
        expect(isinstance(event.get("delta"), str), f"{at}: delta is not a string")
        state.parts[index] += event["delta"]

    def _refusal_done(self, event: Mapping[str, Any], state: _Open, at: str) -> None:
        index = self._part(event, state, "refusal", at)
        expect(event.get("refusal") == state.parts[index], f"{at}: refusal is not joined")

    def _content_part_done(self, event: Mapping[str, Any], state: _Open, at: str) -> None:
        index = self._part(event, state, state.part_kinds[-1] if state.part_kinds else "", at)
        part = event.get("part") or {}
        key = "text" if state.part_kinds[index] == "output_text" else "refusal"
        expect(part.get(key) == state.parts[index], f"{at}: the part is not what was said")
        state.part_done[index] = True

    # reasoning
    def _reasoning_summary_part_added(
        self, event: Mapping[str, Any], state: _Open, at: str
    ) -> None:
        self._of(state, "reasoning", at)
        expect(all(state.part_done), f"{at}: a part opens before the last one is done")
        expect(event.get("summary_index") == len(state.parts), f"{at}: summary_index")
        state.parts.append("")
        state.part_kinds.append("summary_text")
        state.part_done.append(False)

    def _summary(self, event: Mapping[str, Any], state: _Open, at: str) -> int:
        return self._open_part(event, state, "reasoning", "summary_index", "summary part", at)

    def _reasoning_summary_text_delta(
        self, event: Mapping[str, Any], state: _Open, at: str
    ) -> None:
        index = self._summary(event, state, at)
        expect(isinstance(event.get("delta"), str), f"{at}: delta is not a string")
        state.parts[index] += event["delta"]

    def _reasoning_summary_text_done(self, event: Mapping[str, Any], state: _Open, at: str) -> None:
        index = self._summary(event, state, at)
        expect(event.get("text") == state.parts[index], f"{at}: text is not the deltas joined")

    def _reasoning_summary_part_done(self, event: Mapping[str, Any], state: _Open, at: str) -> None:
        index = self._summary(event, state, at)
        part = event.get("part") or {}
        expect(part.get("text") == state.parts[index], f"{at}: the part is not what was said")
        state.part_done[index] = True

    def _reasoning_text_delta(self, event: Mapping[str, Any], state: _Open, at: str) -> None:
        self._of(state, "reasoning", at)
        index = event.get("content_index")
        expect(type(index) is int, f"{at}: content_index")
        assert isinstance(index, int)
        state.reasoning_text[index] = state.reasoning_text.get(index, "") + event["delta"]

    def _reasoning_text_done(self, event: Mapping[str, Any], state: _Open, at: str) -> None:
        self._of(state, "reasoning", at)
        index = event.get("content_index")
        expect(
            event.get("text") == state.reasoning_text.get(index, ""),  # type: ignore[arg-type]
            f"{at}: text is not the deltas joined",
        )

    # tool calls
    def _function_call_arguments_delta(
        self, event: Mapping[str, Any], state: _Open, at: str
    ) -> None:
        self._of(state, "function_call", at)
        expect(not state.arguments_done, f"{at}: arguments after their done event")
        expect(isinstance(event.get("delta"), str), f"{at}: delta is not a string")
        state.arguments += event["delta"]

    def _function_call_arguments_done(
        self, event: Mapping[str, Any], state: _Open, at: str
    ) -> None:
        self._of(state, "function_call", at)
        expect(not state.arguments_done, f"{at}: a second done event")
        given = event.get("arguments")
        expect(
            given == state.arguments or (state.arguments == "" and given == "{}"),
            f"{at}: arguments {given!r} are not the deltas joined {state.arguments!r}",
        )
        state.arguments, state.arguments_done = given, True  # type: ignore[assignment]

    def _custom_tool_call_input_delta(
        self, event: Mapping[str, Any], state: _Open, at: str
    ) -> None:
        self._of(state, "custom_tool_call", at)
        expect(not state.arguments_done, f"{at}: input after its done event")
        state.arguments += event.get("delta", "")

    def _custom_tool_call_input_done(self, event: Mapping[str, Any], state: _Open, at: str) -> None:
        self._of(state, "custom_tool_call", at)
        expect(event.get("input") == state.arguments, f"{at}: input is not the deltas joined")
        state.arguments_done = True

    # the item's end
    def _output_item_done(self, event: Mapping[str, Any], state: _Open, at: str) -> None:
        item = event.get("item")
        expect(isinstance(item, dict), f"{at}: no item")
        assert isinstance(item, dict)
        kind = state.item["type"]
        expect(item.get("type") == kind, f"{at}: the item changed its type")
        expect(all(state.part_done), f"{at}: the item is done with a part still open")
        if kind == "message":
            content = item.get("content") or []
            said = [
                p.get("text") if p.get("type") == "output_text" else p.get("refusal")
                for p in content
            ]
            expect(said == state.parts, f"{at}: the content is not what the deltas said")
        elif kind == "reasoning":
            summary = [p.get("text") for p in item.get("summary") or []]
            expect(summary == state.parts, f"{at}: the summary is not what the deltas said")
        elif kind == "function_call":
            expect(state.arguments_done, f"{at}: no function_call_arguments.done before it")
            expect(item.get("arguments") == state.arguments, f"{at}: arguments differ")
            for name in ("call_id", "name"):
                expect(
                    isinstance(item.get(name), str) and bool(item[name]),
                    f"{at}: the call has no {name}",
                )
                expect(item[name] == state.item.get(name), f"{at}: {name} changed")
        elif kind == "custom_tool_call":
            expect(state.arguments_done, f"{at}: no custom_tool_call_input.done before it")
            expect(item.get("input") == state.arguments, f"{at}: input differs")
        state.item, state.done = dict(item), True

    def _terminal(self, event: Mapping[str, Any], at: str) -> None:
        kind = event["type"]
        status = kind.removeprefix("response.")
        response = self._response(event, at, status)
        for index, state in enumerate(self.items):
            expect(state.done, f"{at}: item {index} was never done")
        output = response.get("output")
        expect(
            output == [s.item for s in self.items],
            f"{at}: output is not the done items in order",
        )
        if kind == "response.incomplete":
            details = response.get("incomplete_details") or {}
            expect(
                details.get("reason") in ("max_output_tokens", "content_filter"),
                f"{at}: incomplete_details.reason {details.get('reason')!r}",
            )
        if kind == "response.failed":
            error = response.get("error") or {}
            expect(
                isinstance(error.get("code"), str) and isinstance(error.get("message"), str),
                f"{at}: a failed response needs error.code and error.message",
            )
        else:
            expect(response.get("error") is None, f"{at}: an error on a {status} response")
        if response.get("usage") is not None:
            check_usage(response["usage"], at)
        if kind == "response.completed" and self.json_arguments:
            for s in self.items:
                if s.item["type"] == "function_call":
                    try:
                        value = json.loads(s.item["arguments"])
                    except ValueError:
                        value = None
                    expect(
                        isinstance(value, dict),
                        f"{at}: call {s.item['call_id']} arguments are not a JSON object: "
                        f"{s.item['arguments']!r}",
                    )
        self.terminal = dict(response)


def check_usage(usage: object, at: str = "usage") -> None:
    """Responses usage: all five counts, consistent."""
    expect(isinstance(usage, dict), f"{at}: usage is not an object")
    assert isinstance(usage, dict)
    counts = {
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "cached_tokens": (usage.get("input_tokens_details") or {}).get("cached_tokens"),
        "reasoning_tokens": (usage.get("output_tokens_details") or {}).get("reasoning_tokens"),
    }
    for name, value in counts.items():
        expect(type(value) is int and value >= 0, f"{at}: usage {name} {value!r}")
    expect(
        counts["total_tokens"] == counts["input_tokens"] + counts["output_tokens"],  # type: ignore[operator]
        f"{at}: usage total_tokens is not input + output",
    )
    expect(counts["cached_tokens"] <= counts["input_tokens"], f"{at}: cached > input")  # type: ignore[operator]
    expect(counts["reasoning_tokens"] <= counts["output_tokens"], f"{at}: reasoning > output")  # type: ignore[operator]


def check_responses_stream(
    events: Sequence[Mapping[str, Any]], *, json_arguments: bool = True
) -> ResponsesSummary:
    """Check that ``events`` (decoded, in order) form one well-made Responses stream."""
    checker = _Checker(json_arguments)
    for n, event in enumerate(events):
        checker.event(n, event)
    expect(bool(events), "the stream has no events")
    expect(
        checker.terminal is not None,
        "the stream ended without response.completed, response.incomplete or response.failed",
    )
    response = checker.terminal
    assert response is not None
    summary = ResponsesSummary(
        status=response["status"],
        response=response,
        items=[s.item for s in checker.items],
        usage=response.get("usage"),
        error=response.get("error"),
        event_types=[str(e["type"]) for e in events],
    )
    for item in summary.items:
        if item["type"] == "message":
            for part in item.get("content") or []:
                if part.get("type") == "output_text":
                    summary.text += part["text"]
                else:
                    summary.refusal += part.get("refusal", "")
        elif item["type"] == "reasoning":
            summary.reasoning += "".join(p.get("text", "") for p in item.get("summary") or [])
        elif item["type"] in ("function_call", "custom_tool_call"):
            summary.tool_calls.append(
                ResponsesToolCall(
                    type=item["type"],
                    call_id=item["call_id"],
                    name=item["name"],
                    arguments=item.get("arguments", item.get("input", "")),
                    namespace=item.get("namespace"),
                )
            )
    return summary
