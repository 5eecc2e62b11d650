"""The Responses renderer on synthetic normalized streams, and the conformance kit's Responses
grammar checker: it passes what the renderer makes (every event also valid for the spec and
the SDK) and catches each way a stream can break the grammar."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from gateway.errors import BadGateway, GatewayTimeout, RateLimited
from gateway.surfaces import responses_reasoning
from gateway.surfaces.responses_render import ResponseBuilder, failed_code
from gateway.surfaces.responses_request import parse_responses_request
from gateway.validation import Limits
from providers.base import Chunk, Delta, ToolCallDelta, Usage
from providers.testing import check_responses_stream, parse_responses_sse
from tests.support.responses_client import validate_event, validate_response

Events = list[dict[str, Any]]


def request(**fields: Any) -> Any:
    body = {"model": "m", "input": "hi", **fields}
    return parse_responses_request(json.dumps(body).encode(), Limits())


TOOLS = [
    {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": False},
    {"type": "custom", "name": "patch"},
    {
        "type": "namespace",
        "name": "ns",
        "description": "d",
        "tools": [{"type": "function", "name": "g", "strict": None, "parameters": None}],
    },
]
RICH = [
    Chunk([Delta(reasoning="Let me ")]),
    Chunk([Delta(reasoning="think.", reasoning_signature="sig-1")]),
    Chunk([Delta(text="Hello ")]),
    Chunk([Delta(refusal="I won't")]),
    Chunk([Delta(text="but here")]),
    Chunk([Delta(tool_calls=[ToolCallDelta(0, id="c0", name="f", arguments='{"a"')])]),
    Chunk([Delta(tool_calls=[ToolCallDelta(1, id="c1", name="ns__g")])]),
    Chunk([Delta(tool_calls=[ToolCallDelta(0, arguments=": 1}")])]),
    Chunk([Delta(tool_calls=[ToolCallDelta(2, id="c2", name="patch", arguments='{"input"')])]),
    Chunk([Delta(tool_calls=[ToolCallDelta(2, arguments=': "*** x"}')])]),
    Chunk([Delta(finish_reason="tool_calls")]),
    Chunk([], usage=Usage(10, 7, cached_tokens=4, reasoning_tokens=2)),
]


def render(
    chunks: list[Chunk], *, error: Any = None, stream: bool = True, **fields: Any
) -> tuple[Events, dict[str, Any]]:
    builder = ResponseBuilder(request(**fields), model="p/m", origin="p/m", stream=stream)
    body = b"".join(builder.render(chunk) for chunk in chunks)
    end, final = builder.finish(error)
    return parse_responses_sse(body + end), final


def rich() -> Events:
    return render(RICH, tools=TOOLS)[0]


def test_a_rich_stream_is_valid_and_says_what_the_chunks_said() -> None:
    events, final = render(RICH, tools=TOOLS)
    for event in events:
        validate_event(event)
    validate_response(final)
    summary = check_responses_stream(events)
    assert summary.status == "completed"
    assert summary.reasoning == "Let me think."
    assert summary.text == "Hello but here"
    assert summary.refusal == "I won't"
    assert [(c.type, c.name, c.namespace, c.arguments) for c in summary.tool_calls] == [
        ("function_call", "f", None, '{"a": 1}'),
        ("function_call", "g", "ns", "{}"),
        ("custom_tool_call", "patch", None, "*** x"),
    ]
    assert [item["type"] for item in summary.items] == [
        "reasoning",
        "message",
        "function_call",
        "function_call",
        "custom_tool_call",
    ]
    message = summary.items[1]
    assert [part["type"] for part in message["content"]] == [
        "output_text",
        "refusal",
        "output_text",
    ]
    assert summary.usage == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 17,
    }
    token = responses_reasoning.decode(summary.items[0]["encrypted_content"])
    assert token == responses_reasoning.Reasoning("p/m", "Let me think.", "sig-1")
    assert final == summary.response  # the non-streamed object is the terminal one


def test_the_non_streamed_object_is_the_streamed_one() -> None:
    _, streamed = render(RICH, tools=TOOLS)
    events, whole = render(RICH, tools=TOOLS, stream=False)
    assert events == []
    assert [i["type"] for i in whole["output"]] == [i["type"] for i in streamed["output"]]
    strip = {"id", "created_at", "completed_at", "output"}
    assert {k: v for k, v in whole.items() if k not in strip} == {
        k: v for k, v in streamed.items() if k not in strip
    }


def test_provider_data_on_a_call_rides_in_a_reasoning_item_before_it() -> None:
    extra = {"extra_content": {"google": {"thought_signature": "c2ln"}}}
    chunks = [
        Chunk(
            [Delta(tool_calls=[ToolCallDelta(0, id="c0", name="f", arguments="{}", extra=extra)])]
        ),
        Chunk([Delta(finish_reason="tool_calls")]),
    ]
    events, _ = render(chunks, tools=TOOLS)
    for event in events:
        validate_event(event)
    summary = check_responses_stream(events)
    assert [item["type"] for item in summary.items] == ["reasoning", "function_call"]
    token = responses_reasoning.decode(summary.items[0]["encrypted_content"])
    assert token is not None and token.call_extras == {"c0": extra}
    assert summary.items[0]["summary"] == []


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (RateLimited("slow down", code="rate_limit_exceeded"), "rate_limit_exceeded"),
        (BadGateway("context too long", code="context_length_exceeded"), "context_length_exceeded"),
        (GatewayTimeout("idle", code="idle_timeout"), "server_error"),
        (BadGateway("broke", code="upstream_error"), "server_error"),
    ],
)
def test_a_failure_after_the_first_byte_is_response_failed(error: Any, code: str) -> None:
    assert failed_code(error) == code
    events, _ = render(RICH[:6], error=error, tools=TOOLS)
    for event in events:
        validate_event(event)
    summary = check_responses_stream(events)
    assert summary.status == "failed"
    assert summary.error == {"code": code, "message": error.message}
    # what was whole before the failure stays completed; what it cut is incomplete
    assert [item["status"] for item in summary.items] == ["completed", "completed", "incomplete"]


def test_length_and_content_filter_are_incomplete() -> None:
    for finish, reason in (("length", "max_output_tokens"), ("content_filter", "content_filter")):
        events, _ = render([Chunk([Delta(text="a")]), Chunk([Delta(finish_reason=finish)])])
        for event in events:
            validate_event(event)
        summary = check_responses_stream(events)
        assert summary.status == "incomplete"
        assert summary.response["incomplete_details"] == {"reason": reason}


# -- the checker catches each broken rule --------------------------------------------------


def first(events: Events, kind: str) -> dict[str, Any]:
    return next(e for e in events if e["type"] == kind)


def remove(kind: str) -> Callable[[Events], None]:
    def mutate(events: Events) -> None:
        events.remove(first(events, kind))

    return mutate


def _renumber(events: Events) -> None:
    for n, event in enumerate(events):
        event["sequence_number"] = n


def _insert(events: Events, index: int, event: dict[str, Any]) -> None:
    events.insert(index, event)
    _renumber(events)


def _swap_first_two(events: Events) -> None:
    events[0], events[1] = events[1], events[0]
    _renumber(events)


def _set(kind: str, path: tuple[Any, ...], value: Any) -> Callable[[Events], None]:
    def mutate(events: Events) -> None:
        target: Any = first(events, kind)
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _bad_arguments(events: Events) -> None:
    """The first call's arguments are ``{bad`` everywhere they are said: consistent, not JSON."""
    call_id = first(events, "response.function_call_arguments.done")["item_id"]
    deltas = [
        e for e in events if e.get("item_id") == call_id and e["type"].endswith("arguments.delta")
    ]
    for n, event in enumerate(deltas):
        event["delta"] = "{bad" if n == 0 else ""
    first(events, "response.function_call_arguments.done")["arguments"] = "{bad"
    for event in events:
        item = event.get("item") or {}
        if item.get("id") == call_id and event["type"] == "response.output_item.done":
            item["arguments"] = "{bad"
    for item in _terminal(events)["output"]:
        if item["id"] == call_id:
            item["arguments"] = "{bad"


