"""``POST /v1/messages`` through a real gateway, with the official ``anthropic`` SDK as client.

In front of echo and of OpenAI-compatible stand-ins (the fault upstream, and the script
upstream whose tool calls interleave); the anthropic, gemini and plugin providers are in
``test_messages_providers.py``. Every streamed answer is also read raw and checked by the
conformance kit's grammar checker (:func:`providers.testing.check_messages_stream`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from gateway.app import create_app
from providers.testing import MessagesSummary, check_messages_stream, parse_messages_sse
from tests.conftest import settings
from tests.support.chat_script_upstream import INTERLEAVED, ScriptUpstream, serve_script_upstream
from tests.support.fault_upstream import FaultUpstream, serve_fault_upstream
from tests.support.servers import serve_in_thread

KEY = "gw-key-0123456789"
SONNET = "claude-sonnet-4-5-20250929"  # what Claude Code asks for
HAIKU = "claude-haiku-4-5-20251001"  # its small model for background work
TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


@pytest.fixture(scope="module")
def fault() -> Iterator[tuple[str, FaultUpstream]]:
    with serve_fault_upstream() as served:
        yield served


@pytest.fixture(scope="module")
def script() -> Iterator[tuple[str, ScriptUpstream]]:
    with serve_script_upstream() as served:
        yield served


@pytest.fixture(scope="module")
def gateway(fault: tuple[str, FaultUpstream], script: tuple[str, ScriptUpstream]) -> Iterator[str]:
    config = settings(
        api_keys=[KEY],
        providers={
            "echo": {"type": "echo"},
            "fault": {
                "type": "openai",
                "base_url": fault[0],
                "api_key": "sk-upstream-canary-1234567890",
                "models": ["ok", "error-frame:2", "status:529", "status:400", "tools"],
                "max_retries": 0,
            },
            "cool": {
                "type": "openai",
                "base_url": fault[0],
                "api_key": "sk-upstream-canary-1234567890",
                "models": ["status:503"],
                "max_retries": 0,
                "breaker_threshold": 1,
                "breaker_cooldown": 600,
            },
            "script": {
                "type": "openai",
                "base_url": script[0],
                "api_key": "sk-script",
                "models": [
                    *("tools-interleaved", "text-then-tools", "noarg", "reasoning"),
                    *("reasoning-late", "cached"),
                ],
                "max_retries": 0,
            },
        },
        # Claude Code's own model names, plain names without a slash, as aliases.
        aliases={SONNET: "echo/echo", HAIKU: "script/cached"},
    )
    with serve_in_thread(create_app(config)) as url:
        yield url


def client(url: str, **kwargs: Any) -> anthropic.Anthropic:
    kwargs.setdefault("api_key", KEY)
    return anthropic.Anthropic(base_url=url, max_retries=0, **kwargs)


def raw_stream(url: str, body: dict[str, Any], **headers: str) -> MessagesSummary:
    """POST a streamed request with httpx; the answer's events, checked by the grammar."""
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01", **headers}
    with httpx.stream(
        "POST", url + "/v1/messages", json={**body, "stream": True}, headers=headers, timeout=10
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    return check_messages_stream(parse_messages_sse(text))


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


# --- the SDK, both modes --------------------------------------------------------------------


def test_create_whole_and_streamed_agree(gateway: str) -> None:
    sdk = client(gateway)
    whole = sdk.messages.create(model="echo/echo", max_tokens=100, messages=user("one two three"))
    assert [b.type for b in whole.content] == ["text"]
    assert whole.content[0].type == "text" and whole.content[0].text == "one two three"
    assert whole.stop_reason == "end_turn" and whole.role == "assistant"
    assert whole.model == "echo/echo" and whole.id.startswith("msg_")
    assert whole.usage.output_tokens == 3 and whole.usage.input_tokens == 3

    events = list(
        sdk.messages.create(
            model="echo/echo", max_tokens=100, messages=user("one two three"), stream=True
        )
    )
    assert [e.type for e in events][:2] == ["message_start", "content_block_start"]
    assert events[-1].type == "message_stop"
    text = "".join(
        e.delta.text
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == "one two three"


def test_stream_helper_final_message(gateway: str) -> None:
    with client(gateway).messages.stream(
        model="echo/echo", max_tokens=100, messages=user("hello stream")
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "hello stream"
    assert final.content[0].type == "text" and final.content[0].text == "hello stream"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 2


def test_max_tokens_is_the_stop_reason_when_the_answer_is_cut(gateway: str) -> None:
    whole = client(gateway).messages.create(
        model="echo/echo", max_tokens=2, messages=user("a b c d e")
    )
    assert whole.stop_reason == "max_tokens"
    summary = raw_stream(
        gateway, {"model": "echo/echo", "max_tokens": 2, "messages": user("a b c")}
    )
    assert summary.stop_reason == "max_tokens" and summary.text == "a b "


def test_both_auth_styles_and_beta_query(gateway: str) -> None:
    bearer = client(gateway, api_key=None, auth_token=KEY)
    answer = bearer.messages.create(model="echo/echo", max_tokens=10, messages=user("bearer"))
    assert answer.content[0].type == "text" and answer.content[0].text == "bearer"
    # beta.messages sends ?beta=true and anthropic-beta headers: tolerated.
    beta = client(gateway).beta.messages.create(
        model="echo/echo",
        max_tokens=10,
        messages=user("beta"),
        betas=["interleaved-thinking-2025-05-14", "context-management-2025-06-27"],
    )
    assert beta.content[0].type == "text" and beta.content[0].text == "beta"
    summary = raw_stream(
        gateway + "",
        {"model": "echo/echo", "max_tokens": 10, "messages": user("q")},
        **{"anthropic-beta": "claude-code-20250219,effort-2025-11-24"},
    )
    assert summary.text == "q"
    response = httpx.post(
        gateway + "/v1/messages?beta=true",
        json={"model": "echo/echo", "max_tokens": 10, "messages": user("query")},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    assert response.status_code == 200 and response.json()["content"][0]["text"] == "query"


def test_bad_keys_get_anthropics_401(gateway: str) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client(gateway, api_key="wrong").messages.create(
            model="echo/echo", max_tokens=5, messages=user("x")
        )
    assert caught.value.status_code == 401
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Invalid API key"},
    }
    missing = httpx.post(gateway + "/v1/messages/count_tokens", json={}, timeout=10)
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"
    assert "x-api-key" in missing.json()["error"]["message"]
    # Other paths keep OpenAI's shape.
    chat = httpx.post(gateway + "/v1/chat/completions", json={}, timeout=10)
    assert chat.status_code == 401 and chat.json()["error"]["code"] == "missing_api_key"


# --- model names ------------------------------------------------------------------------------


def test_claude_code_model_names_through_plain_aliases(gateway: str) -> None:
    sdk = client(gateway)
    answer = sdk.messages.create(model=SONNET, max_tokens=50, messages=user("from sonnet"))
    assert answer.content[0].type == "text" and answer.content[0].text == "from sonnet"
    assert answer.model == SONNET  # the name the client asked for
    background = sdk.messages.create(model=HAIKU, max_tokens=50, messages=user("title please"))
    assert background.content[0].type == "text"
    assert background.content[0].text == "Cached answer."
    with pytest.raises(anthropic.NotFoundError) as caught:
        sdk.messages.create(model="claude-opus-9", max_tokens=5, messages=user("x"))
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_models_in_anthropics_shape_with_anthropic_version(gateway: str) -> None:
    page = client(gateway).models.list()
    ids = [m.id for m in page.data]
    assert SONNET in ids and "echo/echo" in ids
    assert all(m.type == "model" for m in page.data)
    assert page.first_id == ids[0] and page.last_id == ids[-1] and page.has_more is False
    one = client(gateway).models.retrieve(SONNET)
    assert one.id == SONNET and one.display_name == SONNET
    openai_shape = httpx.get(
        gateway + "/v1/models", headers={"authorization": f"Bearer {KEY}"}, timeout=10
    ).json()
    assert openai_shape["object"] == "list"
    assert {m["object"] for m in openai_shape["data"]} == {"model"}


# --- count_tokens -----------------------------------------------------------------------------


def test_count_tokens_is_an_honest_growing_estimate(gateway: str) -> None:
    sdk = client(gateway)

    def count(**body: Any) -> int:
        return sdk.messages.count_tokens(model=SONNET, **body).input_tokens

    short = count(messages=user("hello"))
    longer = count(messages=user("hello " * 400))
    with_system = count(messages=user("hello " * 400), system="You are terse. " * 50)
    with_tools = count(messages=user("hello " * 400), system="You are terse. " * 50, tools=TOOLS)
    assert 0 < short < longer < with_system < with_tools
    # About one token per 3.5 bytes: 2400 bytes of text is some 700 tokens, not 7 or 7000.
    assert 600 < longer < 800
    beta = sdk.beta.messages.count_tokens(model=SONNET, messages=user("hello"))
    assert beta.input_tokens == short
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.count_tokens(model="no-such-model", messages=user("x"))
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.count_tokens(model=SONNET, messages=[])
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


# --- tools ------------------------------------------------------------------------------------


def test_regression_interleaved_tool_calls_keep_their_own_blocks(gateway: str) -> None:
    """Bugs #2, #3, #5: three calls whose argument pieces interleave each get a block at the
    next free index, and their pieces on that index: each input is its own JSON."""
    summary = raw_stream(
        gateway,
        {
            "model": "script/tools-interleaved",
            "max_tokens": 100,
            "messages": user("x"),
            "tools": TOOLS,
        },
    )
    assert summary.blocks == ["tool_use", "tool_use", "tool_use"]
    assert [(t.id, t.name, t.index) for t in summary.tools] == [
        (call_id, name, k) for k, (call_id, name, _) in enumerate(INTERLEAVED)
    ]
    assert [t.input for t in summary.tools] == [
        json.loads("".join(pieces)) for _, _, pieces in INTERLEAVED
    ]
    assert summary.stop_reason == "tool_use"
    whole = client(gateway).messages.create(
        model="script/tools-interleaved", max_tokens=100, messages=user("x"), tools=TOOLS
    )
    assert [(b.type, getattr(b, "input", None)) for b in whole.content] == [
        ("tool_use", t.input) for t in summary.tools
    ]


def test_regression_stop_with_tool_calls_is_tool_use(gateway: str) -> None:
    """Bug #6: an upstream that says ``stop`` after tool calls still ends in ``tool_use``."""
    summary = raw_stream(
        gateway,
        {"model": "script/text-then-tools", "max_tokens": 100, "messages": user("x")},
    )
    assert summary.blocks == ["text", "tool_use", "tool_use"]
    assert summary.text == "Let me look."
    assert [t.input for t in summary.tools] == [{"city": "Oslo"}, {"tz": "UTC"}]
    assert summary.stop_reason == "tool_use"
    with client(gateway).messages.stream(
        model="script/text-then-tools", max_tokens=100, messages=user("x")
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]


def test_regression_no_argument_tool_has_an_empty_object(gateway: str) -> None:
    """Bug #4: a call without argument pieces is ``input: {}``."""
    summary = raw_stream(
        gateway, {"model": "script/noarg", "max_tokens": 100, "messages": user("x")}
    )
    assert [(t.name, t.input) for t in summary.tools] == [("ping", {})]
    whole = client(gateway).messages.create(
        model="script/noarg", max_tokens=100, messages=user("x")
    )
    block = whole.content[0]
    assert block.type == "tool_use" and block.input == {} and whole.stop_reason == "tool_use"


def test_tool_round_trip_through_the_surface(
    gateway: str, script: tuple[str, ScriptUpstream]
) -> None:
    """The SDK's tool loop: the call comes as a tool_use block; the tool_result goes back to
    the upstream as an OpenAI tool message after the assistant's tool_calls."""
    sdk = client(gateway)
    first = sdk.messages.create(
        model="script/text-then-tools", max_tokens=100, messages=user("weather?"), tools=TOOLS
    )
    calls = [b for b in first.content if b.type == "tool_use"]
    assert first.stop_reason == "tool_use" and len(calls) == 2
    script[1].reset()
    history: list[Any] = [
        *user("weather?"),
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [
                # A failed tool: OpenAI's tool message has no error flag, so none is sent
                # (the equality below), the text as it came.
                {
                    "type": "tool_result",
                    "tool_use_id": calls[0].id,
                    "content": "12 degrees",
                    "is_error": True,
                },
                {
                    "type": "tool_result",
                    "tool_use_id": calls[1].id,
                    "content": [{"type": "text", "text": "10:00"}],
                    "is_error": False,
                },
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    second = sdk.messages.create(
        model="script/cached", max_tokens=100, messages=history, tools=TOOLS
    )
    assert second.content[0].type == "text"
    sent = script[1].requests[-1].body
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool", "tool", "user"]
    assistant = sent["messages"][1]
    assert assistant["content"] == "Let me look."
    assert [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in assistant["tool_calls"]
    ] == [
        ("call_1", "get_weather", {"city": "Oslo"}),
        ("call_2", "get_time", {"tz": "UTC"}),
    ]
    assert sent["messages"][2] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "12 degrees",
    }
    assert sent["messages"][3] == {"role": "tool", "tool_call_id": "call_2", "content": "10:00"}
    assert sent["messages"][4] == {"role": "user", "content": "thanks"}
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": TOOLS[0]["input_schema"],
                "description": "The weather in a city",
            },
        }
    ]
    assert sent["max_tokens"] == 100


# --- reasoning --------------------------------------------------------------------------------


def test_reasoning_is_a_thinking_block_before_the_text(gateway: str) -> None:
    summary = raw_stream(
        gateway, {"model": "script/reasoning", "max_tokens": 100, "messages": user("x")}
    )
    assert summary.blocks == ["thinking", "text"]
    assert summary.thinking[0].thinking == "Think hard." and summary.text == "Answer."
    # Not Anthropic's: the signature names the provider that made it, for the way back.
    assert summary.thinking[0].signature == "llmgw:script:"


def test_regression_reasoning_after_text_never_follows_it(gateway: str) -> None:
    """Bug #11: thinking after text gives Claude Code an empty reply; it is left out."""
    summary = raw_stream(
        gateway, {"model": "script/reasoning-late", "max_tokens": 100, "messages": user("x")}
    )
    assert summary.blocks == ["text"] and summary.text == "First. Second."


def test_reasoning_goes_back_only_to_the_provider_that_made_it(
    gateway: str, script: tuple[str, ScriptUpstream]
) -> None:
    sdk = client(gateway)
    first = sdk.messages.create(model="script/reasoning", max_tokens=100, messages=user("q"))
    assert [b.type for b in first.content] == ["thinking", "text"]
    history: list[Any] = [
        *user("q"),
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        *user("and?"),
    ]
    script[1].reset()
    sdk.messages.create(model="script/cached", max_tokens=100, messages=history)
    replayed = script[1].requests[-1].body["messages"][1]
    assert replayed["reasoning_content"] == "Think hard." and replayed["content"] == "Answer."
    # To another provider (echo here) it is not replayed at all, nor anything of its signature.
    foreign = [
        *history[:1],
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "secret", "signature": "llmgw:other:abc"},
                {"type": "text", "text": "A."},
            ],
        },
        *user("and?"),
    ]
    script[1].reset()
    sdk.messages.create(model="script/cached", max_tokens=100, messages=foreign)
    assert "reasoning_content" not in script[1].requests[-1].body["messages"][1]


