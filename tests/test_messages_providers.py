"""``POST /v1/messages`` in front of the anthropic and gemini providers (their stand-ins over
loopback) and of the scripted plugin (installed with pip, the gateway spawned as a user runs
it), with the ``anthropic`` SDK as client and every stream checked by the grammar checker.

What only these providers can show: Anthropic's signed thinking going back intact (bugs #10,
#15), its own stop reasons and cache counts kept, Gemini's thought signature surviving a tool
round trip in the tool id, and reasoning made by one provider never replayed to another.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from gateway.app import create_app
from providers.testing import MessagesSummary, check_messages_stream, parse_messages_sse
from tests.conftest import settings
from tests.support.anthropic_upstream import (
    REDACTED,
    SIGNATURE,
    TOOLS,
    AnthropicUpstream,
    serve_anthropic_upstream,
)
from tests.support.gemini_upstream import KEY as GEMINI_KEY
from tests.support.gemini_upstream import SIGNATURE as GEMINI_SIGNATURE
from tests.support.gemini_upstream import GeminiUpstream, serve_gemini
from tests.support.plugin_install import serve_scripted
from tests.support.servers import serve_in_thread

KEY = "gw-key-providers"
CLAUDE_MODELS = [
    *("text", "thinking", "redacted", "tools", "tools-interleaved", "noarg", "usage", "pings"),
    *("error-event:4", "status:529", "stop:pause_turn", "stop:stop_sequence", "stop:refusal"),
    "stop:model_context_window_exceeded",
]
GEMINI_MODELS = [
    *("text", "thoughts", "parallel-tools", "trailing-stop", "signature", "noarg-tool"),
    *("stream-error", "truncate", "rate-limited"),
]


@pytest.fixture(scope="module")
def claude() -> Iterator[tuple[str, AnthropicUpstream]]:
    with serve_anthropic_upstream() as served:
        yield served


@pytest.fixture(scope="module")
def gemini() -> Iterator[tuple[str, GeminiUpstream]]:
    with serve_gemini() as served:
        yield served


@pytest.fixture(scope="module")
def gateway(
    claude: tuple[str, AnthropicUpstream], gemini: tuple[str, GeminiUpstream]
) -> Iterator[str]:
    config = settings(
        api_keys=[KEY],
        providers={
            "claude": {
                "type": "anthropic",
                "base_url": claude[0],
                "api_key": "sk-ant-api03-canary-0123456789abcdefXYZ",
                "models": CLAUDE_MODELS,
                "sampling_models": ["*"],
                "adaptive_thinking_models": ["pings"],  # a scenario name, as a model on it
                "max_retries": 0,
            },
            "gem": {
                "type": "gemini",
                "base_url": gemini[0],
                "api_key": GEMINI_KEY,
                "models": GEMINI_MODELS,
                "max_retries": 0,
            },
        },
        aliases={"claude-sonnet-4-5-20250929": "claude/thinking"},
    )
    with serve_in_thread(create_app(config)) as url:
        yield url


def client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0)


def raw_stream(url: str, body: dict[str, Any]) -> MessagesSummary:
    with httpx.stream(
        "POST",
        url + "/v1/messages",
        json={"max_tokens": 2000, "messages": USER, **body, "stream": True},
        headers={"x-api-key": KEY},
        timeout=10,
    ) as response:
        assert response.status_code == 200, response.read()
        text = response.read().decode()
    return check_messages_stream(parse_messages_sse(text))


USER: list[Any] = [{"role": "user", "content": "one two three"}]


# --- anthropic --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "blocks", "stop"),
    [
        ("text", ["text"], "end_turn"),
        ("pings", ["text"], "end_turn"),
        ("thinking", ["thinking", "text"], "end_turn"),
        ("redacted", ["redacted_thinking", "text"], "end_turn"),
        ("tools", ["text", "tool_use", "tool_use", "tool_use"], "tool_use"),
        ("tools-interleaved", ["tool_use", "tool_use", "tool_use"], "tool_use"),
        ("noarg", ["tool_use", "tool_use"], "tool_use"),
        ("stop:pause_turn", ["text"], "pause_turn"),
        ("stop:refusal", ["text"], "refusal"),
        ("stop:model_context_window_exceeded", ["text"], "model_context_window_exceeded"),
    ],
)
def test_anthropic_streams_keep_the_grammar_and_stop_reasons(
    gateway: str, model: str, blocks: list[str], stop: str
) -> None:
    summary = raw_stream(gateway, {"model": f"claude/{model}"})
    assert summary.blocks == blocks and summary.stop_reason == stop
    whole = client(gateway).messages.create(model=f"claude/{model}", max_tokens=2000, messages=USER)
    assert [b.type for b in whole.content] == blocks and whole.stop_reason == stop


def test_anthropic_tool_inputs_survive_interleaving(gateway: str) -> None:
    for model in ("tools", "tools-interleaved"):
        summary = raw_stream(gateway, {"model": f"claude/{model}"})
        assert [(t.id, t.name, t.input) for t in summary.tools] == [
            (call_id, name, value) for call_id, name, _, value in TOOLS
        ]
    noarg = raw_stream(gateway, {"model": "claude/noarg"})
    assert [t.input for t in noarg.tools] == [{}, {}]


def test_anthropic_stop_sequence_is_kept(gateway: str) -> None:
    whole = client(gateway).messages.create(
        model="claude/stop:stop_sequence", max_tokens=100, messages=USER, stop_sequences=["END"]
    )
    assert whole.stop_reason == "stop_sequence" and whole.stop_sequence == "END"


def test_anthropic_cache_counts_are_anthropics_own(gateway: str) -> None:
    """Bug #9: cache reads and writes come back as the upstream said them."""
    whole = client(gateway).messages.create(model="claude/usage", max_tokens=100, messages=USER)
    assert (
        whole.usage.input_tokens,
        whole.usage.cache_read_input_tokens,
        whole.usage.cache_creation_input_tokens,
        whole.usage.output_tokens,
    ) == (11, 31, 20, 7)
    summary = raw_stream(gateway, {"model": "claude/usage"})
    assert summary.usage["input_tokens"] == 11 and summary.usage["cache_read_input_tokens"] == 31


