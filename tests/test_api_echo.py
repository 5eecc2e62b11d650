"""The API end to end on the echo default: the real openai SDK against a real uvicorn."""

from __future__ import annotations

import asyncio

import httpx
import orjson
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import post_chat, sse_data
from tests.support.clients import async_sdk, sdk
from tests.support.openapi_spec import validate

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello  there,\n world "}]


def test_non_stream_answer_is_the_last_user_message(echo_gateway: str) -> None:
    reply = sdk(echo_gateway).chat.completions.create(model="echo/echo", messages=USER)
    assert reply.choices[0].message.content == "Hello  there,\n world "
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "echo/echo"
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 3


def test_stream_keeps_every_whitespace_and_ends_with_finish_reason(echo_gateway: str) -> None:
    stream = sdk(echo_gateway).chat.completions.create(
        model="echo/echo", messages=USER, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello  there,\n world "
    assert [c.choices[0].delta.content for c in chunks[:3]] == ["Hello  ", "there,\n ", "world "]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks), "usage only when the client asks"
    assert len({c.id for c in chunks}) == 1


def test_include_usage_adds_a_final_chunk_with_empty_choices(echo_gateway: str) -> None:
    stream = sdk(echo_gateway).chat.completions.create(
        model="echo/echo", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_async_client_streams_and_not(echo_gateway: str) -> None:
    async def run() -> tuple[str, str]:
        client = async_sdk(echo_gateway)
        whole = await client.chat.completions.create(model="echo/echo", messages=USER)
        stream = await client.chat.completions.create(model="echo/echo", messages=USER, stream=True)
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        await client.close()
        return whole.choices[0].message.content or "", "".join(parts)

    whole, streamed = asyncio.run(run())
    assert whole == streamed == "Hello  there,\n world "


def test_content_parts_are_joined(echo_gateway: str) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "one "},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": "two"},
            ],
        },
    ]
    reply = sdk(echo_gateway).chat.completions.create(model="echo/echo", messages=messages)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "one two"


def test_max_tokens_cuts_the_echo_with_finish_reason_length(echo_gateway: str) -> None:
    reply = sdk(echo_gateway).chat.completions.create(
        model="echo/echo", messages=USER, max_tokens=2
    )
    assert reply.choices[0].message.content == "Hello  there,\n "
    assert reply.choices[0].finish_reason == "length"


def test_n_gives_n_choices(echo_gateway: str) -> None:
    reply = sdk(echo_gateway).chat.completions.create(model="echo/echo", messages=USER, n=3)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert {c.message.content for c in reply.choices} == {"Hello  there,\n world "}


def test_responses_and_chunks_validate_against_the_openai_spec(echo_gateway: str) -> None:
    body = {"model": "echo/echo", "messages": USER}
    whole = post_chat(echo_gateway, body)
    assert whole.status_code == 200
    assert whole.headers["cache-control"] == "no-store"
    validate("CreateChatCompletionResponse", whole.json())

    streamed = post_chat(
        echo_gateway, {**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_data(streamed.text)
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        validate("CreateChatCompletionStreamResponse", orjson.loads(event))

    empty = post_chat(
        echo_gateway, {"model": "echo/echo", "messages": [{"role": "user", "content": ""}]}
    )
    validate("CreateChatCompletionResponse", empty.json())
    assert empty.json()["choices"][0]["message"]["content"] == ""


def test_models_list_and_get_in_openai_shape(echo_gateway: str) -> None:
    client = sdk(echo_gateway)
    assert [m.id for m in client.models.list()] == ["echo/echo"]
    assert client.models.retrieve("echo/echo").owned_by == "echo"
    listing = httpx.get(echo_gateway + "/v1/models").json()
    validate("ListModelsResponse", listing)
    one = httpx.get(echo_gateway + "/v1/models/echo/echo").json()
    validate("Model", one)
    missing = httpx.get(echo_gateway + "/v1/models/echo/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    validate("ErrorResponse", missing.json())


def test_health_is_ok(echo_gateway: str) -> None:
    response = httpx.get(echo_gateway + "/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_aliases_and_several_echo_providers(make_gateway: object) -> None:
    url = make_gateway(  # type: ignore[operator]
        providers={
            "a": {"type": "echo"},
            "b": {"type": "echo", "models": ["x", "y"]},
        },
        aliases={"short": "b/y"},
    )
    client = sdk(url)
    assert [m.id for m in client.models.list()] == ["a/echo", "b/x", "b/y", "short"]
    reply = client.chat.completions.create(model="short", messages=USER)
    assert reply.model == "b/y"