def test_cache_reads_are_counted_apart_from_the_input(gateway: str) -> None:
    """Bug #9: Anthropic's input_tokens exclude the cached ones, reported beside them."""
    whole = client(gateway).messages.create(
        model="script/cached", max_tokens=100, messages=user("x")
    )
    assert whole.usage.input_tokens == 40 and whole.usage.cache_read_input_tokens == 60
    assert whole.usage.output_tokens == 7
    summary = raw_stream(
        gateway, {"model": "script/cached", "max_tokens": 100, "messages": user("x")}
    )
    assert summary.usage["input_tokens"] == 40 and summary.usage["cache_read_input_tokens"] == 60


# --- failures ---------------------------------------------------------------------------------


def test_overloaded_upstream_is_a_529_overloaded_error(gateway: str) -> None:
    with pytest.raises(anthropic.OverloadedError) as caught:
        client(gateway).messages.create(model="fault/status:529", max_tokens=10, messages=user("x"))
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert "canary" not in json.dumps(caught.value.body)


def test_cooling_down_is_a_529_with_retry_after(gateway: str) -> None:
    sdk = client(gateway)
    with pytest.raises(anthropic.APIStatusError):  # the failure that opens the breaker
        sdk.messages.create(model="cool/status:503", max_tokens=10, messages=user("x"))
    with pytest.raises(anthropic.OverloadedError) as caught:
        sdk.messages.create(model="cool/status:503", max_tokens=10, messages=user("x"), stream=True)
    assert caught.value.status_code == 529
    assert int(caught.value.response.headers["retry-after"]) > 0