def test_regression_signed_thinking_round_trips_to_anthropic(
    gateway: str, claude: tuple[str, AnthropicUpstream]
) -> None:
    """Bugs #10 and #15: the signature reaches the client untouched, and the replayed turn
    reaches Anthropic starting with the signed thinking block, then the tool call."""
    sdk = client(gateway)
    with sdk.messages.stream(
        model="claude-sonnet-4-5-20250929", max_tokens=2000, messages=USER
    ) as stream:
        final = stream.get_final_message()
    thinking = final.content[0]
    assert thinking.type == "thinking" and thinking.signature == SIGNATURE
    history: list[Any] = [
        *USER,
        {
            "role": "assistant",
            "content": [
                thinking.model_dump(),
                {"type": "tool_use", "id": "toolu_9", "name": "get_time", "input": {"tz": "CET"}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "9:00"}],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "redacted_thinking", "data": REDACTED},
                {"type": "text", "text": "Hm."},
            ],
        },
        {"role": "user", "content": "go on"},
    ]
    claude[1].reset()
    sdk.messages.create(model="claude/text", max_tokens=2000, messages=history)
    sent = claude[1].requests[-1].body["messages"]
    assert sent[1]["content"] == [
        {"type": "thinking", "thinking": thinking.thinking, "signature": SIGNATURE},
        {"type": "tool_use", "id": "toolu_9", "name": "get_time", "input": {"tz": "CET"}},
    ]
    assert sent[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_9", "content": "9:00"}
    ]
    assert sent[3]["content"][0] == {"type": "redacted_thinking", "data": REDACTED}


