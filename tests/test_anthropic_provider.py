"""The anthropic provider through a real gateway, against the stand-in Anthropic API over
loopback, with the openai SDK as client (and the anthropic SDK checking the stand-in).

The provider TYPE is registered for these tests by patching the registry's table, as a
plugin would join it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from providers import anthropic as anthropic_provider
from providers.base import Chunk
from providers.testing import (
    chat_request,
    check_aclose,
    check_cancellation,
    check_spec,
    check_stream,
    collect,
    open_provider,
)
from tests.conftest import GatewayFactory, post_chat, sse_data
from tests.support.anthropic_upstream import (
    REDACTED,
    SIGNATURE,
    TOOLS,
    USAGE_EXPECTED,
    AnthropicUpstream,
    serve_anthropic_upstream,
)
from tests.support.clients import sdk
from tests.support.openapi_spec import validate
from tests.support.servers import free_port

KEY = "sk-ant-api03-canary-0123456789abcdefXYZ"
CLIENT_KEY = "client-key-abc"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "one two three"}]
MODELS = [
    *("text", "text+crlf", "text+split", "pings", "thinking", "redacted", "usage", "noarg"),
    *("tools", "tools+split", "tools-interleaved", "error-event:1", "error-event:4"),
    *("truncate:-1", "truncate:3", "flaky:529:2", "flaky:429:1", "status:400", "status:401"),
    *("status:429:30", "status:529", "stop:pause_turn", "stop:model_context_window_exceeded"),
    *("stop:refusal", "stop:max_tokens", "stop:stop_sequence"),
]


@pytest.fixture(scope="module")
def stand_in() -> Iterator[tuple[str, AnthropicUpstream]]:
    with serve_anthropic_upstream() as served:
        yield served


@pytest.fixture
def upstream(stand_in: tuple[str, AnthropicUpstream]) -> AnthropicUpstream:
    stand_in[1].reset()
    return stand_in[1]


@pytest.fixture
def gateway(
    make_gateway: GatewayFactory,
    stand_in: tuple[str, AnthropicUpstream],
    upstream: AnthropicUpstream,
) -> str:
    claude = {
        "type": "anthropic",
        "base_url": stand_in[0],
        "api_key": KEY,
        "models": MODELS,
        "betas": ["beta-one", "beta-two"],
        "max_tokens_by_model": {"usage": 100},
        "sampling_models": ["*"],  # the scenarios' names are no Claude model names
        "max_retries": 2,
    }
    return make_gateway(providers={"claude": claude}, api_keys=[CLIENT_KEY])


def client(gateway: str) -> openai.OpenAI:
    return sdk(gateway, CLIENT_KEY)


def stream(gateway: str, model: str, **kwargs: Any) -> list[Any]:
    kwargs.setdefault("messages", USER)
    chunks = client(gateway).chat.completions.create(model=f"claude/{model}", stream=True, **kwargs)
    return list(chunks)


def raw(gateway: str, model: str, *, streamed: bool = True, **fields: Any) -> httpx.Response:
    body = {"model": f"claude/{model}", "messages": USER, "stream": streamed, **fields}
    return post_chat(gateway, body, headers={"authorization": f"Bearer {CLIENT_KEY}"})


def frames(response: httpx.Response) -> list[Any]:
    """The SSE data of a chat stream, decoded (``[DONE]`` as a string)."""
    return [
        event if event == "[DONE]" else orjson.loads(event) for event in sse_data(response.text)
    ]


def calls_of(chunks: list[Any]) -> dict[int, dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += call.id or ""
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
    return calls


def finishes(chunks: list[Any]) -> list[str]:
    return [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]


# -- answers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", ["text", "text+crlf", "text+split", "pings", "stop:stop_sequence"]
)
def test_text_streams_as_valid_chat_chunks_whatever_the_framing(gateway: str, model: str) -> None:
    events = frames(raw(gateway, model, stream_options={"include_usage": True}))
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        validate("CreateChatCompletionStreamResponse", event)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-2])
    assert text == "one two three"
    assert events[-3]["choices"][0]["finish_reason"] == "stop"
    assert events[-2]["usage"]["prompt_tokens"] == 12
    whole = raw(gateway, model, streamed=False).json()
    validate("CreateChatCompletionResponse", whole)
    assert whole["choices"][0]["message"]["content"] == "one two three"


def test_a_non_streaming_client_makes_one_non_streaming_call(
    gateway: str, upstream: AnthropicUpstream
) -> None:
    answer = client(gateway).chat.completions.create(model="claude/thinking", messages=USER)
    assert [r.body["stream"] for r in upstream.calls("thinking")] == [False]
    message = answer.choices[0].message
    assert message.content == "one two three"
    assert (message.model_extra or {})["reasoning_content"] == "Let me think."


def test_thinking_streams_as_reasoning_content_before_the_answer(gateway: str) -> None:
    chunks = stream(gateway, "thinking", stream_options={"include_usage": True})
    reasoning = [
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") for c in chunks[:-1]
    ]
    assert "".join(r or "" for r in reasoning) == "Let me think."
    first_text = next(i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content)
    assert all(r is None for r in reasoning[first_text:])
    usage = chunks[-1].usage
    # any-llm#1291: thinking tokens are counted, and the total adds up.
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 4
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize("model", ["tools", "tools+split", "tools-interleaved"])
def test_regression_litellm_5231_parallel_tool_calls_are_indexed_0_1_2(
    gateway: str, model: str
) -> None:
    chunks = stream(gateway, model)
    calls = calls_of(chunks)
    assert sorted(calls) == [0, 1, 2]
    for k, (call_id, name, _, arguments) in enumerate(TOOLS):
        assert (calls[k]["id"], calls[k]["name"]) == (call_id, name)
        # ai-gateway#1465: no "{}" in front; litellm#36262: no piece lost or merged.
        assert orjson.loads(calls[k]["arguments"]) == arguments
    assert finishes(chunks) == ["tool_calls"]
    whole = client(gateway).chat.completions.create(model=f"claude/{model}", messages=USER)
    assert whole.choices[0].finish_reason == "tool_calls"
    tool_calls = whole.choices[0].message.tool_calls or []
    got = [(c.id, orjson.loads(c.function.arguments)) for c in tool_calls if c.type == "function"]
    assert got == [(t[0], t[3]) for t in TOOLS]


def test_regression_litellm_5063_a_tool_without_arguments_gets_an_empty_object(
    gateway: str,
) -> None:
    calls = calls_of(stream(gateway, "noarg"))
    assert [calls[k]["arguments"] for k in sorted(calls)] == ["{}", "{}"]
    whole = client(gateway).chat.completions.create(model="claude/noarg", messages=USER)
    tool_calls = whole.choices[0].message.tool_calls or []
    assert [c.function.arguments for c in tool_calls if c.type == "function"] == ["{}", "{}"]


def test_regression_litellm_5364_usage_is_cumulative_with_cache_tokens(gateway: str) -> None:
    expected = (USAGE_EXPECTED["input"], USAGE_EXPECTED["cached"], USAGE_EXPECTED["output"])
    chunks = stream(gateway, "usage", stream_options={"include_usage": True})
    whole = client(gateway).chat.completions.create(model="claude/usage", messages=USER)
    for usage in (chunks[-1].usage, whole.usage):
        assert usage is not None and usage.prompt_tokens_details is not None
        got = (
            usage.prompt_tokens,
            usage.prompt_tokens_details.cached_tokens,
            usage.completion_tokens,
        )
        assert got == expected  # agno#6624: the last counts, not their sum
        assert usage.total_tokens == expected[0] + expected[2]


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        ("refusal", "content_filter"),
        ("max_tokens", "length"),
    ],
)
def test_regression_turnstone_1162_every_stop_reason_has_its_finish(
    gateway: str, stand_in: tuple[str, AnthropicUpstream], reason: str, finish: str
) -> None:
    assert finishes(stream(gateway, f"stop:{reason}")) == [finish]
    # The raw reason stays in the normalized stream for surfaces that can show it.
    last = provider_chunks(stand_in[0], f"stop:{reason}")[-1].deltas[0]
    assert (last.finish_reason, last.stop_reason) == (finish, reason)


# -- the normalized stream, read straight from the provider ---------------------------------


def provider_chunks(base_url: str, model: str, *, streamed: bool = True) -> list[Chunk]:
    """The normalized stream of ``model``'s answer, read from the provider itself."""

    async def run() -> list[Chunk]:
        options = {"base_url": base_url, "api_key": KEY}
        async with open_provider(anthropic_provider.SPEC, options, models=(model,)) as provider:
            return await collect(
                provider, chat_request("one two three", model=model, stream=streamed)
            )

    return asyncio.run(run())


