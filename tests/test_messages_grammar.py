"""The conformance kit's Messages grammar checker, and the surface's renderer and request
mapping on their own (no I/O).

The checker must accept what Anthropic sends (the stand-in's scenarios, validated against the
SDK's event types) and refuse each broken stream peers shipped (PROVIDERS.md §6: #2, #3, #4,
#6, #11, #12, #22); the renderer must give, for any normalized stream, events the checker
accepts, and the same answer folded as streamed.
"""

from __future__ import annotations

import copy
from typing import Any

import anthropic
import pytest
from pydantic import TypeAdapter

from gateway.errors import InvalidRequest
from gateway.surfaces.messages_ids import join_tool_id, split_signature, split_tool_id
from gateway.surfaces.messages_render import MessageRenderer
from gateway.surfaces.messages_request import Target, parse_messages_request
from gateway.surfaces.messages_tokens import estimate_tokens
from providers.base import Chunk, Delta, ToolCallDelta, Usage
from providers.errors import UpstreamProtocolError
from providers.testing import check_messages_stream, parse_messages_sse
from tests.support.anthropic_upstream import scenario_events

EVENT = TypeAdapter(anthropic.types.RawMessageStreamEvent)
BODY = {"messages": [{"role": "user", "content": "one two"}]}


def good() -> list[dict[str, Any]]:
    return scenario_events("tools", BODY)


# --- the checker ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scenario",
    ["text", "thinking", "redacted", "tools", "tools-interleaved", "noarg", "pings", "usage"],
)
def test_checker_accepts_what_anthropic_sends(scenario: str) -> None:
    events = scenario_events(scenario, BODY)
    for event in events:
        if event["type"] != "ping":  # not in the SDK's union: its stream skips them
            EVENT.validate_python(event)
    summary = check_messages_stream(events)
    assert summary.stop_reason is not None and summary.error is None


def test_checker_reads_sse_and_refuses_a_name_that_is_not_the_type() -> None:
    text = "".join(f"event: {e['type']}\ndata: {__import__('json').dumps(e)}\n\n" for e in good())
    assert check_messages_stream(parse_messages_sse(text.replace("\n", "\r\n"))).tools
    broken = text.replace("event: message_stop", "event: message_end", 1)
    with pytest.raises(AssertionError, match="is not its type"):
        parse_messages_sse(broken)


def _break(events: list[dict[str, Any]], how: str) -> list[dict[str, Any]]:
    events = copy.deepcopy(events)
    starts = [i for i, e in enumerate(events) if e["type"] == "content_block_start"]
    if how == "two message_start":  # bug #22
        events.insert(1, events[0])
    elif how == "index from 1":
        for e in events:
            if "index" in e:
                e["index"] += 1
    elif how == "all tools at index 0":  # bug #2
        for e in events:
            if "index" in e and e["index"] > 1:
                e["index"] = 1
    elif how == "{} prefix":  # bug #3
        first_args = next(e for e in events if e.get("delta", {}).get("type") == "input_json_delta")
        first_args["delta"]["partial_json"] = "{}" + first_args["delta"]["partial_json"]
    elif how == "stop not tool_use":  # bug #6
        next(e for e in events if e["type"] == "message_delta")["delta"]["stop_reason"] = "end_turn"
    elif how == "no message_stop":
        events.pop()
    elif how == "block left open":
        events.pop(next(i for i, e in enumerate(events) if e["type"] == "content_block_stop"))
    elif how == "delta of another kind":
        text_delta = next(e for e in events if e.get("delta", {}).get("type") == "text_delta")
        text_delta["delta"] = {"type": "input_json_delta", "partial_json": "{"}
    elif how == "error after end_turn":  # bug #12
        events[-1] = {"type": "error", "error": {"type": "api_error", "message": "x"}}
    elif how == "event after message_stop":
        events.append(events[starts[0]])
    return events


@pytest.mark.parametrize(
    ("how", "rule"),
    [
        ("two message_start", "second message_start"),
        ("index from 1", "expected 0"),
        ("all tools at index 0", "expected 2"),
        ("{} prefix", "not JSON"),
        ("stop not tool_use", "after tool blocks"),
        ("no message_stop", "without message_stop"),
        ("block left open", "still open"),
        ("delta of another kind", "in a 'text' block"),
        ("error after end_turn", "failed after it said stop_reason"),
        ("event after message_stop", "after message_stop"),
    ],
)
def test_checker_refuses_peers_bugs(how: str, rule: str) -> None:
    with pytest.raises(AssertionError, match=rule):
        check_messages_stream(_break(good(), how))


def test_checker_refuses_thinking_after_text() -> None:
    """Bug #11."""
    text = scenario_events("text", BODY)
    thinking = scenario_events("thinking", BODY)
    late = [e for e in thinking if e.get("index") == 0 and e["type"].startswith("content_block")]
    for e in late:
        e["index"] = 1
    events = [*text[:-2], *late, *text[-2:]]
    with pytest.raises(AssertionError, match="after a text or tool block"):
        check_messages_stream(events)