def test_thinking_from_another_provider_never_reaches_anthropic(
    gateway: str, claude: tuple[str, AnthropicUpstream]
) -> None:
    history: list[Any] = [
        *USER,
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "gemini's", "signature": "llmgw:gem:c2ln"},
                {"type": "thinking", "thinking": "unsigned", "signature": ""},
                {"type": "text", "text": "A."},
            ],
        },
        {"role": "user", "content": "more"},
    ]
    claude[1].reset()
    client(gateway).messages.create(model="claude/text", max_tokens=100, messages=history)
    assert claude[1].requests[-1].body["messages"][1]["content"] == [{"type": "text", "text": "A."}]


def test_claude_code_shaped_request_reaches_anthropic(
    gateway: str, claude: tuple[str, AnthropicUpstream]
) -> None:
    """System blocks with cache_control, a mid-conversation system message, adaptive thinking
    with an effort, Claude Code's other fields: mapped or ignored, never an error."""
    body: dict[str, Any] = {
        "model": "claude/pings",
        "max_tokens": 32000,
        "system": [
            {"type": "text", "text": "You are Claude Code."},
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
            },
            {"role": "system", "content": "The user switched to plan mode."},
            {"role": "user", "content": "plan it"},
        ],
        "tools": [
            {
                "name": "Bash",
                "description": "run",
                "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
            }
        ],
        "metadata": {"user_id": json.dumps({"device_id": "x", "session_id": "y"})},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "stream": True,
    }
    claude[1].reset()
    response = httpx.post(
        gateway + "/v1/messages?beta=true",
        json=body,
        headers={"authorization": f"Bearer {KEY}", "anthropic-beta": "claude-code-20250219"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    check_messages_stream(parse_messages_sse(response.text))
    sent = claude[1].requests[-1].body
    assert sent["system"] == [
        {"type": "text", "text": "You are Claude Code.\n\nBe brief."},
        {"type": "text", "text": "The user switched to plan mode."},
    ]
    assert sent["thinking"] == {"type": "adaptive"} and sent["output_config"] == {"effort": "high"}
    assert sent["max_tokens"] == 32000
    assert sent["tools"][0]["name"] == "Bash"
    assert "context_management" not in sent and "metadata" not in sent


def test_thinking_that_cannot_fit_is_dropped_not_refused(
    gateway: str, claude: tuple[str, AnthropicUpstream]
) -> None:
    claude[1].reset()
    client(gateway).messages.create(
        model="claude/text",
        max_tokens=500,
        messages=USER,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    assert "thinking" not in claude[1].requests[-1].body
    client(gateway).messages.create(
        model="claude/text",
        max_tokens=8000,
        messages=USER,
        thinking={"type": "enabled", "budget_tokens": 2000},
    )
    assert claude[1].requests[-1].body["thinking"]["type"] == "enabled"


def test_anthropic_overloaded_and_mid_stream_errors(gateway: str) -> None:
    with pytest.raises(anthropic.OverloadedError):
        client(gateway).messages.create(model="claude/status:529", max_tokens=10, messages=USER)
    summary = raw_stream(gateway, {"model": "claude/error-event:4"})
    assert summary.error is not None and summary.stop_reason is None
    # The upstream said overloaded_error mid-stream: the client sees that type (Claude Code
    # retries on it), not a generic api_error.
    assert summary.error["type"] == "overloaded_error"
    with (
        pytest.raises(anthropic.APIStatusError),
        client(gateway).messages.stream(
            model="claude/error-event:4", max_tokens=10, messages=USER
        ) as stream,
    ):
        stream.get_final_message()


# --- gemini -----------------------------------------------------------------------------------


def test_gemini_thoughts_are_thinking_blocks_signed_by_the_gateway(gateway: str) -> None:
    summary = raw_stream(gateway, {"model": "gem/thoughts"})
    assert summary.blocks == ["thinking", "text"] and summary.text == "Answer."
    assert summary.thinking[0].signature.startswith("llmgw:gem:")


@pytest.mark.parametrize(
    ("model", "count"), [("parallel-tools", 3), ("trailing-stop", 1), ("noarg-tool", 1)]
)
def test_gemini_tool_calls_end_in_tool_use(gateway: str, model: str, count: int) -> None:
    """Bug #6: a trailing STOP after a function call still ends in ``tool_use``."""
    summary = raw_stream(gateway, {"model": f"gem/{model}"})
    assert len(summary.tools) == count and summary.stop_reason == "tool_use"
    assert [t.index for t in summary.tools] == list(
        range(len(summary.blocks) - count, len(summary.blocks))
    )


def test_regression_gemini_thought_signature_round_trips_in_the_tool_id(
    gateway: str, gemini: tuple[str, GeminiUpstream]
) -> None:
    """Bug #10 through messages: the signature rides in the tool_use id and reaches Gemini on
    the replayed functionCall part; the upstream's own id is what it gets back."""
    sdk = client(gateway)
    first = sdk.messages.create(model="gem/signature", max_tokens=100, messages=USER)
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == "lookup" and call.input == {"q": "signed"}
    history: list[Any] = [
        *USER,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": '{"answer": 42}'}
            ],
        },
    ]
    second = sdk.messages.create(model="gem/signature", max_tokens=100, messages=history)
    assert second.content[0].type == "text" and second.content[0].text == "signature ok"
    sent = gemini[1].calls[-1].request.body["contents"]
    assert sent[1]["parts"][-1]["thoughtSignature"] == GEMINI_SIGNATURE
    assert "gsig" not in json.dumps(sent)  # the upstream's own ids, nothing of the gateway's


def gemini_tool_round(sdk: anthropic.Anthropic, **result: Any) -> list[Any]:
    """A conversation in which gem/signature called its tool, and the tool_result (its
    ``result`` fields) answering that call."""
    first = sdk.messages.create(model="gem/signature", max_tokens=100, messages=USER)
    call = first.content[-1]
    assert call.type == "tool_use"
    return [
        *USER,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, **result}],
        },
    ]


