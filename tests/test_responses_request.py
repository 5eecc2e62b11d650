"""A Responses request as the chat body providers get, and the reasoning carrier that keeps a
replay to the deployment that produced it (no server needed: pure mapping)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from gateway.errors import InvalidRequest
from gateway.surfaces import responses_reasoning
from gateway.surfaces.responses_reasoning import Reasoning
from gateway.surfaces.responses_request import ResponsesRequest, parse_responses_request
from gateway.surfaces.responses_tools import ToolName
from gateway.validation import Limits


def parse(**fields: Any) -> ResponsesRequest:
    body = {"model": "m", **fields}
    return parse_responses_request(json.dumps(body).encode(), Limits(max_messages=50))


def carrier(origin: str, **fields: Any) -> dict[str, Any]:
    token = responses_reasoning.encode(Reasoning(origin, **fields))
    return {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": token}


def call(call_id: str, name: str = "f", arguments: str = "{}") -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


def test_the_carrier_round_trips_and_refuses_what_is_not_its_own() -> None:
    thought = Reasoning("p/m", "text", "sig", "red", {"c1": {"extra_content": {"x": 1}}})
    assert responses_reasoning.decode(responses_reasoning.encode(thought)) == thought
    assert responses_reasoning.decode(responses_reasoning.encode(Reasoning("p/m"))) == Reasoning(
        "p/m"
    )
    payload = base64.urlsafe_b64encode(b'{"t": "no origin"}').decode()
    not_ours = [
        None,
        5,
        "gAAAAABopenai",
        responses_reasoning.PREFIX + "%%%",
        responses_reasoning.PREFIX + base64.urlsafe_b64encode(b"[1]").decode(),
        responses_reasoning.PREFIX + payload,
        responses_reasoning.PREFIX
        + base64.urlsafe_b64encode(b'{"o": "p", "x": {"c": 1}}').decode(),
        responses_reasoning.PREFIX + "A" * (responses_reasoning.MAX_TOKEN_CHARS + 1),
    ]
    for token in not_ours:
        assert responses_reasoning.decode(token) is None, token


def test_messages_map_to_chats_roles_and_parts() -> None:
    request = parse(
        instructions="sys",
        input=[
            {"role": "developer", "content": "dev"},
            {"role": "user", "content": [{"type": "input_text", "text": "a"}]},
            {"role": "assistant", "content": "b"},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": "https://x/i.png", "detail": "low"},
                    {
                        "type": "input_file",
                        "file_data": "data:application/pdf;base64,AA",
                        "filename": "f.pdf",
                    },
                ],
            },
        ],
    )
    assert request.body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "developer", "content": "dev"},
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
        {"role": "assistant", "content": "b"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "https://x/i.png", "detail": "low"}},
                {
                    "type": "file",
                    "file": {"file_data": "data:application/pdf;base64,AA", "filename": "f.pdf"},
                },
            ],
        },
    ]


def test_a_run_of_assistant_items_is_one_turn_and_outputs_are_tool_messages() -> None:
    request = parse(
        input=[
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "let me see"}]},
            call("c1", "f", '{"a":1}'),
            call("c2", "g"),
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [
                    {"type": "input_text", "text": "two"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AA"},
                ],
            },
            {"role": "assistant", "content": "done"},
            call("c3"),
            {"role": "assistant", "content": "after the call"},
        ]
    )
    messages = request.body["messages"]
    assert [m["role"] for m in messages] == [
        "user",
        "assistant",
        "tool",
        "tool",
        "user",
        "assistant",
        "assistant",
    ]
    assert messages[1]["content"] == "let me see"
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["c1", "c2"]
    assert messages[3] == {"role": "tool", "tool_call_id": "c2", "content": "two"}
    assert messages[4]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}
    ], "a tool's image follows the run of tool messages"
    assert messages[5]["content"] == "done" and messages[5]["tool_calls"][0]["id"] == "c3"
    assert messages[6] == {"role": "assistant", "content": "after the call"}


def test_reasoning_goes_only_to_its_deployment() -> None:
    extra = {"extra_content": {"google": {"thought_signature": "c2ln"}}}
    request = parse(
        input=[
            {"role": "user", "content": "q"},
            carrier("claude/x", text="thought", signature="sig"),
            carrier("gem/y", call_extras={"c1": extra}),
            {"type": "reasoning", "id": "rs_o", "summary": [], "encrypted_content": "gAAAA"},
            call("c1"),
            {"type": "function_call_output", "call_id": "c1", "output": "r"},
        ]
    )
    plain = request.body["messages"][1]
    assert set(plain) == {"role", "content", "tool_calls"}
    assert request.body_for("other/z") is request.body
    claude = request.body_for("claude/x")["messages"][1]
    assert (claude["reasoning_content"], claude["reasoning_signature"]) == ("thought", "sig")
    assert "extra_content" not in claude["tool_calls"][0]
    gem = request.body_for("gem/y")["messages"][1]
    assert "reasoning_content" not in gem
    assert gem["tool_calls"][0]["extra_content"] == extra["extra_content"]
    assert "reasoning_content" not in request.body["messages"][1], "the shared body is untouched"


def test_reasoning_alone_keeps_an_assistant_turn_for_its_deployment() -> None:
    request = parse(
        input=[
            {"role": "user", "content": "q"},
            carrier("p/m", redacted="R"),
            {"role": "user", "content": "again"},
        ]
    )
    assert request.body_for("p/m")["messages"][1] == {
        "role": "assistant",
        "content": "",
        "redacted_reasoning": "R",
    }


def test_tools_choice_and_options() -> None:
    request = parse(
        input="q",
        tools=[
            {
                "type": "function",
                "name": "f",
                "description": "d",
                "parameters": {"type": "object"},
                "strict": True,
            },
            {"type": "custom", "name": "patch", "description": "p"},
            {
                "type": "namespace",
                "name": "ns",
                "description": "n",
                "tools": [{"type": "function", "name": "g"}, {"type": "custom", "name": "h"}],
            },
            {"type": "web_search_preview"},
        ],
        tool_choice={"type": "function", "name": "g", "namespace": "ns"},
        parallel_tool_calls=False,
        max_output_tokens=99,
        temperature=0.2,
        top_p=0.5,
        reasoning={"effort": "high", "summary": "detailed"},
        text={
            "format": {
                "type": "json_schema",
                "name": "o",
                "schema": {"type": "object"},
                "strict": True,
            }
        },
        user="u",
        prompt_cache_key="k",
        safety_identifier="s",
        metadata={"a": "b"},
        truncation="auto",
    )
    body = request.body
    assert [t["function"]["name"] for t in body["tools"]] == ["f", "patch", "ns__g", "ns__h"]
    assert body["tools"][0]["function"] == {
        "name": "f",
        "description": "d",
        "parameters": {"type": "object"},
        "strict": True,
    }
    assert request.tools == {
        "f": ToolName("f"),
        "patch": ToolName("patch", custom=True),
        "ns__g": ToolName("g", "ns"),
        "ns__h": ToolName("h", "ns", custom=True),
    }
    assert body["tool_choice"] == {"type": "function", "function": {"name": "ns__g"}}
    assert body["parallel_tool_calls"] is False
    assert body["max_completion_tokens"] == 99 == request.max_output_tokens
    assert (body["temperature"], body["top_p"]) == (0.2, 0.5)
    assert body["reasoning_effort"] == "high"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "o", "schema": {"type": "object"}, "strict": True},
    }
    assert (body["user"], body["prompt_cache_key"]) == ("u", "k")
    assert "safety_identifier" not in body and "metadata" not in body
    assert request.dropped_tools == ("web_search_preview",)
    assert request.echo["metadata"] == {"a": "b"}


def test_without_tools_no_tool_options_go_upstream() -> None:
    body = parse(input="q", parallel_tool_calls=True, tool_choice="auto").body
    assert "parallel_tool_calls" not in body and "tool_choice" not in body
    dropped = parse(
        input="q", tools=[{"type": "web_search"}], tool_choice={"type": "web_search"}
    ).body
    assert "tools" not in dropped and "tool_choice" not in dropped


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0].type",
        ),
        (
            {"input": [{"role": "assistant", "content": [{"type": "input_image"}]}]},
            "input[0].content[0]",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].file_data",
        ),
        (
            {"input": [{"type": "function_call_output", "call_id": "c", "output": 5}]},
            "input[0].output",
        ),
        ({"input": [{"type": "custom_tool_call", "call_id": "c", "name": "n"}]}, "input[0].input"),
        ({"input": [{"type": "reasoning", "encrypted_content": 5}]}, "input[0].encrypted_content"),
        (
            {
                "input": [
                    {
                        "type": "function_call",
                        "call_id": "c",
                        "name": "n",
                        "arguments": "{}",
                        "namespace": 1,
                    }
                ]
            },
            "input[0].namespace",
        ),
        ({"input": [{"role": "user", "content": "x"}] * 51}, "input"),
        ({"input": "q", "instructions": 5}, "instructions"),
        (
            {"input": "q", "tools": [{"type": "namespace", "name": "n", "tools": []}]},
            "tools[0].tools",
        ),
        (
            {"input": "q", "tools": [{"type": "function", "name": "f", "parameters": "x"}]},
            "tools[0].parameters",
        ),
        (
            {"input": "q", "tools": [{"type": "function", "name": "f", "description": 5}]},
            "tools[0].description",
        ),
        ({"input": "q", "tool_choice": {"type": "mcp"}}, "tool_choice"),
        (
            {"input": "q", "text": {"format": {"type": "json_schema", "name": "o"}}},
            "text.format.schema",
        ),
        (
            {"input": "q", "text": {"format": {"type": "json_schema", "schema": {}}}},
            "text.format.name",
        ),
        ({"input": "q", "text": "plain"}, "text"),
        ({"input": "q", "reasoning": {"effort": 5}}, "reasoning.effort"),
        ({"input": "q", "reasoning": {"summary": 5}}, "reasoning.summary"),
        ({"input": "q", "prompt": {"id": "p"}}, "prompt"),
        ({"input": "q", "user": 5}, "user"),
        ({"input": "q", "top_p": 2}, "top_p"),
    ],
)
def test_bad_fields_are_named(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(**fields)
    assert caught.value.param == param