def test_checker_refuses_a_tool_block_while_thinking_is_open() -> None:
    events = scenario_events("thinking", BODY)
    stop = next(i for i, e in enumerate(events) if e == {"type": "content_block_stop", "index": 0})
    events.insert(len(events) - 2, events.pop(stop))
    with pytest.raises(AssertionError, match="thinking block \\[0\\] is open"):
        check_messages_stream(events)


def test_checker_accepts_an_error_ending_and_reports_it() -> None:
    events = scenario_events("text", BODY)[:3]
    events.append({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    summary = check_messages_stream(events)
    assert summary.error is not None and summary.error["type"] == "overloaded_error"


# --- the renderer -----------------------------------------------------------------------------


def render(
    chunks: list[Chunk], *, signer: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The streamed events (checked) and the folded message of one normalized stream."""
    streamed = MessageRenderer(model="m", input_estimate=5, signer=signer)
    body = streamed.start() + b"".join(streamed.render(c) for c in chunks) + streamed.end()
    events = parse_messages_sse(body)
    check_messages_stream(events)
    for event in events:
        EVENT.validate_python(event)
    whole = MessageRenderer(model="m", input_estimate=5, signer=signer, collect=True)
    whole.start()
    for chunk in chunks:
        whole.render(chunk)
    whole.end()
    return events, whole.message()


def finish(reason: str = "stop", **extra: Any) -> Chunk:
    return Chunk(deltas=[Delta(finish_reason=reason, **extra)], usage=Usage(10, 3, cached_tokens=4))


def test_two_signed_thinking_blocks_then_text_and_tools() -> None:
    chunks = [
        Chunk([Delta(reasoning="a")]),
        Chunk([Delta(reasoning="b", reasoning_signature="sig1")]),
        Chunk([Delta(reasoning="c")]),
        Chunk([Delta(reasoning_signature="sig2")]),
        Chunk([Delta(redacted_reasoning="opaque")]),
        Chunk([Delta(text="Hi")]),
        Chunk([Delta(tool_calls=[ToolCallDelta(0, id="t0", name="f", arguments='{"x"')])]),
        Chunk([Delta(tool_calls=[ToolCallDelta(1, id="t1", name="g")])]),
        Chunk([Delta(tool_calls=[ToolCallDelta(0, arguments=": 1}")])]),
        Chunk([Delta(text=" again", reasoning="too late")]),
        finish("stop"),
    ]
    events, message = render(chunks)
    summary = check_messages_stream(events)
    assert summary.blocks == [
        "thinking",
        "thinking",
        "redacted_thinking",
        "text",
        "tool_use",
        "tool_use",
        "text",
    ]
    assert [(t.thinking, t.signature) for t in summary.thinking[:2]] == [
        ("ab", "sig1"),
        ("c", "sig2"),
    ]
    assert summary.stop_reason == "tool_use"
    assert [b["type"] for b in message["content"]] == summary.blocks
    assert message["content"][4]["input"] == {"x": 1} and message["content"][5]["input"] == {}
    assert message["content"][0] == {"type": "thinking", "thinking": "ab", "signature": "sig1"}
    assert message["usage"] == {
        "input_tokens": 6,
        "output_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 4,
    }
    signature_at = [
        i for i, e in enumerate(events) if e.get("delta", {}).get("type") == "signature_delta"
    ]
    assert all(events[i + 1]["type"] == "content_block_stop" for i in signature_at)


def test_other_providers_thinking_is_tagged_with_their_name() -> None:
    _, message = render(
        [Chunk([Delta(reasoning="r")]), Chunk([Delta(text="t")]), finish()], signer="local"
    )
    assert message["content"][0]["signature"] == "llmgw:local:"
    assert split_signature(message["content"][0]["signature"]) == ("local", "")


@pytest.mark.parametrize(
    ("finish_reason", "raw", "expected"),
    [
        ("stop", None, "end_turn"),
        ("length", None, "max_tokens"),
        ("content_filter", None, "refusal"),
        ("tool_calls", None, "end_turn"),  # no tool block was sent
        ("stop", "pause_turn", "pause_turn"),
        ("length", "model_context_window_exceeded", "model_context_window_exceeded"),
        ("stop", "STOP", "end_turn"),  # another provider's word
    ],
)
def test_stop_reasons(finish_reason: str, raw: str | None, expected: str) -> None:
    _, message = render([Chunk([Delta(text="x")]), finish(finish_reason, stop_reason=raw)])
    assert message["stop_reason"] == expected


def test_a_stream_without_a_finish_is_an_error_not_end_turn() -> None:
    renderer = MessageRenderer(model="m", input_estimate=0, signer=None)
    renderer.start()
    renderer.render(Chunk([Delta(text="x")]))
    with pytest.raises(UpstreamProtocolError):
        renderer.end()


def test_invalid_tool_json_in_a_whole_answer_is_an_upstream_fault() -> None:
    renderer = MessageRenderer(model="m", input_estimate=0, signer=None, collect=True)
    renderer.start()
    renderer.render(Chunk([Delta(tool_calls=[ToolCallDelta(0, id="a", name="f", arguments="[1")])]))
    renderer.render(finish("tool_calls"))
    renderer.end()
    with pytest.raises(UpstreamProtocolError):
        renderer.message()


# --- ids --------------------------------------------------------------------------------------


def test_tool_ids_carry_geminis_signature_and_give_it_back() -> None:
    signature = "c2lnbmVk+/=="
    joined = join_tool_id("call_1", signature)
    assert all(ch.isalnum() or ch in "_-" for ch in joined)  # Anthropic's id pattern
    assert split_tool_id(joined) == ("call_1", signature)
    assert join_tool_id("call_1", None) == "call_1"
    assert split_tool_id("toolu_01A") == ("toolu_01A", None)
    assert split_tool_id("gsig99_short") == ("gsig99_short", None)


# --- the request ------------------------------------------------------------------------------


def parse(**body: Any) -> Any:
    return parse_messages_request(
        __import__("json").dumps({"model": "m", "max_tokens": 100, **body}).encode()
    )


PNG = "iVBORw0KGgo="


def test_user_content_blocks_become_openai_parts() -> None:
    request = parse(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/a.png"},
                    },
                    {
                        "type": "document",
                        "source": {
                            "type": "base64",
                            "media_type": "application/pdf",
                            "data": "JVBE",
                        },
                    },
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "notes"},
                    },
                ],
            }
        ]
    )
    assert request.body_for(Target("other", "x"))["messages"][0]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}},
        {"type": "text", "text": "notes"},
    ]


def test_images_in_tool_results_follow_as_a_user_message() -> None:
    request = parse(
        messages=[
            {"role": "user", "content": "shot"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "screen", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [
                            {"type": "text", "text": "here"},
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": PNG,
                                },
                            },
                        ],
                        "is_error": False,
                    }
                ],
            },
        ]
    )
    messages = request.body_for(Target("other", "x"))["messages"]
    assert messages[1]["tool_calls"][0]["function"] == {"name": "screen", "arguments": "{}"}
    assert messages[2] == {"role": "tool", "tool_call_id": "t", "content": "here"}
    assert messages[3]["role"] == "user" and messages[3]["content"][0]["type"] == "image_url"


def test_parameters_and_tool_choice() -> None:
    request = parse(
        messages=[{"role": "user", "content": "x"}],
        temperature=0.5,
        top_p=0.9,
        top_k=5,
        stop_sequences=["END"],
        tools=[{"name": "f", "input_schema": {"type": "object"}}],
        tool_choice={"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        thinking={"type": "enabled", "budget_tokens": 20000},
    )
    body = request.body_for(Target("other", "x"))
    assert body["temperature"] == 0.5 and body["top_p"] == 0.9 and "top_k" not in body
    assert body["stop"] == ["END"] and body["max_tokens"] == 100
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert body["parallel_tool_calls"] is False
    assert "reasoning_effort" not in body  # not an upstream that maps it
    assert request.body_for(Target("gemini", "g"))["reasoning_effort"] == "high"
    assert "reasoning_effort" not in request.body_for(Target("anthropic", "a"))  # 100 < 1025


@pytest.mark.parametrize(
    ("choice", "expected"),
    [({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none")],
)
def test_tool_choice_words(choice: dict[str, Any], expected: str) -> None:
    request = parse(
        messages=[{"role": "user", "content": "x"}],
        tools=[{"name": "f", "input_schema": {"type": "object"}}],
        tool_choice=choice,
    )
    assert request.body_for(Target("other", "x"))["tool_choice"] == expected


def test_what_goes_upstream_has_every_surfaces_guards() -> None:
    """Tool inputs and schemas pass as they are, so they get the nesting limit every surface
    has (an upstream's serializer would fail on them); a schema may name any property."""
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(200):
        deep = {"type": "object", "properties": {"x": deep}}
    with pytest.raises(InvalidRequest, match="nested too deeply"):
        parse(
            messages=[{"role": "user", "content": "x"}], tools=[{"name": "f", "input_schema": deep}]
        )
    parse(
        messages=[{"role": "user", "content": "x"}],
        tools=[{"name": "f", "input_schema": {"type": "object", "properties": {"headers": {}}}}],
    )


def test_prompt_estimate_is_on_the_parsed_request_and_grows() -> None:
    small = parse(messages=[{"role": "user", "content": "hi"}])
    image = parse(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                ],
            }
        ]
    )
    assert 0 < small.prompt_tokens < image.prompt_tokens and small.max_tokens == 100
    assert estimate_tokens({"messages": [{"role": "user", "content": "x" * 3500}]}) == 1004


def test_several_text_blocks_stay_apart_and_tool_results_read_any_block() -> None:
    request = parse(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                    {"type": "text", "text": "Do it."},
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "ToolSearch", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [
                            {"type": "tool_reference", "tool_name": "Grep"},
                            {"type": "search_result", "source": "s", "title": "t", "content": []},
                        ],
                        "is_error": True,
                    }
                ],
            },
        ]
    )
    messages = request.body_for(Target("other", "x"))["messages"]
    assert messages[0]["content"] == [
        {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
        {"type": "text", "text": "Do it."},
    ]
    assert messages[2]["content"].split("\n")[0] == "Tool available: Grep"
    assert '"search_result"' in messages[2]["content"]