def test_regression_mid_stream_error_is_an_error_event_never_end_turn(gateway: str) -> None:
    """Bug #12: a failure after the first byte ends the stream with ``event: error``."""
    model, words = "fault/error-frame:2", user("a b c d e f")
    summary = raw_stream(gateway, {"model": model, "max_tokens": 100, "messages": words})
    assert summary.error is not None and summary.error["type"] == "api_error"
    assert summary.stop_reason is None
    with pytest.raises(anthropic.APIStatusError):
        for _ in client(gateway).messages.create(
            model=model, max_tokens=100, messages=words, stream=True
        ):
            pass
    with pytest.raises(anthropic.APIStatusError) as caught:  # the whole answer: a real status
        client(gateway).messages.create(model=model, max_tokens=100, messages=words)
    assert caught.value.status_code == 502
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_upstream_rejection_is_invalid_request_error(gateway: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(gateway).messages.create(model="fault/status:400", max_tokens=10, messages=user("x"))
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": 10, "messages": user("x")}, "model"),
        ({"model": "echo/echo", "messages": user("x")}, "max_tokens"),
        ({"model": "echo/echo", "max_tokens": 0, "messages": user("x")}, "max_tokens"),
        ({"model": "echo/echo", "max_tokens": 5, "messages": []}, "messages"),
        (
            {"model": "echo/echo", "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]},
            "role",
        ),
        (
            {"model": "echo/echo", "max_tokens": 5, "messages": user("x"), "temperature": 1.5},
            "temperature",
        ),
        (
            {
                "model": "echo/echo",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "video"}]}],
            },
            "video",
        ),
        (
            {
                "model": "echo/echo",
                "max_tokens": 5,
                "messages": user("x"),
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            "web_search_20250305",
        ),
        (
            {
                "model": "echo/echo",
                "max_tokens": 5,
                "messages": user("x"),
                "api_key": "sk-x",
                "metadata": {"base_url": "http://evil"},
            },
            None,
        ),
    ],
)
def test_bad_requests_get_anthropics_400(
    gateway: str, body: dict[str, Any], param: str | None
) -> None:
    response = httpx.post(
        gateway + "/v1/messages", json=body, headers={"x-api-key": KEY}, timeout=10
    )
    if param is None:  # unknown fields, wherever they are, are not passed on: ignored
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert param in payload["error"]["message"]


