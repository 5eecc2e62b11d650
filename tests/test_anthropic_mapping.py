"""The anthropic provider's mappings, without a network: OpenAI chat request -> Messages body,
and Messages events / messages -> the normalized stream, over the stand-in's fixtures.

Every fixture event, folded message and error body is checked against the ``anthropic`` SDK's
own types, and every mapped request body against its request params, so that neither the
fakes nor the mapping can drift from the wire.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anthropic
import orjson
import pydantic
import pytest
from anthropic.types.message_create_params import MessageCreateParamsStreaming

from gateway.surfaces.chat_render import Aggregator, ChunkRenderer
from providers.anthropic_request import RequestPolicy, messages_body
from providers.anthropic_stream import EventReader, message_to_chunks
from providers.base import Chunk, Delta
from providers.errors import UnsupportedRequest, UpstreamProtocolError, UpstreamStreamError
from tests.support.anthropic_upstream import (
    ERROR_TYPES,
    REDACTED,
    SIGNATURE,
    TOOLS,
    USAGE_EXPECTED,
    fold,
    scenario_events,
)

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "model_context_window_exceeded": "length",
}
FIXTURES = [
    *("text", "thinking", "redacted", "tools", "tools-interleaved", "noarg", "pings", "usage"),
    *(f"stop:{reason}" for reason in STOP_REASONS),
]
BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "one two three"}]}
EVENT = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
PARAMS = pydantic.TypeAdapter(MessageCreateParamsStreaming)


def read(events: Iterable[dict[str, Any]], *, redact: Any = str) -> list[Chunk]:
    reader = EventReader(redact=redact)
    chunks = [chunk for event in events if (chunk := reader.read(event)) is not None]
    assert reader.finished
    return chunks


def deltas(chunks: list[Chunk]) -> list[Delta]:
    return [delta for chunk in chunks for delta in chunk.deltas]


def aggregate(chunks: list[Chunk]) -> dict[str, Any]:
    """The chat completion the gateway makes of ``chunks``, without its id and time."""
    aggregator = Aggregator()
    for chunk in chunks:
        aggregator.add(chunk)
    completion = aggregator.completion(renderer=ChunkRenderer(model="m"))
    for choice in completion["choices"]:  # the same arguments, whatever their spacing
        for call in choice["message"].get("tool_calls") or ():
            call["function"]["arguments"] = orjson.loads(call["function"]["arguments"])
    return {k: v for k, v in completion.items() if k not in ("id", "created")}


def body(model: str = "claude-x", **fields: Any) -> dict[str, Any]:
    return messages_body({**BODY, **fields}, model=model, stream=True, policy=RequestPolicy())


def materialized(value: Any) -> Any:
    """A validated value with pydantic's lazy iterables (``Iterable[...]`` fields) read out,
    which validates them; unknown keys are gone, so the result equals the input only if the
    input had none."""
    if isinstance(value, dict):
        return {k: materialized(v) for k, v in value.items()}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return [materialized(v) for v in value]


def assert_valid_request(sent: dict[str, Any]) -> None:
    # temperature and top_p left the SDK's types in 1.0 (deprecated); older models take them.
    rest = {k: v for k, v in sent.items() if k not in ("temperature", "top_p")}
    assert materialized(PARAMS.validate_python(rest)) == rest


# -- the fixtures are what the SDK accepts ------------------------------------------------


@pytest.mark.parametrize("scenario", FIXTURES)
def test_every_fixture_event_is_valid_for_the_anthropic_sdk(scenario: str) -> None:
    events = scenario_events(scenario, BODY)
    for event in events:
        if event["type"] == "ping":  # the SDK skips pings before validating anything
            assert event == {"type": "ping"}
            continue
        assert EVENT.validate_python(event).type == event["type"]
    message = anthropic.types.Message.model_validate(fold(events))
    last_delta = [e for e in events if e["type"] == "message_delta"][-1]
    assert message.stop_reason == last_delta["delta"]["stop_reason"]


@pytest.mark.parametrize("status", sorted(ERROR_TYPES))
def test_error_fixtures_are_valid_anthropic_error_bodies(status: int) -> None:
    error = {"type": "error", "error": {"type": ERROR_TYPES[status], "message": "m"}}
    assert anthropic.types.ErrorResponse.model_validate(error).error.type == ERROR_TYPES[status]


# -- request mapping ----------------------------------------------------------------------


def test_system_and_developer_messages_become_the_top_level_system() -> None:
    sent = body(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "Later rule."},
            {"role": "user", "content": "again"},
        ]
    )
    texts = ["Be brief.", "Use French.", "Later rule."]
    assert sent["system"] == [{"type": "text", "text": t} for t in texts]
    # No system role among the turns; the two user messages are one turn.
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}],
        }
    ]
    assert_valid_request(sent)


def test_images_map_to_base64_and_url_sources() -> None:
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}},
    ]
    sent = body(messages=[{"role": "user", "content": content}])
    blocks = sent["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert blocks[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
    }
    assert blocks[3]["type"] == "document"
    assert blocks[3]["source"]["media_type"] == "application/pdf"
    assert_valid_request(sent)


@pytest.mark.parametrize(
    "url",
    ["data:image/bmp;base64,Qk0=", "http://example.com/cat.jpg", "data:image/png,notbase64"],
)
def test_images_anthropic_cannot_take_are_a_400(url: str) -> None:
    part = {"type": "image_url", "image_url": {"url": url}}
    with pytest.raises(UnsupportedRequest) as caught:
        body(messages=[{"role": "user", "content": [part]}])
    assert caught.value.status == 400 and "messages[0].content[0]" in caught.value.message


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_tool_calls_and_tool_results_map_and_merge() -> None:
    sent = body(
        messages=[
            {"role": "user", "content": "weather and time?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    _call("c1", "get_weather", '{"city": "Paris"}'),
                    _call("c2", "get_time", ""),
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": "thanks"},
        ]
    )
    assistant, results = sent["messages"][1], sent["messages"][2]
    assert assistant["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "c2", "name": "get_time", "input": {}},
    ]
    # Consecutive tool messages and the user's words: one user turn, tool results first.
    assert len(sent["messages"]) == 3 and results["role"] == "user"
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "c2", "content": [{"type": "text", "text": "noon"}]},
        {"type": "text", "text": "thanks"},
    ]
    assert_valid_request(sent)


@pytest.mark.parametrize("arguments", ['{"city": "Par', "[1, 2]", '"text"'])
def test_tool_call_arguments_that_are_not_a_json_object_are_a_400(arguments: str) -> None:
    message = {"role": "assistant", "content": None, "tool_calls": [_call("c1", "f", arguments)]}
    with pytest.raises(UnsupportedRequest) as caught:
        body(messages=[{"role": "user", "content": "x"}, message])
    error = caught.value
    assert (error.status, error.client_fault, error.retryable) == (400, True, False)
    assert "messages[1].tool_calls[0].function.arguments" in error.message


def test_regression_openai_agents_1704_replayed_turn_starts_with_signed_thinking() -> None:
    """Thinking + tools: the replayed assistant turn must open with its signed thinking block."""
    replay = {
        "role": "assistant",
        "content": "Let me look.",
        "reasoning_content": "I should call the tool.",
        "reasoning_signature": SIGNATURE,
        "tool_calls": [_call("c1", "get_time", "{}")],
    }
    sent = body(messages=[{"role": "user", "content": "time?"}, replay])
    assert sent["messages"][1]["content"][0] == {
        "type": "thinking",
        "thinking": "I should call the tool.",
        "signature": SIGNATURE,
    }
    assert [b["type"] for b in sent["messages"][1]["content"]] == ["thinking", "text", "tool_use"]
    assert_valid_request(sent)
    # LiteLLM's thinking_blocks carry several blocks, redacted ones too, in their order.
    blocks = [
        {"type": "redacted_thinking", "data": REDACTED},
        {"type": "thinking", "thinking": "t", "signature": SIGNATURE},
    ]
    sent = body(
        messages=[
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "y", "thinking_blocks": blocks},
        ]
    )
    assert sent["messages"][1]["content"][:2] == blocks
    # Unsigned reasoning cannot be replayed to Anthropic: it is dropped.
    unsigned = {"role": "assistant", "content": "y", "reasoning_content": "thought"}
    sent = body(messages=[{"role": "user", "content": "x"}, unsigned])
    assert sent["messages"][1]["content"] == [{"type": "text", "text": "y"}]


PARAMETERS = {"type": "object", "properties": {"a": {"type": "string"}}}
TOOL = {"type": "function", "function": {"name": "f", "description": "d", "parameters": PARAMETERS}}


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("none", False, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
def test_tools_and_tool_choice(choice: Any, parallel: Any, expected: Any) -> None:
    fields: dict[str, Any] = {"tools": [TOOL, {"type": "function", "function": {"name": "g"}}]}
    if choice is not None:
        fields["tool_choice"] = choice
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    sent = body(**fields)
    assert sent["tools"] == [
        {"name": "f", "description": "d", "input_schema": PARAMETERS},
        {"name": "g", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert sent.get("tool_choice") == expected
    assert_valid_request(sent)


def test_scalars_map_and_unknown_fields_are_dropped() -> None:
    sent = body(
        "claude-sonnet-4-5",
        temperature=0.3,
        stop="END",
        user="user-7",
        seed=1,
        presence_penalty=0.5,
        logit_bias={"1": 2},
        service_tier="auto",
        store=True,
        n=1,
        logprobs=False,
    )
    assert sent == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "one two three"}]}],
        "max_tokens": 4096,
        "temperature": 0.3,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-7"},
        "stream": True,
    }
    assert_valid_request(sent)


def test_sampling_goes_only_to_models_that_still_take_it() -> None:
    """Anthropic deprecated temperature and top_p; later models refuse them (nanobot#329)."""
    for model in ("claude-3-5-haiku-latest", "claude-sonnet-4-5", "claude-opus-4-1-20250805"):
        assert body(model, temperature=0.2)["temperature"] == 0.2
    for model in ("claude-opus-4-7", "claude-fable-5"):
        assert "temperature" not in body(model, temperature=0.2, top_p=0.5)
        assert "top_p" not in body(model, top_p=0.5)
    with pytest.raises(UnsupportedRequest):  # out of range is the client's error anywhere
        body("claude-opus-4-7", temperature=1.2)


def test_max_tokens_comes_from_the_client_else_the_models_default() -> None:
    policy = RequestPolicy(max_tokens=1000, max_tokens_by_model={"claude-big": 64000})
    assert messages_body(BODY, model="claude-x", stream=True, policy=policy)["max_tokens"] == 1000
    assert (
        messages_body(BODY, model="claude-big", stream=True, policy=policy)["max_tokens"] == 64000
    )
    given = {**BODY, "max_tokens": 50, "max_completion_tokens": 70}
    assert messages_body(given, model="claude-big", stream=True, policy=policy)["max_tokens"] == 70


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"temperature": 1.5}, "temperature must be between 0 and 1"),
        ({"n": 2}, "n must be 1"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "logprobs"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"response_format": {"type": "json_object"}}, "json_object"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input_audio"),
        ({"functions": [{"name": "f"}]}, "functions"),
    ],
)
def test_what_anthropic_cannot_do_is_a_400_naming_it(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(UnsupportedRequest) as caught:
        body(**fields)
    assert caught.value.status == 400 and where in caught.value.message


def test_regression_litellm_15097_temperature_and_top_p_are_not_sent_together() -> None:
    sent = body("claude-sonnet-4-5", temperature=0.5, top_p=0.9)
    assert sent["temperature"] == 0.5 and "top_p" not in sent
    assert body("claude-sonnet-4-5", top_p=0.9)["top_p"] == 0.9
    both = RequestPolicy(no_top_p_with_temperature=("claude-sonnet-4-5*",))
    sent = messages_body(
        {**BODY, "temperature": 0.5, "top_p": 0.9}, model="claude-3-opus", stream=True, policy=both
    )
    assert (sent["temperature"], sent["top_p"]) == (0.5, 0.9)


def test_reasoning_effort_becomes_a_thinking_budget_or_adaptive_effort() -> None:
    sent = body(reasoning_effort="medium")
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert sent["max_tokens"] == 4096 + 8192  # the answer keeps the default's room
    assert_valid_request(sent)
    cut = body(reasoning_effort="high", max_tokens=3000)
    assert (cut["thinking"]["budget_tokens"], cut["max_tokens"]) == (2999, 3000)
    assert "thinking" not in body(reasoning_effort="none")
    with pytest.raises(UnsupportedRequest, match="max_tokens above 1024"):
        body(reasoning_effort="low", max_tokens=1024)
    adaptive = RequestPolicy(adaptive_thinking_models=("claude-opus-5*",))
    sent = messages_body(
        {**BODY, "reasoning_effort": "minimal"}, model="claude-opus-5", stream=True, policy=adaptive
    )
    assert (sent["thinking"], sent["output_config"]) == ({"type": "adaptive"}, {"effort": "low"})
    assert_valid_request(sent)


def test_response_format_json_schema_becomes_output_config_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    sent = body(
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    )
    assert sent["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert_valid_request(sent)


# -- stream mapping -----------------------------------------------------------------------


def test_text_streams_as_text_with_the_finish_and_usage_at_message_stop() -> None:
    chunks = read(scenario_events("text", BODY))
    assert "".join(d.text or "" for d in deltas(chunks)) == "one two three"
    assert all(c.usage is None and not c.deltas[0].finish_reason for c in chunks[:-1])
    last = chunks[-1]
    assert (last.deltas[0].finish_reason, last.deltas[0].stop_reason) == ("stop", "end_turn")
    assert last.usage is not None and (last.usage.input_tokens, last.usage.output_tokens) == (12, 9)


def test_regression_open_webui_29860_thinking_and_its_signature_are_kept() -> None:
    chunks = read(scenario_events("thinking", BODY))
    assert "".join(d.reasoning or "" for d in deltas(chunks)) == "Let me think."
    assert [d.reasoning_signature for d in deltas(chunks) if d.reasoning_signature] == [SIGNATURE]
    redacted = read(scenario_events("redacted", BODY))
    assert [d.redacted_reasoning for d in deltas(redacted) if d.redacted_reasoning] == [REDACTED]


def test_regression_any_llm_1291_thinking_tokens_are_counted() -> None:
    usage = read(scenario_events("thinking", BODY))[-1].usage
    assert usage is not None and usage.reasoning_tokens == 4
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def _calls(chunks: list[Chunk]) -> dict[int, dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas(chunks):
        for call in delta.tool_calls or ():
            entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += call.id or ""
            entry["name"] += call.name or ""
            entry["arguments"] += call.arguments
    return calls


@pytest.mark.parametrize("scenario", ["tools", "tools-interleaved"])
def test_regression_litellm_5231_tool_index_is_the_gateways_not_the_block_index(
    scenario: str,
) -> None:
    calls = _calls(read(scenario_events(scenario, BODY)))
    # In "tools" the calls are blocks 1-3 after a text block; here they are 0, 1, 2.
    assert sorted(calls) == [0, 1, 2]
    for k, (call_id, name, _, arguments) in enumerate(TOOLS):
        assert (calls[k]["id"], calls[k]["name"]) == (call_id, name)
        # ai-gateway#1465 (no "{}" prefix) and litellm#36262 (no lost or merged pieces).
        assert orjson.loads(calls[k]["arguments"]) == arguments


def test_regression_litellm_5063_a_tool_without_arguments_gets_an_empty_object() -> None:
    chunks = read(scenario_events("noarg", BODY))
    assert [c["arguments"] for c in _calls(chunks).values()] == ["{}", "{}"]
    assert chunks[-1].deltas[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(("reason", "finish"), sorted(STOP_REASONS.items()))
def test_regression_turnstone_1162_every_stop_reason_is_mapped_and_kept_raw(
    reason: str, finish: str
) -> None:
    last = read(scenario_events(f"stop:{reason}", BODY))[-1].deltas[0]
    assert (last.finish_reason, last.stop_reason) == (finish, reason)
    if reason == "stop_sequence":
        assert last.extra == {"stop_sequence": "END"}


def test_regression_bifrost_3638_finish_is_tool_calls_exactly_when_calls_were_made() -> None:
    calls = scenario_events("noarg", BODY)
    turn_end = [e for e in calls if e["type"] != "message_delta"]
    turn_end.insert(
        -1,
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 1},
        },
    )
    last = read(turn_end)[-1].deltas[0]
    assert (last.finish_reason, last.stop_reason) == ("tool_calls", "end_turn")
    text = [e for e in scenario_events("text", BODY) if e["type"] != "message_delta"]
    text.insert(
        -1,
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 1},
        },
    )
    last = read(text)[-1].deltas[0]
    assert (last.finish_reason, last.stop_reason) == ("stop", "tool_use")
    cut = [e for e in calls if e["type"] != "message_delta"]
    cut.insert(
        -1,
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens"},
            "usage": {"output_tokens": 1},
        },
    )
    assert read(cut)[-1].deltas[0].finish_reason == "length"