def test_gemini_signature_in_a_tool_id_is_stripped_for_anthropic(
    gateway: str, gemini: tuple[str, GeminiUpstream], claude: tuple[str, AnthropicUpstream]
) -> None:
    sdk = client(gateway)
    history = gemini_tool_round(sdk, content="42")
    claude[1].reset()
    sdk.messages.create(model="claude/text", max_tokens=100, messages=history)
    sent = json.dumps(claude[1].requests[-1].body)
    assert "gsig" not in sent and "thought_signature" not in sent
    tool_use = claude[1].requests[-1].body["messages"][1]["content"][-1]
    assert tool_use["type"] == "tool_use" and not tool_use["id"].startswith("gsig")


def test_a_failed_tool_says_so_to_anthropic_and_gemini(
    gateway: str, gemini: tuple[str, GeminiUpstream], claude: tuple[str, AnthropicUpstream]
) -> None:
    """A tool_result's is_error reaches Anthropic as is_error and Gemini as the "error" key of
    its functionResponse (it was dropped: the model read an error as the tool's output)."""
    sdk = client(gateway)
    history: list[Any] = [
        *USER,
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_a", "name": "lookup", "input": {"q": "a"}},
                {"type": "tool_use", "id": "toolu_b", "name": "lookup", "input": {"q": "b"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "no such file"}
                | {"is_error": True},
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": "42"},
            ],
        },
    ]
    claude[1].reset()
    sdk.messages.create(model="claude/text", max_tokens=100, messages=history)
    results = claude[1].requests[-1].body["messages"][2]["content"]
    assert results == [
        {"type": "tool_result", "tool_use_id": "toolu_a", "content": "no such file"}
        | {"is_error": True},
        {"type": "tool_result", "tool_use_id": "toolu_b", "content": "42"},
    ]

    failed = gemini_tool_round(sdk, content="timed out", is_error=True)
    sdk.messages.create(model="gem/signature", max_tokens=100, messages=failed)
    sent = gemini[1].calls[-1].request.body["contents"]
    response = sent[-1]["parts"][0]["functionResponse"]
    assert response["name"] == "lookup" and response["response"] == {"error": "timed out"}


