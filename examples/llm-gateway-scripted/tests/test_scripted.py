"""The scripted provider against the gateway's conformance kit (``providers.testing``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from providers.base import Provider
from providers.errors import UpstreamRejected, UpstreamServerError
from providers.testing import (
    chat_request,
    check_aclose,
    check_cancellation,
    check_provider,
    check_spec,
    expect_provider_error,
    open_provider,
)
from pydantic import ValidationError

from llm_gateway_scripted import SPEC, Options

T = TypeVar("T")

WEATHER = [
    {
        "match": "(?i)weather",
        "reasoning": "The user asks about the weather: call the tool.",
        "tool_calls": [
            {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}},
            {"name": "get_time", "arguments": {}},
        ],
    },
    {"match": '"temp": \\d+', "content": "It is mild in Paris."},
    {"match": "^fail$", "error": 503},
    {"match": "^refuse$", "error": 422},
    {"match": "^half$", "content": "some words then", "error": 500},
    {"match": "^slow$", "content": "one two three", "delay_ms": 300},
    {"content": "I only know the weather."},
]


def write(tmp_path: Path, turns: Any, name: str = "script.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(turns))
    return path


def run_with(script: Path, test: Callable[[Provider], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_provider(SPEC, {"script": str(script)}, name="bot") as provider:
            return await test(provider)

    return asyncio.run(main())


def test_spec_is_a_type_the_gateway_loads() -> None:
    check_spec(SPEC, "scripted")


def test_reasoning_then_tool_calls_with_their_finish(tmp_path: Path) -> None:
    script = write(tmp_path, WEATHER)
    request = chat_request("What's the WEATHER in Paris?", stream=False)
    summary = run_with(script, lambda p: check_provider(p, request, require_usage=True))
    assert summary.reasoning == "The user asks about the weather: call the tool."
    assert summary.text == ""
    assert [(c.id, c.name, json.loads(c.arguments)) for c in summary.tool_calls] == [
        ("call_0", "get_weather", {"city": "Paris", "unit": "C"}),
        ("call_1", "get_time", {}),
    ]
    assert summary.finish_reason == "tool_calls"
    assert summary.usage is not None and summary.usage.source == "estimated"
    assert summary.usage.reasoning_tokens == 9 <= summary.usage.output_tokens


def test_a_tool_result_is_matched_as_the_last_message(tmp_path: Path) -> None:
    script = write(tmp_path, WEATHER)
    messages = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": '{"temp": 18}'},
    ]
    request = chat_request(messages=messages)
    summary = run_with(script, lambda p: check_provider(p, request))
    assert (summary.text, summary.finish_reason) == ("It is mild in Paris.", "stop")


def test_tool_call_ids_go_on_from_the_calls_in_the_conversation(tmp_path: Path) -> None:
    script = write(tmp_path, [{"tool_calls": [{"name": "again", "arguments": {}}]}])
    earlier = {"role": "assistant", "tool_calls": [{"id": "call_0"}, {"id": "call_1"}]}
    request = chat_request(messages=[earlier, {"role": "user", "content": "more"}])
    summary = run_with(script, lambda p: check_provider(p, request))
    assert [c.id for c in summary.tool_calls] == ["call_2"]


def test_the_first_matching_turn_answers_and_a_turn_without_match_takes_the_rest(
    tmp_path: Path,
) -> None:
    script = write(tmp_path, WEATHER)
    summary = run_with(script, lambda p: check_provider(p, chat_request("hello there")))
    assert summary.text == "I only know the weather."
    parts = [{"type": "text", "text": "the "}, {"type": "text", "text": "weather?"}]
    request = chat_request(messages=[{"role": "user", "content": parts}])
    summary = run_with(script, lambda p: check_provider(p, request))
    assert summary.tool_calls[0].name == "get_weather"


def test_no_matching_turn_is_a_400_saying_so(tmp_path: Path) -> None:
    script = write(tmp_path, [{"match": "^hi$", "content": "hello"}])
    error = run_with(script, lambda p: expect_provider_error(p, chat_request("bye")))
    assert isinstance(error, UpstreamRejected) and error.status == 400
    assert "no turn of the script matches the last message" in error.message


def test_an_error_turn_fails_like_an_upstream_with_that_status(tmp_path: Path) -> None:
    script = write(tmp_path, WEATHER)
    error = run_with(script, lambda p: expect_provider_error(p, chat_request("fail")))
    assert isinstance(error, UpstreamServerError) and error.upstream_status == 503
    assert error.retryable
    error = run_with(script, lambda p: expect_provider_error(p, chat_request("refuse")))
    assert isinstance(error, UpstreamRejected) and "scripted error" in error.message


def test_content_then_error_fails_mid_stream(tmp_path: Path) -> None:
    script = write(tmp_path, WEATHER)

    async def test(provider: Provider) -> list[str]:
        texts: list[str] = []
        with pytest.raises(UpstreamServerError):
            async for chunk in provider.stream(chat_request("half")):
                texts += [d.text or "" for d in chunk.deltas]
                assert all(d.finish_reason is None for d in chunk.deltas)
        return texts

    assert "".join(run_with(script, test)) == "some words then"


def test_delay_paces_the_chunks(tmp_path: Path) -> None:
    script = write(tmp_path, WEATHER)
    started = time.monotonic()
    summary = run_with(script, lambda p: check_provider(p, chat_request("slow")))
    assert summary.text == "one two three"
    assert time.monotonic() - started >= 0.9  # three pauses: between the pieces and the finish


def test_closing_and_cancelling_a_slow_turn(tmp_path: Path) -> None:
    script = write(tmp_path, WEATHER)
    run_with(script, lambda p: check_aclose(p, chat_request("slow"), within=2))
    run_with(script, lambda p: check_cancellation(p, chat_request("slow"), within=2))


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        ({"a": 1}, "must hold a JSON list of turns"),
        ([], "holds no turns"),
        ([{"content": "ok"}, "hi"], "turn 2: must be a JSON object"),
        ([{"match": "(", "content": "x"}], "turn 1: match: not a valid regular expression"),
        ([{"content": "x", "colour": "red"}], "turn 1: colour: not a field of a turn"),
        ([{"content": 3}], "turn 1: content: Input should be a valid string"),
        ([{"tool_calls": [{"name": "f", "arguments": "{}"}]}], "turn 1: tool_calls.0.arguments"),
        ([{"tool_calls": [{"arguments": {}}]}], "turn 1: tool_calls.0.name: Field required"),
        ([{"tool_calls": []}], "turn 1: tool_calls: List should have at least 1 item"),
        ([{"error": 200}], "turn 1: error: Input should be greater than or equal to 400"),
        ([{"error": "500"}], "turn 1: error: Input should be a valid integer"),
        ([{"content": "x", "delay_ms": -1}], "turn 1: delay_ms: Input should be greater"),
        ([{"match": "x"}], "turn 1: gives none of reasoning, content, tool_calls and error"),
    ],
)
def test_a_bad_script_is_refused_naming_the_turn_and_field(
    tmp_path: Path, turns: Any, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Options.model_validate({"script": str(write(tmp_path, turns))})
    error = caught.value.errors()[0]
    assert error["loc"] == ("script",)
    assert str(error["msg"]).removeprefix("Value error, ").startswith(message)


def test_a_missing_or_unreadable_script_is_refused(tmp_path: Path) -> None:
    for value, message in [
        (str(tmp_path / "nope.json"), "no such file"),
        (str(tmp_path), "cannot read the file"),
        ("", "must be the path of a JSON file"),
    ]:
        with pytest.raises(ValidationError, match=message):
            Options.model_validate({"script": value})
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(ValidationError, match="not valid JSON"):
        Options.model_validate({"script": str(tmp_path / "bad.json")})