def test_the_spec_is_a_well_made_provider_type() -> None:
    check_spec(anthropic_provider.SPEC)


GRAMMAR = [
    *("text+crlf", "thinking", "redacted", "tools", "tools-interleaved", "noarg", "pings"),
    *(f"stop:{reason}" for reason in ("end_turn", "stop_sequence", "max_tokens", "tool_use")),
    *(f"stop:{r}" for r in ("pause_turn", "refusal", "model_context_window_exceeded")),
]


@pytest.mark.parametrize("streamed", [True, False])
@pytest.mark.parametrize("model", GRAMMAR)
def test_every_answer_keeps_the_normalized_stream_grammar(
    stand_in: tuple[str, AnthropicUpstream], model: str, streamed: bool
) -> None:
    chunks = provider_chunks(stand_in[0], model, streamed=streamed)
    summary = check_stream(chunks, require_usage=True)
    assert summary.text in ("one two three", "Let me check.", "")


def test_closing_or_cancelling_the_stream_midway_ends_it_at_once(
    stand_in: tuple[str, AnthropicUpstream],
) -> None:
    async def run() -> None:
        options = {"base_url": stand_in[0], "api_key": KEY}
        async with open_provider(anthropic_provider.SPEC, options) as provider:
            request = chat_request("one two three four", model="text+slow")
            await check_aclose(provider, request, after=1, within=2.0)
            await check_cancellation(provider, request, after=1, within=2.0)

    asyncio.run(run())