def test_is_error_must_be_a_boolean(gateway: str) -> None:
    history: list[Any] = [
        *USER,
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_a", "name": "lookup", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "x", "is_error": "yes"}
            ],
        },
    ]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(gateway).messages.create(model="claude/text", max_tokens=100, messages=history)
    assert "messages.2.content.0.is_error" in str(caught.value)


@pytest.mark.parametrize("model", ["stream-error", "truncate"])
def test_regression_gemini_failures_mid_stream_are_error_events(gateway: str, model: str) -> None:
    """Bug #12 on Gemini: an error event, or a stream cut without a finishReason, ends the
    answer with ``event: error``, never a stop reason."""
    summary = raw_stream(gateway, {"model": f"gem/{model}"})
    assert summary.error is not None and summary.stop_reason is None
    assert GEMINI_KEY not in json.dumps(summary.error)


def test_gemini_rate_limit_is_anthropics_429(gateway: str) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        client(gateway).messages.create(model="gem/rate-limited", max_tokens=10, messages=USER)
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(caught.value.response.headers["retry-after"]) >= 1


# --- the scripted plugin, installed with pip --------------------------------------------------

SCRIPT = [
    {
        "match": "(?i)weather",
        "reasoning": "The user wants the weather: ask the tool.",
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
    },
    {"match": '"temp": \\d+', "content": "It is 18 degrees and mild in Paris."},
]
WEATHER_TOOL: list[Any] = [
    {
        "name": "get_weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


@pytest.fixture(scope="module")
def scripted_gateway(
    scripted_site: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with serve_scripted(
        scripted_site,
        tmp_path_factory.mktemp("scripted-home"),
        SCRIPT,
        'GATEWAY_ALIASES={"claude-haiku-4-5-20251001": "bot/agent"}',
        f'GATEWAY_API_KEYS=["{KEY}"]',
    ) as url:
        yield url


def test_scripted_plugin_tool_loop_through_messages(scripted_gateway: str) -> None:
    question: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]
    summary = raw_stream(
        scripted_gateway,
        {"model": "claude-haiku-4-5-20251001", "messages": question, "tools": WEATHER_TOOL},
    )
    assert summary.blocks == ["thinking", "tool_use"]
    assert summary.thinking[0].thinking == "The user wants the weather: ask the tool."
    assert [(t.name, t.input) for t in summary.tools] == [("get_weather", {"city": "Paris"})]
    assert summary.stop_reason == "tool_use"

    sdk = client(scripted_gateway)
    first = sdk.messages.create(
        model="bot/agent", max_tokens=100, messages=question, tools=WEATHER_TOOL
    )
    call = first.content[-1]
    assert call.type == "tool_use"
    answered: list[Any] = [
        *question,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": '{"temp": 18}'}],
        },
    ]
    with sdk.messages.stream(
        model="bot/agent", max_tokens=100, messages=answered, tools=WEATHER_TOOL
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "text"
    assert final.content[0].text == "It is 18 degrees and mild in Paris."
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


def test_images_and_documents_reach_anthropic_as_they_were_sent(
    gateway: str, claude: tuple[str, AnthropicUpstream]
) -> None:
    png = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    pdf = {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}
    content: list[Any] = [
        {"type": "image", "source": png},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "document", "source": pdf},
        {"type": "text", "text": "what is this?"},
    ]
    claude[1].reset()
    answer = client(gateway).messages.create(
        model="claude/text", max_tokens=100, messages=[{"role": "user", "content": content}]
    )
    assert answer.stop_reason == "end_turn"
    assert claude[1].requests[-1].body["messages"][0]["content"] == [
        {"type": "image", "source": png},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "document", "source": pdf},
        {"type": "text", "text": "what is this?"},
    ]
