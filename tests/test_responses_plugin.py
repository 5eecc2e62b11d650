"""``POST /v1/responses`` in front of a plugin: the example ``scripted`` provider, installed with
pip as a user would and served by a spawned gateway, through a whole tool-call round trip the
way Codex makes one (stream, run the tool, post the whole history back)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.clients import sdk
from tests.support.plugin_install import serve_scripted
from tests.support.responses_client import validated_stream

SCRIPT = [
    {
        "match": "(?i)weather",
        "reasoning": "The user wants the weather: ask the tool.",
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
    },
    {"match": '"temp": \\d+', "content": "It is 18 degrees and mild in Paris."},
    {"match": "(?i)^hello", "content": "Hello! Ask me about the weather."},
    {"match": "(?i)^fail", "error": 503},
]
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": False,
    }
]
QUESTION: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]


@pytest.fixture(scope="module")
def scripted_gateway(
    scripted_site: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    work = tmp_path_factory.mktemp("scripted-run")
    with serve_scripted(
        scripted_site, work, SCRIPT, "GATEWAY_PROVIDERS__BOT__MAX_RETRIES=0"
    ) as url:
        yield url


def test_a_tool_call_round_trip_through_the_plugin(scripted_gateway: str) -> None:
    request: dict[str, Any] = {
        "model": "bot/agent",
        "input": QUESTION,
        "tools": TOOLS,
        "store": False,
    }
    summary = validated_stream(scripted_gateway, request)
    assert summary.reasoning == "The user wants the weather: ask the tool."
    assert [item["type"] for item in summary.items] == ["reasoning", "function_call"]
    (call,) = summary.tool_calls
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})

    with sdk(scripted_gateway).responses.stream(**request) as stream:
        first = stream.get_final_response()
    assert [item.type for item in first.output] == ["reasoning", "function_call"]
    tool_call = first.output[1]
    assert tool_call.type == "function_call"
    history: list[Any] = [
        *QUESTION,
        *(item.model_dump(exclude_none=True) for item in first.output),
        {"type": "function_call_output", "call_id": tool_call.call_id, "output": '{"temp": 18}'},
    ]
    final = sdk(scripted_gateway).responses.create(
        model="bot/agent", input=history, tools=TOOLS, store=False
    )
    assert final.output_text == "It is 18 degrees and mild in Paris."
    assert final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens > 0


def test_a_plugin_error_before_the_first_byte_is_openais_error(scripted_gateway: str) -> None:
    """The upstream's 503 is the gateway's 502 (an upstream failure), in OpenAI's shape."""
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(scripted_gateway).responses.create(model="bot/agent", input="fail now")
    assert caught.value.status_code == 502
    assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "upstream_error"
    hello = sdk(scripted_gateway).responses.create(model="bot/agent", input="hello")
    assert hello.output_text == "Hello! Ask me about the weather."