@pytest.mark.parametrize("streamed", [True, False])
def test_regression_open_webui_29860_signatures_reach_the_normalized_stream(
    stand_in: tuple[str, AnthropicUpstream], streamed: bool
) -> None:
    deltas = [
        d for c in provider_chunks(stand_in[0], "thinking", streamed=streamed) for d in c.deltas
    ]
    assert [d.reasoning_signature for d in deltas if d.reasoning_signature] == [SIGNATURE]
    deltas = [
        d for c in provider_chunks(stand_in[0], "redacted", streamed=streamed) for d in c.deltas
    ]
    assert [d.redacted_reasoning for d in deltas if d.redacted_reasoning] == [REDACTED]


# -- failures -------------------------------------------------------------------------------


def test_regression_litellm_4562_an_error_event_mid_stream_is_an_error_frame(
    gateway: str,
) -> None:
    events = frames(raw(gateway, "error-event:4"))
    content = [e for e in events[:-1] if e["choices"][0]["delta"].get("content")]
    assert content, "the text before the error reaches the client"
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])
    error = events[-1]["error"]
    assert "overloaded_error" in error["message"] and "[redacted]" in error["message"]
    assert KEY not in str(events) and "[DONE]" not in events
    with pytest.raises(openai.APIError):
        stream(gateway, "error-event:4")


def test_an_error_event_before_any_output_is_retried_then_a_502(
    gateway: str, upstream: AnthropicUpstream
) -> None:
    response = raw(gateway, "error-event:1")
    assert response.status_code == 502
    assert len(upstream.calls("error-event:1")) == 3  # the first try and max_retries=2


def test_regression_litellm_20347_truncation_is_an_error_never_a_finish(gateway: str) -> None:
    # Everything but message_stop: the message_delta with end_turn came, and still no finish.
    events = frames(raw(gateway, "truncate:-1"))
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])
    assert events[-1]["error"]["code"] == "upstream_truncated"
    whole = raw(gateway, "truncate:3", streamed=False)
    assert whole.status_code == 502 and whole.json()["error"]["code"] == "upstream_malformed"


@pytest.mark.parametrize(("model", "attempts"), [("flaky:529:2", 3), ("flaky:429:1", 2)])
def test_overloaded_and_rate_limited_are_retried_then_succeed(
    gateway: str, upstream: AnthropicUpstream, model: str, attempts: int
) -> None:
    answer = client(gateway).chat.completions.create(model=f"claude/{model}", messages=USER)
    assert answer.choices[0].message.content == "one two three"
    assert len(upstream.calls(model)) == attempts


def test_a_retry_after_too_long_to_wait_for_is_passed_to_the_client(
    gateway: str, upstream: AnthropicUpstream
) -> None:
    response = raw(gateway, "status:429:30")
    assert (response.status_code, response.headers["retry-after"]) == (429, "30")
    assert len(upstream.calls("status:429:30")) == 1


def test_persistent_overload_is_a_502_after_the_retries(
    gateway: str, upstream: AnthropicUpstream
) -> None:
    assert raw(gateway, "status:529").status_code == 502
    assert len(upstream.calls("status:529")) == 3