def _terminal(events: Events) -> dict[str, Any]:
    response: dict[str, Any] = events[-1]["response"]
    return response


MUTATIONS: dict[str, tuple[Callable[[Events], object], str]] = {
    "no sequence_number": (
        lambda e: e[3].pop("sequence_number"),
        "sequence_number None",
    ),
    "sequence not increasing": (
        lambda e: e[4].update(sequence_number=e[3]["sequence_number"]),
        "does not follow",
    ),
    "created not first": (_swap_first_two, "first event must be response.created"),
    "delta before its item": (
        lambda e: _insert(e, 2, {**first(e, "response.output_text.delta")}),
        "names no added item",
    ),
    "delta before its part": (remove("response.content_part.added"), "content_index 0 names no"),
    "text done differs": (
        _set("response.output_text.done", ("text",), "other"),
        "not the deltas joined",
    ),
    "no logprobs": (
        lambda e: first(e, "response.output_text.delta").pop("logprobs"),
        "logprobs is required",
    ),
    "item never done": (
        lambda e: e.remove([x for x in e if x["type"] == "response.output_item.done"][-1]),
        "never done",
    ),
    "wrong output_index": (
        lambda e: [x for x in e if x["type"] == "response.output_item.added"][1].update(
            output_index=5
        ),
        "output_index 5",
    ),
    "duplicate item id": (
        lambda e: [x for x in e if x["type"] == "response.output_item.added"][1]["item"].update(
            id=first(e, "response.output_item.added")["item"]["id"]
        ),
        "used twice",
    ),
    "no terminal": (lambda e: e.pop(), "ended without"),
    "two terminals": (
        lambda e: e.append({**e[-1], "sequence_number": e[-1]["sequence_number"] + 1}),
        "after the response ended",
    ),
    "output is not the items": (
        lambda e: _terminal(e)["output"].pop(),
        "output is not the done items",
    ),
    "usage incomplete": (
        lambda e: _terminal(e)["usage"].pop("output_tokens_details"),
        "reasoning_tokens None",
    ),
    "usage total wrong": (
        lambda e: _terminal(e)["usage"].update(total_tokens=1),
        "total_tokens is not input + output",
    ),
    "arguments not JSON": (_bad_arguments, "arguments are not a JSON object"),
    "item arguments differ": (
        lambda e: next(
            x
            for x in e
            if x["type"] == "response.output_item.done" and x["item"]["type"] == "function_call"
        )["item"].update(arguments='{"b": 2}'),
        "arguments differ",
    ),
    "failed without error": (
        lambda e: e[-1].update(type="response.failed") or _terminal(e).update(status="failed"),
        "needs error.code",
    ),
    "an error event": (
        lambda e: _insert(
            e,
            len(e) - 1,
            {"type": "error", "code": "x", "message": "m", "param": None, "sequence_number": 0},
        ),
        "an error event",
    ),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_the_checker_catches_a_broken_stream(case: str) -> None:
    events = copy.deepcopy(rich())
    check_responses_stream(events)  # the unbroken stream passes
    mutate, needle = MUTATIONS[case]
    mutate(events)
    with pytest.raises(AssertionError) as caught:
        check_responses_stream(events)
    assert needle in str(caught.value)


def test_parse_sse_checks_the_framing() -> None:
    good = 'event: response.created\ndata: {"type":"response.created"}\n\n'
    assert parse_responses_sse(good) == [{"type": "response.created"}]
    assert parse_responses_sse(good.replace("\n", "\r\n").encode()) == [
        {"type": "response.created"}
    ]
    for bad, needle in [
        ('event: x\ndata: {"type":"y"}\n\n', "is not its type"),
        ("data: [DONE]\n\n", "no [DONE]"),
        ("data: {nope\n\n", "not JSON"),
        ("event: x\n\n", "no data"),
        ("data: [1]\n\n", "not a JSON object"),
    ]:
        with pytest.raises(AssertionError) as caught:
            parse_responses_sse(bad)
        assert needle in str(caught.value)
