"""``POST /v1/responses`` end to end on the echo default: the real openai SDK (``responses``)
against a real uvicorn, every event and object checked against the OpenAI spec, the SDK's
types and the Responses grammar; bad input gets OpenAI's error body with a 4xx."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from tests.support.clients import async_sdk, sdk
from tests.support.openapi_spec import validate
from tests.support.responses_client import (
    post_responses,
    validate_response,
    validated_stream,
)

TEXT = "Hello  there,\n world "


def test_non_stream_response_is_a_valid_response_object(echo_gateway: str) -> None:
    reply = sdk(echo_gateway).responses.create(model="echo/echo", input=TEXT)
    assert reply.output_text == TEXT
    assert reply.status == "completed"
    assert reply.model == "echo/echo"
    assert reply.id.startswith("resp_")
    assert reply.usage is not None
    assert reply.usage.output_tokens == 3
    assert reply.usage.total_tokens == reply.usage.input_tokens + 3
    raw = post_responses(echo_gateway, {"model": "echo/echo", "input": TEXT})
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("application/json")
    validate_response(raw.json())
    assert raw.json()["store"] is False


def test_stream_events_follow_the_grammar_and_the_spec(echo_gateway: str) -> None:
    summary = validated_stream(echo_gateway, {"model": "echo/echo", "input": TEXT})
    assert summary.text == TEXT
    assert summary.status == "completed"
    assert summary.event_types[:2] == ["response.created", "response.in_progress"]
    assert summary.event_types[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert summary.event_types.count("response.output_text.delta") == 3
    assert summary.event_types[-1] == "response.completed"
    assert summary.usage is not None and summary.usage["output_tokens"] == 3


def test_sdk_stream_and_get_final_response(echo_gateway: str) -> None:
    client = sdk(echo_gateway)
    deltas: list[str] = []
    with client.responses.stream(model="echo/echo", input=TEXT) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == TEXT
    events = list(client.responses.create(model="echo/echo", input=TEXT, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed"


def test_async_client_streams_and_not(echo_gateway: str) -> None:
    async def run() -> tuple[str, str]:
        client = async_sdk(echo_gateway)
        whole = await client.responses.create(model="echo/echo", input=TEXT)
        async with client.responses.stream(model="echo/echo", input=TEXT) as stream:
            final = await stream.get_final_response()
        await client.close()
        return whole.output_text, final.output_text

    assert asyncio.run(run()) == (TEXT, TEXT)


def test_max_output_tokens_makes_an_incomplete_response(echo_gateway: str) -> None:
    body = {"model": "echo/echo", "input": TEXT, "max_output_tokens": 2}
    summary = validated_stream(echo_gateway, body)
    assert summary.status == "incomplete"
    assert summary.response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert summary.text == "Hello  there,\n "
    assert summary.items[0]["status"] == "incomplete"
    whole = post_responses(echo_gateway, body).json()
    validate_response(whole)
    assert whole["status"] == "incomplete"


def test_messages_instructions_and_parts_reach_the_provider(echo_gateway: str) -> None:
    """Echo answers the last user message: its input_text parts, joined; the image part and
    the developer/system/assistant messages are mapped without a complaint."""
    items: list[Any] = [
        {"role": "developer", "content": "you are a test"},
        {"role": "system", "content": [{"type": "input_text", "text": "really"}]},
        {"role": "user", "content": "first"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "ok", "annotations": []}],
        },
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "one "},
                {
                    "type": "input_image",
                    "image_url": "data:image/png;base64,AAAA",
                    "detail": "auto",
                },
                {"type": "input_text", "text": "two"},
            ],
        },
    ]
    reply = sdk(echo_gateway).responses.create(
        model="echo/echo", instructions="be brief", input=items
    )
    assert reply.output_text == "one two"
    assert reply.instructions == "be brief"


def test_the_response_echoes_the_request(echo_gateway: str) -> None:
    tools: list[Any] = [
        {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": False},
        {"type": "web_search", "external_web_access": False},
    ]
    body = {
        "model": "echo/echo",
        "input": "hi",
        "tools": tools,
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "temperature": 0.5,
        "top_p": 0.9,
        "metadata": {"k": "v"},
        "reasoning": {"effort": "low", "summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "pck-1",
    }
    validate("CreateResponse", body)
    whole = post_responses(echo_gateway, body).json()
    validate_response(whole)
    assert whole["tools"] == [{**tools[0], "description": None}], "web_search is dropped"
    assert whole["parallel_tool_calls"] is False
    assert (whole["temperature"], whole["top_p"]) == (0.5, 0.9)
    assert whole["metadata"] == {"k": "v"}
    assert whole["reasoning"] == {"effort": "low", "summary": "auto"}
    assert whole["prompt_cache_key"] == "pck-1"


# -- bad input: OpenAI's error body, a 4xx, never a 500 --------------------------------------


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    validate("ErrorResponse", body)
    assert "Traceback" not in response.text
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"input": "hi"}, "model", "model"),
        ({"model": "echo/echo"}, "input", "input"),
        ({"model": "echo/echo", "input": []}, "input", "non-empty"),
        ({"model": "echo/echo", "input": 5}, "input", "string"),
        ({"model": "echo/echo", "input": "hi", "stream": "yes"}, "stream", "boolean"),
        ({"model": "echo/echo", "input": [{"role": "bot", "content": "x"}]}, "input[0].role", ""),
        ({"model": "echo/echo", "input": [{"type": "bogus"}]}, "input[0].type", "bogus"),
        ({"model": "echo/echo", "input": ["x"]}, "input[0]", "object"),
        (
            {"model": "echo/echo", "input": [{"role": "user", "content": [{"type": "x"}]}]},
            "input[0].content[0].type",
            "input_text",
        ),
        (
            {
                "model": "echo/echo",
                "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}],
            },
            "input[0].content[0].image_url",
            "file_id",
        ),
        (
            {"model": "echo/echo", "input": [{"type": "function_call", "name": "f"}]},
            "input[0].call_id",
            "call_id",
        ),
        (
            {
                "model": "echo/echo",
                "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}],
            },
            "input[0].arguments",
            "string",
        ),
        (
            {"model": "echo/echo", "input": [{"type": "item_reference", "id": "msg_1"}]},
            "input[0].type",
            "stores none",
        ),
        ({"model": "echo/echo", "input": "hi", "store": True}, "store", "store"),
        (
            {"model": "echo/echo", "input": "hi", "previous_response_id": "resp_1"},
            "previous_response_id",
            "whole conversation",
        ),
        ({"model": "echo/echo", "input": "hi", "conversation": "c1"}, "conversation", ""),
        ({"model": "echo/echo", "input": "hi", "background": True}, "background", ""),
        ({"model": "echo/echo", "input": "hi", "tools": {}}, "tools", "array"),
        (
            {"model": "echo/echo", "input": "hi", "tools": [{"type": "file_search"}]},
            "tools[0].type",
            "file_search",
        ),
        (
            {"model": "echo/echo", "input": "hi", "tools": [{"type": "function"}]},
            "tools[0].name",
            "name",
        ),
        (
            {
                "model": "echo/echo",
                "input": "hi",
                "tools": [{"type": "function", "name": "f"}, {"type": "custom", "name": "f"}],
            },
            "tools[1].name",
            "twice",
        ),
        (
            {
                "model": "echo/echo",
                "input": "hi",
                "tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "mcp"}]}],
            },
            "tools[0].tools[0].type",
            "",
        ),
        (
            {
                "model": "echo/echo",
                "input": "hi",
                "tool_choice": {"type": "function", "name": "nope"},
            },
            "tool_choice.name",
            "not among",
        ),
        ({"model": "echo/echo", "input": "hi", "max_output_tokens": 0}, "max_output_tokens", ""),
        ({"model": "echo/echo", "input": "hi", "max_output_tokens": True}, "max_output_tokens", ""),
        ({"model": "echo/echo", "input": "hi", "temperature": 3}, "temperature", ""),
        ({"model": "echo/echo", "input": "hi", "include": "x"}, "include", ""),
        ({"model": "echo/echo", "input": "hi", "reasoning": "high"}, "reasoning", ""),
        (
            {"model": "echo/echo", "input": "hi", "text": {"format": {"type": "xml"}}},
            "text.format.type",
            "",
        ),
        ({"model": "echo/echo", "input": "hi", "api_base": "http://evil"}, "api_base", ""),
        (
            {"model": "echo/echo", "input": [{"role": "system", "content": "only a system"}]},
            "input",
            "no message",
        ),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    echo_gateway: str, body: dict[str, Any], param: str, needle: str
) -> None:
    error = error_of(post_responses(echo_gateway, body), 400)
    assert error["param"] == param
    assert needle in error["message"]
    assert error["type"] == "invalid_request_error"


def test_the_sdk_raises_its_bad_request_error(echo_gateway: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(echo_gateway).responses.create(
            model="echo/echo", input="hi", previous_response_id="resp_123"
        )
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["param"] == "previous_response_id"


def test_tool_parameters_may_use_any_property_name(echo_gateway: str) -> None:
    """A tool's JSON schema (and a json_schema format) is the client's: its property names are
    not request fields, so ``headers`` or ``api_key`` there is no forbidden key; outside a
    schema it is."""
    schema = {"type": "object", "properties": {"headers": {"type": "string"}}}
    body = {
        "model": "echo/echo",
        "input": "hi",
        "tools": [
            {"type": "function", "name": "f", "parameters": schema},
            {
                "type": "namespace",
                "name": "ns",
                "tools": [{"type": "function", "name": "g", "parameters": schema}],
            },
        ],
        "text": {"format": {"type": "json_schema", "name": "out", "schema": schema}},
    }
    assert post_responses(echo_gateway, body).status_code == 200
    bad = {**body, "tools": [{"type": "function", "name": "f", "api_key": "x"}]}
    assert error_of(post_responses(echo_gateway, bad), 400)["code"] == "forbidden_parameter"


def test_non_json_and_wrong_method_and_unknown_model(echo_gateway: str) -> None:
    assert error_of(post_responses(echo_gateway, b"{not json"), 400)["code"] == "invalid_json"
    assert error_of(post_responses(echo_gateway, b"[1]"), 400)["code"] == "invalid_json"
    wrong = httpx.get(echo_gateway + "/v1/responses", timeout=10)
    error_of(wrong, 405)
    text = httpx.post(
        echo_gateway + "/v1/responses",
        content=b"{}",
        headers={"content-type": "text/plain"},
        timeout=10,
    )
    error_of(text, 415)
    missing = post_responses(echo_gateway, {"model": "nope/nope", "input": "hi"})
    assert error_of(missing, 404)["code"] == "model_not_found"


def test_a_client_key_is_needed_when_keys_are_set(make_gateway: Any) -> None:
    url = make_gateway(api_keys=["sk-client-1"])
    error_of(post_responses(url, {"model": "echo/echo", "input": "hi"}), 401)
    reply = sdk(url, "sk-client-1").responses.create(model="echo/echo", input="hi")
    assert reply.output_text == "hi"


def test_a_web_search_tool_is_dropped_with_a_warning(
    echo_gateway: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No upstream here runs OpenAI's hosted web search: Codex always offers it, so it is
    dropped (with a warning in the log) rather than refused."""
    caplog.set_level("DEBUG", logger="gateway")
    body = {
        "model": "echo/echo",
        "input": "hi",
        "tools": [{"type": "web_search", "external_web_access": False}],
        "tool_choice": {"type": "web_search"},
    }
    for _ in range(2):
        reply = post_responses(echo_gateway, body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["tools"] == []
    dropped = [r for r in caplog.records if "dropped a web_search tool" in r.getMessage()]
    assert len(dropped) == 2
    assert dropped[1].levelname == "DEBUG", "warned once, then quiet"