def test_regression_agno_6624_usage_is_cumulative_last_value_wins() -> None:
    chunks = read(scenario_events("usage", BODY))
    usage = chunks[-1].usage
    assert usage is not None
    got = {
        "input": usage.input_tokens,
        "cached": usage.cached_tokens,
        "cache_write": usage.cache_write_tokens,
        "output": usage.output_tokens,
    }
    assert got == USAGE_EXPECTED  # litellm#5364: cache reads and writes survive too


def test_pings_unknown_events_and_server_tool_blocks_make_nothing() -> None:
    events = scenario_events("pings", BODY)
    assert [d.text for d in deltas(read(events)) if d.text] == ["one ", "two ", "three"]
    server_tool = [
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {
                "type": "server_tool_use",
                "id": "srvtoolu_1",
                "name": "web_search",
                "input": {},
            },
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"q": "x"}'},
        },
        {"type": "content_block_stop", "index": 1},
        {"type": "some_future_event", "data": 1},
    ]
    for event in server_tool[:3]:
        EVENT.validate_python(event)
    text = scenario_events("text", BODY)
    chunks = read([*text[:-2], *server_tool, *text[-2:]])
    assert not _calls(chunks)  # server tools are never the client's tool calls


def test_regression_litellm_4562_error_event_is_an_error_never_a_finish() -> None:
    key = "sk-ant-api03-SECRETSECRETSECRET"
    events = scenario_events("text", BODY)[:4]
    error = {"type": "error", "error": {"type": "overloaded_error", "message": f"Overloaded {key}"}}
    reader = EventReader(redact=lambda text: text.replace(key, "[redacted]"))
    produced = [reader.read(event) for event in events]
    with pytest.raises(UpstreamStreamError) as caught:
        reader.read(error)
    assert all(c is None or not c.deltas[0].finish_reason for c in produced)
    assert "overloaded_error" in caught.value.message and key not in caught.value.message
    assert not caught.value.retryable  # text went out already: a retry would repeat it
    # Right after message_start nothing went out: trying again is safe.
    early = EventReader()
    early.read(events[0])
    with pytest.raises(UpstreamStreamError) as caught:
        early.read(error)
    assert caught.value.retryable