def test_not_json_and_wrong_method_are_anthropic_errors(gateway: str) -> None:
    headers = {"x-api-key": KEY, "content-type": "application/json"}
    response = httpx.post(gateway + "/v1/messages", content=b"{nope", headers=headers, timeout=10)
    assert (
        response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    )
    get = httpx.get(gateway + "/v1/messages", headers=headers, timeout=10)
    assert get.status_code == 405 and get.json()["type"] == "error"


def test_unknown_paths_under_messages_answer_in_anthropics_shape(gateway: str) -> None:
    """The SDK's Message Batches API is not served: Anthropic's 404 shape, which the SDK reads
    as its NotFoundError (it was OpenAI's shape, read as a generic error)."""
    with pytest.raises(anthropic.NotFoundError) as caught:
        client(gateway).messages.batches.create(
            requests=[
                {
                    "custom_id": "a",
                    "params": {"model": SONNET, "max_tokens": 8, "messages": user("hi")},
                }
            ]
        )
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert "/v1/messages/batches" in body["error"]["message"]
    headers = {"x-api-key": KEY}
    response = httpx.get(gateway + "/v1/messages/batches/abc", headers=headers, timeout=10)
    assert response.status_code == 404
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "not_found_error"
    # Elsewhere the OpenAI shape stays.
    other = httpx.get(gateway + "/v1/nope", headers={"authorization": f"Bearer {KEY}"}, timeout=10)
    assert other.status_code == 404 and other.json()["error"]["code"] == "unknown_url"