def test_a_400_is_a_400_with_anthropics_message_redacted(gateway: str) -> None:
    response = raw(gateway, "status:400")
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "stand-in status 400 for key [redacted]" in message and KEY not in response.text
    refused = raw(gateway, "status:401")
    assert refused.status_code == 502 and KEY not in refused.text


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 1.5},
        {"n": 2},
        {
            "messages": [
                *USER,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{x"},
                        }
                    ],
                },
            ]
        },
    ],
)
def test_what_anthropic_cannot_take_is_a_400_and_never_sent(
    gateway: str, upstream: AnthropicUpstream, fields: dict[str, Any]
) -> None:
    response = raw(gateway, "text", **fields)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert upstream.calls("text") == []


def test_an_unreachable_upstream_is_a_502(
    make_gateway: GatewayFactory,
) -> None:
    claude = {
        "type": "anthropic",
        "base_url": f"http://127.0.0.1:{free_port()}",
        "api_key": KEY,
        "models": ["text"],
        "max_retries": 0,
    }
    response = raw(make_gateway(providers={"claude": claude}, api_keys=[CLIENT_KEY]), "text")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"


# -- what the upstream gets -----------------------------------------------------------------


def test_the_outbound_request_is_anthropics_with_our_key_only(
    gateway: str, upstream: AnthropicUpstream
) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "Two tools.",
            "reasoning_signature": SIGNATURE,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"c": 1}'},
                },
                {"id": "c2", "type": "function", "function": {"name": "t", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"},
    ]
    response = post_chat(
        gateway,
        {
            "model": "claude/text",
            "messages": messages,
            "stream": True,
            "temperature": 0.5,
            "top_p": 0.9,
        },
        headers={"authorization": f"Bearer {CLIENT_KEY}", "x-custom": "client-header"},
    )
    assert response.status_code == 200
    (sent,) = upstream.calls("text")
    headers = sent.headers
    assert headers["x-api-key"] == KEY and "authorization" not in headers
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "beta-one,beta-two"
    assert headers["x-request-id"] and "x-custom" not in headers
    assert CLIENT_KEY not in repr(sent)
    body = sent.body
    assert (body["model"], body["max_tokens"], body["stream"]) == ("text", 4096, True)
    assert body["system"] == [{"type": "text", "text": "Be brief."}]
    assert (body["temperature"], "top_p" in body) == (0.5, False)  # litellm#15097
    assistant, results = body["messages"][1:]
    # openai-agents#1704: the replayed turn opens with its signed thinking.
    assert assistant["content"][0] == {
        "type": "thinking",
        "thinking": "Two tools.",
        "signature": SIGNATURE,
    }
    # higress#3517: consecutive tool messages are one user turn of tool results.
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "c2", "content": "noon"},
        ],
    }


def test_max_tokens_is_the_clients_else_the_models_default(
    gateway: str, upstream: AnthropicUpstream
) -> None:
    raw(gateway, "usage", streamed=False)
    raw(gateway, "usage", streamed=False, max_completion_tokens=77)
    assert [r.body["max_tokens"] for r in upstream.calls("usage")] == [100, 77]


# -- the stand-in speaks what the anthropic SDK accepts -------------------------------------


@pytest.mark.parametrize(
    "model",
    ["text+crlf", "thinking+split", "redacted", "tools-interleaved", "noarg", "pings", "usage"],
)
def test_the_stand_in_streams_what_the_anthropic_sdk_accepts(
    stand_in: tuple[str, AnthropicUpstream], model: str
) -> None:
    sdk_client = anthropic.Anthropic(base_url=stand_in[0], api_key=KEY, max_retries=0, timeout=10)
    request: dict[str, Any] = {"model": model, "max_tokens": 100, "messages": USER}
    with sdk_client.messages.stream(**request) as events:
        streamed = events.get_final_message()
    whole = sdk_client.messages.create(**request)
    assert streamed.model_dump(exclude={"id"}) == whole.model_dump(exclude={"id"})
    assert streamed.stop_reason in ("end_turn", "tool_use")


@pytest.mark.parametrize(
    ("model", "error"),
    [
        ("status:529", anthropic.OverloadedError),
        ("status:429:1", anthropic.RateLimitError),
        ("status:400", anthropic.BadRequestError),
        ("error-event:2", anthropic.APIStatusError),
    ],
)
def test_the_stand_in_fails_as_the_anthropic_sdk_expects(
    stand_in: tuple[str, AnthropicUpstream], model: str, error: type[Exception]
) -> None:
    sdk_client = anthropic.Anthropic(base_url=stand_in[0], api_key=KEY, max_retries=0, timeout=10)
    with (
        pytest.raises(error),
        sdk_client.messages.stream(
            model=model, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        ) as events,
    ):
        events.get_final_message()