@pytest.mark.parametrize(
    "events",
    [
        [
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        ],
        [
            {"type": "message_start", "message": {}},
            {
                "type": "content_block_delta",
                "index": 5,
                "delta": {"type": "text_delta", "text": "x"},
            },
        ],
        [
            {"type": "message_start", "message": {}},
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": 5},
            },
        ],
    ],
)
def test_events_out_of_order_or_shape_are_malformed(events: list[dict[str, Any]]) -> None:
    reader = EventReader()
    with pytest.raises(UpstreamProtocolError) as caught:
        for event in events:
            reader.read(event)
    assert caught.value.code == "upstream_malformed"


@pytest.mark.parametrize("scenario", FIXTURES)
def test_a_whole_message_gives_what_its_stream_gives(scenario: str) -> None:
    events = scenario_events(scenario, BODY)
    streamed, whole = read(events), message_to_chunks(fold(events))
    assert aggregate(whole) == aggregate(streamed)
    assert whole[-1].usage == streamed[-1].usage
    assert whole[-1].deltas[0].stop_reason == streamed[-1].deltas[0].stop_reason
    signatures = [
        [d.reasoning_signature for d in deltas(c) if d.reasoning_signature]
        for c in (streamed, whole)
    ]
    assert signatures[0] == signatures[1]
