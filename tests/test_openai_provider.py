"""The openai provider against real upstreams over loopback: framing, errors, pass-through."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.app import create_app
from tests.conftest import GatewayFactory, fault_provider, post_chat, settings, sse_data
from tests.support.clients import sdk
from tests.support.fault_upstream import FaultUpstream
from tests.support.openapi_spec import validate
from tests.support.servers import serve_in_thread

FRAMINGS = ["ok", "crlf", "cr", "split", "multiline", "comments", "nospace", "no-done", "slow:5"]
MODELS = [
    *FRAMINGS,
    "tools",
    "echo-request",
    "error-frame:0",
    "error-frame:2",
    "status:400",
    "status:401",
    "status:404",
    "status:500",
    "status:503",
    "status:429:30",
    "reset:2",
    "truncate:2",
    "close-without-finish:2",
    "malformed",
]
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "one two  three\nfour"}]


@pytest.fixture
def gateway(make_gateway: GatewayFactory, fault_upstream: tuple[str, FaultUpstream]) -> str:
    fault_upstream[1].reset()
    return make_gateway(
        providers={"fault": fault_provider(fault_upstream[0], models=MODELS, max_retries=0)},
        api_keys=["client-key-abc"],
    )


@pytest.mark.parametrize("framing", FRAMINGS)
def test_every_sse_framing_streams_the_same_text(gateway: str, framing: str) -> None:
    client = sdk(gateway, "client-key-abc")
    stream = client.chat.completions.create(
        model=f"fault/{framing}", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two  three\nfour"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    whole = client.chat.completions.create(model=f"fault/{framing}", messages=USER)
    assert whole.choices[0].message.content == "one two  three\nfour"


def test_upstream_chunks_are_valid_after_rewriting(gateway: str) -> None:
    response = post_chat(
        gateway,
        {"model": "fault/crlf", "messages": USER, "stream": True},
        headers={"authorization": "Bearer client-key-abc"},
    )
    events = sse_data(response.text)
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        chunk = orjson.loads(event)
        validate("CreateChatCompletionStreamResponse", chunk)
        assert chunk["model"] == "fault/crlf"


def test_usage_is_always_asked_upstream_and_dropped_if_not_wanted(
    gateway: str, fault_upstream: tuple[str, FaultUpstream]
) -> None:
    stream = sdk(gateway, "client-key-abc").chat.completions.create(
        model="fault/ok", messages=USER, stream=True
    )
    chunks = list(stream)
    assert all(c.usage is None for c in chunks) and chunks[-1].choices
    sent = fault_upstream[1].requests[-1].body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_own_key_is_sent_and_the_clients_never(
    gateway: str, fault_upstream: tuple[str, FaultUpstream]
) -> None:
    sdk(gateway, "client-key-abc").chat.completions.create(model="fault/ok", messages=USER)
    headers = fault_upstream[1].requests[-1].headers
    assert headers["authorization"] == "Bearer sk-upstream-canary-1234567890"
    assert "client-key-abc" not in repr(fault_upstream[1].requests[-1])


def test_pass_through_of_what_an_openai_upstream_understands(
    gateway: str, fault_upstream: tuple[str, FaultUpstream]
) -> None:
    tools: list[Any] = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"headers": {"type": "string"}}},
            },
        }
    ]
    image: Any = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    sdk(gateway, "client-key-abc").chat.completions.create(
        model="fault/echo-request",
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, image]}],
        tools=tools,
        tool_choice="auto",
        response_format={"type": "json_object"},
        logprobs=True,
        top_logprobs=2,
        seed=7,
        stop=["END"],
        temperature=0.3,
        extra_body={"repetition_penalty": 1.1, "chat_template_kwargs": {"x": 1}},
    )
    sent = fault_upstream[1].requests[-1].body
    assert sent["model"] == "echo-request"
    assert sent["tools"] == tools
    assert sent["messages"][0]["content"][1] == image
    assert sent["response_format"] == {"type": "json_object"}
    assert (sent["logprobs"], sent["top_logprobs"], sent["seed"]) == (True, 2, 7)
    assert sent["stop"] == ["END"] and sent["temperature"] == 0.3
    assert sent["repetition_penalty"] == 1.1 and sent["chat_template_kwargs"] == {"x": 1}


def test_streamed_tool_calls_pass_through_and_aggregate(gateway: str) -> None:
    client = sdk(gateway, "client-key-abc")
    chunks = list(client.chat.completions.create(model="fault/tools", messages=USER, stream=True))
    deltas = [
        c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls
    ]
    assert deltas, "tool_call deltas reach the client"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    whole = client.chat.completions.create(model="fault/tools", messages=USER)
    calls = whole.choices[0].message.tool_calls
    assert calls and calls[0].function.name  # type: ignore[union-attr]
    orjson.loads(calls[0].function.arguments)  # type: ignore[union-attr]
    assert whole.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("model", "status", "error_class"),
    [
        ("fault/status:400", 400, openai.BadRequestError),
        ("fault/status:404", 404, openai.NotFoundError),
        ("fault/status:401", 502, openai.InternalServerError),
        ("fault/status:500", 502, openai.InternalServerError),
        ("fault/status:503", 502, openai.InternalServerError),
        ("fault/status:429:30", 429, openai.RateLimitError),
        ("fault/error-frame:0", 502, openai.InternalServerError),
    ],
)
def test_failures_before_the_first_byte_get_a_real_status(
    gateway: str, model: str, status: int, error_class: type[Exception]
) -> None:
    client = sdk(gateway, "client-key-abc")
    for stream in (False, True):
        with pytest.raises(error_class) as caught:
            result: Any = client.chat.completions.create(model=model, messages=USER, stream=stream)
            list(result)
        assert caught.value.status_code == status  # type: ignore[attr-defined]
        body = caught.value.response.json()  # type: ignore[attr-defined]
        validate("ErrorResponse", body)
        assert "sk-upstream-canary" not in caught.value.response.text  # type: ignore[attr-defined]
        if status == 429:
            assert caught.value.response.headers["retry-after"] == "30"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("model", "code"),
    [
        ("fault/error-frame:2", "upstream_error"),
        ("fault/reset:2", "upstream_truncated"),
        ("fault/truncate:2", "upstream_truncated"),
        ("fault/close-without-finish:2", "upstream_truncated"),
        ("fault/malformed", "upstream_malformed"),
    ],
)
def test_failures_after_the_first_byte_end_with_an_error_event(
    gateway: str, model: str, code: str
) -> None:
    response = post_chat(
        gateway,
        {"model": model, "messages": USER, "stream": True},
        headers={"authorization": "Bearer client-key-abc"},
    )
    assert response.status_code == 200
    events = sse_data(response.text)
    assert "[DONE]" not in events, "a failed stream never ends like a success"
    last = orjson.loads(events[-1])
    validate("ErrorResponse", last)
    assert last["error"]["code"] == code
    for event in events[:-1]:
        assert orjson.loads(event)["choices"][0]["finish_reason"] is None, "no false finish"
    client = sdk(gateway, "client-key-abc")
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model=model, messages=USER, stream=True))
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=model, messages=USER)
    assert caught.value.status_code == 502, "non-stream: the whole answer failed, a real status"


def test_a_dead_upstream_is_502_without_details(make_gateway: GatewayFactory) -> None:
    from tests.support.servers import free_port

    url = make_gateway(
        providers={
            "dead": {
                "type": "openai",
                "base_url": f"http://127.0.0.1:{free_port()}/v1",
                "api_key": "sk-dead-canary-123456",
                "models": ["m"],
                "max_retries": 0,
            }
        }
    )
    response = post_chat(url, {"model": "dead/m", "messages": USER})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"
    assert "sk-dead-canary" not in response.text and "127.0.0.1" not in response.text


def test_the_gateway_can_be_its_own_upstream(echo_gateway: str) -> None:
    outer = create_app(
        settings(
            providers={
                "inner": {
                    "type": "openai",
                    "base_url": echo_gateway + "/v1",
                    "models": ["echo/echo"],
                }
            }
        )
    )
    with serve_in_thread(outer) as url:
        client = sdk(url)
        whole = client.chat.completions.create(model="inner/echo/echo", messages=USER)
        assert whole.choices[0].message.content == "one two  three\nfour"
        assert whole.model == "inner/echo/echo"
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="inner/echo/echo", messages=USER, stream=True
            )
            if c.choices
        )
        assert text == "one two  three\nfour"


def test_system_messages_can_be_gathered_at_the_start_for_strict_chat_templates(
    make_gateway: GatewayFactory, fault_upstream: tuple[str, FaultUpstream]
) -> None:
    """Claude Code and Codex send system and developer messages mid-conversation; templates
    such as Qwen's refuse them there. ``SYSTEM_MESSAGES=leading`` joins them, in order, into
    one leading system message; the default sends them as they came."""
    strict = fault_provider(fault_upstream[0], models=["echo-request"], system_messages="leading")
    gateway = make_gateway(
        providers={
            "fault": fault_provider(fault_upstream[0], models=["echo-request"]),
            "strict": strict,
        }
    )
    messages: list[Any] = [
        {"role": "system", "content": "A"},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "B"},
        {"role": "developer", "content": [{"type": "text", "text": "C"}]},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]
    upstream = fault_upstream[1]
    sdk(gateway).chat.completions.create(model="strict/echo-request", messages=messages)
    assert upstream.requests[-1].body["messages"] == [
        {"role": "system", "content": "A\n\nB\n\nC"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]
    sdk(gateway).chat.completions.create(model="fault/echo-request", messages=messages)
    assert upstream.requests[-1].body["messages"] == messages

    # The same through the Messages surface, as Claude Code sends it.
    response = httpx.post(
        f"{gateway}/v1/messages",
        json={
            "model": "strict/echo-request",
            "max_tokens": 64,
            "system": "You are Claude Code.",
            "messages": [
                {"role": "user", "content": "fix the bug"},
                {"role": "system", "content": "<env>cwd: /work</env>"},
            ],
        },
        headers={"anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 200, response.text
    sent = upstream.requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["system", "user"]
    assert sent[0]["content"] == "You are Claude Code.\n\n<env>cwd: /work</env>"
