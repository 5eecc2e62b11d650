"""``POST /v1/responses`` in front of real providers over loopback: the anthropic provider
(stand-in Anthropic API), gemini (stand-in Gemini API) and an openai-type provider (the fault
stand-in), with the openai SDK and raw HTTP as clients. Every stream is checked event by event
against the OpenAI spec and the SDK's types, and as a whole against the Responses grammar of
the conformance kit. The peer bugs of PROVIDERS.md §6 on this surface have a test each: #17
(every event valid), #18 (SDK snapshot arguments == final), #19 (foreign reasoning dropped),
#12 (a mid-stream failure is ``response.failed``), #2/#5 (tool indices and interleaved
argument pieces), #4 (a call without arguments gets ``{}``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.support import gemini_upstream
from tests.support.anthropic_upstream import (
    SIGNATURE,
    TOOLS,
    USAGE_EXPECTED,
    AnthropicUpstream,
    serve_anthropic_upstream,
)
from tests.support.clients import sdk
from tests.support.fault_upstream import FaultUpstream, serve_fault_upstream
from tests.support.gemini_upstream import GeminiUpstream, serve_gemini
from tests.support.openapi_spec import errors, validate
from tests.support.responses_client import (
    post_responses,
    validate_response,
    validated_stream,
)
from tests.support.servers import serve_in_thread
from tests.support.sse_frames import REASONING

CLAUDE = [
    *("text", "thinking", "redacted", "tools", "tools-interleaved", "noarg", "usage"),
    *("error-event:4", "truncate:3", "status:400", "status:429:30", "stop:max_tokens"),
    *("stop:refusal",),
]
GEMINI = ["text", "thoughts", "parallel-tools", "trailing-stop", "signature", "noarg-tool"]
OPENAI = ["tools", "reasoning", "error-frame:2", "status:429", "echo-request", "ok", "stall:2"]


def function_tool(name: str, **fields: Any) -> dict[str, Any]:
    """A function tool as the SDK's ``FunctionToolParam`` has it (``strict`` and
    ``parameters`` are required by the spec)."""
    return {
        "type": "function",
        "name": name,
        "parameters": {"type": "object"},
        "strict": False,
        **fields,
    }


WEATHER = function_tool(
    "get_weather",
    description="The weather in a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


@pytest.fixture(scope="module")
def claude_upstream() -> Iterator[tuple[str, AnthropicUpstream]]:
    with serve_anthropic_upstream() as served:
        yield served


@pytest.fixture(scope="module")
def gemini_served() -> Iterator[tuple[str, GeminiUpstream]]:
    with serve_gemini() as served:
        yield served


@pytest.fixture(scope="module")
def openai_served() -> Iterator[tuple[str, FaultUpstream]]:
    with serve_fault_upstream() as served:
        yield served


@pytest.fixture(scope="module")
def gateway(
    claude_upstream: tuple[str, AnthropicUpstream],
    gemini_served: tuple[str, GeminiUpstream],
    openai_served: tuple[str, FaultUpstream],
) -> Iterator[str]:
    providers: dict[str, Any] = {
        "claude": {
            "type": "anthropic",
            "base_url": claude_upstream[0],
            "api_key": "sk-ant-api03-canary-0123456789abcdef",
            "models": CLAUDE,
            "sampling_models": ["*"],
            "max_retries": 0,
        },
        "gem": {
            "type": "gemini",
            "base_url": gemini_served[0],
            "api_key": gemini_upstream.KEY,
            "models": GEMINI,
            "max_retries": 0,
        },
        "oai": {
            "type": "openai",
            "base_url": openai_served[0],
            "api_key": "sk-upstream-canary-1234567890",
            "models": OPENAI,
            "max_retries": 0,
        },
    }
    with serve_in_thread(create_app(Settings(providers=providers))) as url:
        yield url


@pytest.fixture
def claude(claude_upstream: tuple[str, AnthropicUpstream]) -> AnthropicUpstream:
    claude_upstream[1].reset()
    return claude_upstream[1]


@pytest.fixture
def gemini(gemini_served: tuple[str, GeminiUpstream]) -> GeminiUpstream:
    gemini_served[1].reset()
    return gemini_served[1]


@pytest.fixture
def oai(openai_served: tuple[str, FaultUpstream]) -> FaultUpstream:
    openai_served[1].reset()
    return openai_served[1]


def body(model: str, input: Any = "one two three", **fields: Any) -> dict[str, Any]:
    return {"model": model, "input": input, "store": False, **fields}


def whole(gateway: str, request: dict[str, Any]) -> dict[str, Any]:
    response = post_responses(gateway, request)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    validate_response(answer)
    return answer


def check_request(request: dict[str, Any]) -> None:
    """``request`` is a valid ``CreateResponse``, as far as the spec can tell: its ``input``
    is a oneOf in which a typed message (``"type": "message"``, as Codex sends them) matches
    both ``EasyInputMessage`` and ``Item``, so each item must be valid under one of the two
    (anyOf). ``client_metadata`` (Codex's) is not in the spec."""
    top = {k: v for k, v in request.items() if k not in ("input", "client_metadata")}
    validate("CreateResponse", {**top, "input": "x"})
    for item in request["input"]:
        if errors("EasyInputMessage", item):
            validate("Item", item)


def last_body(upstream: AnthropicUpstream | GeminiUpstream | FaultUpstream) -> dict[str, Any]:
    requests = upstream.requests
    assert requests, "the upstream got no request"
    out: dict[str, Any] = requests[-1].body
    return out


# -- every provider: text, and the same object streamed or not --------------------------------


@pytest.mark.parametrize("model", ["claude/text", "gem/text", "oai/ok"])
def test_text_streams_and_not_alike(gateway: str, model: str) -> None:
    streamed = validated_stream(gateway, body(model))
    answer = whole(gateway, body(model))
    assert streamed.status == answer["status"] == "completed"
    assert streamed.text == "".join(
        part["text"] for item in answer["output"] for part in item["content"]
    )
    assert streamed.text in ("one two three", "Hello world")
    assert streamed.usage is not None and answer["usage"]["total_tokens"] > 0


# -- reasoning ----------------------------------------------------------------------------


def test_anthropic_thinking_is_a_reasoning_item_before_the_message(
    gateway: str, claude: AnthropicUpstream
) -> None:
    summary = validated_stream(gateway, body("claude/thinking"))
    assert [item["type"] for item in summary.items] == ["reasoning", "message"]
    assert summary.reasoning == "Let me think."
    reasoning = summary.items[0]
    assert reasoning["encrypted_content"] and SIGNATURE not in json.dumps(reasoning["summary"])
    assert summary.usage is not None
    assert summary.usage["output_tokens_details"]["reasoning_tokens"] >= 0
    with sdk(gateway).responses.stream(**body("claude/thinking")) as stream:
        final = stream.get_final_response()
    assert final.output[0].type == "reasoning"
    assert final.output[0].summary[0].text == "Let me think."
    assert final.output_text == "one two three"


def test_reasoning_is_replayed_to_its_own_deployment_with_its_signature(
    gateway: str, claude: AnthropicUpstream
) -> None:
    first = whole(gateway, body("claude/thinking", include=["reasoning.encrypted_content"]))
    history = [
        {"role": "user", "content": "one two three"},
        *first["output"],
        {"role": "user", "content": "and four"},
    ]
    check_request(body("claude/thinking", history))
    whole(gateway, body("claude/thinking", history))
    assistant = last_body(claude)["messages"][1]
    assert assistant["role"] == "assistant"
    assert assistant["content"][0] == {
        "type": "thinking",
        "thinking": "Let me think.",
        "signature": SIGNATURE,
    }


def test_regression_codex_9045_foreign_reasoning_is_dropped(
    gateway: str, claude: AnthropicUpstream, oai: FaultUpstream, gemini: GeminiUpstream
) -> None:
    """Bug #19: a reasoning item goes back only to the deployment that made it; elsewhere it
    is dropped (OpenAI's own encrypted content too), never sent to an upstream that would
    reject it."""
    first = whole(gateway, body("claude/thinking"))
    openai_reasoning = {
        "type": "reasoning",
        "id": "rs_openai",
        "summary": [{"type": "summary_text", "text": "secret plan"}],
        "encrypted_content": "gAAAAABoOpenAIsOwnEncryptedReasoning==",
    }
    history = [
        {"role": "user", "content": "one two three"},
        openai_reasoning,
        *first["output"],
        {"role": "user", "content": "and four"},
    ]
    whole(gateway, body("claude/text", history))  # the same provider, another deployment
    sent = json.dumps(last_body(claude))
    assert SIGNATURE not in sent and "thinking" not in sent and "secret plan" not in sent
    whole(gateway, body("oai/ok", history))
    sent = json.dumps(last_body(oai))
    assert "Let me think" not in sent and SIGNATURE not in sent and "secret plan" not in sent
    assert "reasoning_content" not in sent
    whole(gateway, body("gem/text", history))
    sent = json.dumps(last_body(gemini))
    assert "Let me think" not in sent and "secret plan" not in sent
    whole(gateway, body("claude/thinking", history))  # home again: only its own reasoning
    sent = json.dumps(last_body(claude))
    assert SIGNATURE in sent and "secret plan" not in sent


def test_redacted_thinking_travels_back_too(gateway: str, claude: AnthropicUpstream) -> None:
    first = whole(gateway, body("claude/redacted"))
    assert first["output"][0]["type"] == "reasoning"
    assert first["output"][0]["summary"] == []
    history = [{"role": "user", "content": "x"}, *first["output"], {"role": "user", "content": "y"}]
    whole(gateway, body("claude/redacted", history))
    blocks = last_body(claude)["messages"][1]["content"]
    assert blocks[0]["type"] == "redacted_thinking"


def test_gemini_thoughts_and_openai_reasoning_content_are_reasoning_items(
    gateway: str, gemini: GeminiUpstream, oai: FaultUpstream
) -> None:
    summary = validated_stream(gateway, body("gem/thoughts", reasoning={"effort": "low"}))
    assert summary.reasoning == "Let me think. Still thinking."
    assert summary.text == "Answer."
    assert summary.usage is not None
    assert summary.usage["output_tokens_details"]["reasoning_tokens"] == 7
    summary = validated_stream(gateway, body("oai/reasoning"))
    assert summary.reasoning == "".join(REASONING)
    assert [item["type"] for item in summary.items] == ["reasoning", "message"]


# -- tool calls ---------------------------------------------------------------------------


ANTHROPIC_TOOLS = [function_tool(name) for name in ("get_weather", "get_time", "search")]


@pytest.mark.parametrize("model", ["claude/tools", "claude/tools-interleaved"])
def test_regression_litellm_5231_36262_parallel_calls_are_items_in_order(
    gateway: str, claude: AnthropicUpstream, model: str
) -> None:
    """Bugs #2 and #5: three calls (one after another, or their argument pieces interleaved)
    are three function_call items 0, 1, 2 with each call's own arguments, whole."""
    summary = validated_stream(gateway, body(model, tools=ANTHROPIC_TOOLS))
    assert summary.status == "completed"
    calls = summary.tool_calls
    assert [(c.call_id, c.name) for c in calls] == [(t[0], t[1]) for t in TOOLS]
    assert [json.loads(c.arguments) for c in calls] == [t[3] for t in TOOLS]


def test_regression_litellm_20711_sdk_snapshot_arguments_equal_the_final(
    gateway: str, claude: AnthropicUpstream
) -> None:
    """Bug #18: the arguments the SDK accumulates from the deltas are the final ones."""
    pieces: dict[str, str] = {}
    with sdk(gateway).responses.stream(
        **body("claude/tools-interleaved", tools=ANTHROPIC_TOOLS)
    ) as stream:
        for event in stream:
            if event.type == "response.function_call_arguments.delta":
                pieces[event.item_id] = pieces.get(event.item_id, "") + event.delta
            if event.type == "response.function_call_arguments.done":
                assert event.arguments == pieces[event.item_id]
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert len(calls) == 3
    for call in calls:
        assert call.id is not None and call.arguments == pieces[call.id]
        json.loads(call.arguments)


@pytest.mark.parametrize("model", ["claude/noarg", "gem/noarg-tool"])
def test_regression_litellm_5063_a_call_without_arguments_gets_an_empty_object(
    gateway: str, model: str, claude: AnthropicUpstream, gemini: GeminiUpstream
) -> None:
    tools = [function_tool(n) for n in ("now", "ping", "get_time")]
    summary = validated_stream(gateway, body(model, tools=tools))
    assert summary.tool_calls
    assert all(json.loads(c.arguments) == {} for c in summary.tool_calls)


def test_gemini_parallel_calls_with_a_trailing_stop_complete(
    gateway: str, gemini: GeminiUpstream
) -> None:
    tools = [
        WEATHER,
        function_tool("get_time"),
        function_tool("lookup"),
    ]
    summary = validated_stream(gateway, body("gem/parallel-tools", tools=tools))
    assert [c.name for c in summary.tool_calls] == ["get_weather", "get_weather", "get_time"]
    assert [json.loads(c.arguments) for c in summary.tool_calls] == [
        {"city": "Paris"},
        {"city": "Rome"},
        {"tz": "CET"},
    ]
    assert len({c.call_id for c in summary.tool_calls}) == 3
    trailing = validated_stream(gateway, body("gem/trailing-stop", tools=tools))
    assert trailing.status == "completed"
    assert [c.name for c in trailing.tool_calls] == ["lookup"]


def test_gemini_thought_signature_comes_back_on_the_call(
    gateway: str, gemini: GeminiUpstream, claude: AnthropicUpstream
) -> None:
    """The signature Gemini put on a call rides in a reasoning item before it; replayed, it is
    back on the functionCall part (else the stand-in answers Gemini 3's 400), and it goes to
    no other deployment."""
    tools = [function_tool("lookup")]
    first = whole(gateway, body("gem/signature", tools=tools))
    assert [item["type"] for item in first["output"]] == ["reasoning", "function_call"]
    call = first["output"][1]
    history = [
        {"role": "user", "content": "look it up"},
        *first["output"],
        {"type": "function_call_output", "call_id": call["call_id"], "output": "found"},
    ]
    check_request(body("gem/signature", history, tools=tools))
    again = whole(gateway, body("gem/signature", history, tools=tools))
    assert again["output"][-1]["content"][0]["text"] == "signature ok"
    whole(gateway, body("claude/text", history, tools=tools))
    assert gemini_upstream.SIGNATURE not in json.dumps(last_body(claude))


def test_a_tool_call_round_trip_reaches_anthropic_as_tool_use_and_result(
    gateway: str, claude: AnthropicUpstream
) -> None:
    first = whole(gateway, body("claude/tools", tools=ANTHROPIC_TOOLS))
    calls = [item for item in first["output"] if item["type"] == "function_call"]
    history = [
        {"role": "user", "content": "one two three"},
        *first["output"],
        *(
            {"type": "function_call_output", "call_id": c["call_id"], "output": f"out {n}"}
            for n, c in enumerate(calls)
        ),
    ]
    answer = whole(gateway, body("claude/text", history, tools=ANTHROPIC_TOOLS))
    assert answer["status"] == "completed"
    messages = last_body(claude)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    uses = [b for b in messages[1]["content"] if b["type"] == "tool_use"]
    assert [(u["id"], u["name"], u["input"]) for u in uses] == [(t[0], t[1], t[3]) for t in TOOLS]
    results = [b for b in messages[2]["content"] if b["type"] == "tool_result"]
    assert [r["tool_use_id"] for r in results] == [t[0] for t in TOOLS]


def test_custom_and_namespace_tools_map_there_and_back(gateway: str, oai: FaultUpstream) -> None:
    """A custom tool is a function of one string ``input`` upstream and a custom_tool_call
    back; a namespace's tools are flattened upstream and carry their namespace back."""
    patch = {
        "type": "custom",
        "name": "apply_patch",
        "description": "Apply a patch",
        "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"},
    }
    summary = validated_stream(gateway, body("oai/tools", "patch it", tools=[patch]))
    (call,) = summary.tool_calls
    assert (call.type, call.name, call.arguments) == ("custom_tool_call", "apply_patch", "patch it")
    sent = last_body(oai)
    function = sent["tools"][0]["function"]
    assert function["name"] == "apply_patch"
    assert function["parameters"]["required"] == ["input"]
    assert "start: /.+/" in function["parameters"]["properties"]["input"]["description"]

    namespace = {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "agents",
        "tools": [{**WEATHER, "name": "spawn_agent"}],
    }
    summary = validated_stream(gateway, body("oai/tools", "go", tools=[namespace]))
    (call,) = summary.tool_calls
    assert (call.type, call.name, call.namespace) == (
        "function_call",
        "spawn_agent",
        "multi_agent_v1",
    )
    assert last_body(oai)["tools"][0]["function"]["name"] == "multi_agent_v1__spawn_agent"


def test_a_codex_like_request_maps_to_the_chat_body(gateway: str, oai: FaultUpstream) -> None:
    """What Codex sends (PROVIDERS.md §5.2), through the echo-request stand-in: the chat body
    the openai-type upstream gets."""
    request = {
        "model": "oai/echo-request",
        "instructions": "base instructions",
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "dev"}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "run ls"}],
            },
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "exec_command",
                "arguments": '{"cmd":"ls"}',
                "status": "completed",
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
            {
                "type": "custom_tool_call",
                "call_id": "call_2",
                "name": "apply_patch",
                "input": "*** Begin",
            },
            {"type": "custom_tool_call_output", "call_id": "call_2", "output": "Done"},
        ],
        "tools": [
            {**WEATHER, "name": "exec_command", "strict": False},
            {"type": "custom", "name": "apply_patch", "description": "patch"},
            {"type": "web_search", "external_web_access": False},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "thread-1",
        "max_output_tokens": 1000,
        "client_metadata": {"x": "y"},
    }
    check_request(request)
    summary = validated_stream(gateway, request)
    sent = json.loads(summary.text)
    assert sent["messages"] == [
        {"role": "system", "content": "base instructions"},
        {"role": "developer", "content": "dev"},
        {"role": "user", "content": [{"type": "text", "text": "run ls"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "exec_command", "arguments": '{"cmd":"ls"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "apply_patch", "arguments": '{"input":"*** Begin"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_2", "content": "Done"},
    ]
    assert [t["function"]["name"] for t in sent["tools"]] == ["exec_command", "apply_patch"]
    assert sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is True
    assert sent["reasoning_effort"] == "medium"
    assert sent["max_completion_tokens"] == 1000
    assert sent["prompt_cache_key"] == "thread-1"
    assert "store" not in sent and "include" not in sent and "input" not in sent


# -- usage, stops and failures ----------------------------------------------------------------


def test_usage_has_all_five_fields_with_cache_counts(
    gateway: str, claude: AnthropicUpstream
) -> None:
    summary = validated_stream(gateway, body("claude/usage"))
    usage = summary.usage
    assert usage is not None
    assert usage["input_tokens"] == USAGE_EXPECTED["input"]
    assert usage["input_tokens_details"]["cached_tokens"] == USAGE_EXPECTED["cached"]
    assert usage["input_tokens_details"]["cache_write_tokens"] == USAGE_EXPECTED["cache_write"]
    assert usage["output_tokens"] == USAGE_EXPECTED["output"]
    assert usage["total_tokens"] == USAGE_EXPECTED["input"] + USAGE_EXPECTED["output"]


def test_a_cut_answer_is_incomplete(gateway: str, claude: AnthropicUpstream) -> None:
    summary = validated_stream(gateway, body("claude/stop:max_tokens"))
    assert summary.status == "incomplete"
    assert summary.response["incomplete_details"] == {"reason": "max_output_tokens"}
    refused = validated_stream(gateway, body("claude/stop:refusal"))
    assert refused.status == "incomplete"
    assert refused.response["incomplete_details"] == {"reason": "content_filter"}


@pytest.mark.parametrize(
    "model", ["claude/error-event:4", "claude/truncate:3", "oai/error-frame:2"]
)
def test_regression_litellm_4562_a_mid_stream_failure_is_response_failed(
    gateway: str, model: str, claude: AnthropicUpstream, oai: FaultUpstream
) -> None:
    """Bug #12 on this surface: a failure after the first byte ends the stream with
    ``response.failed`` (the open items done as incomplete), never ``response.completed``."""
    summary = validated_stream(gateway, body(model))
    assert summary.status == "failed"
    assert summary.event_types[-1] == "response.failed"
    assert "response.completed" not in summary.event_types
    assert summary.error is not None and summary.error["code"] == "server_error"
    assert summary.error["message"]
    assert all(item["status"] == "incomplete" for item in summary.items)
    assert "sk-" not in json.dumps(summary.response)


@pytest.mark.parametrize(
    ("model", "status"),
    [("claude/status:400", 400), ("claude/status:429:30", 429), ("oai/status:429", 429)],
)
def test_a_failure_before_the_first_byte_is_openais_error_with_its_status(
    gateway: str, model: str, status: int, claude: AnthropicUpstream, oai: FaultUpstream
) -> None:
    for stream in (True, False):
        response = post_responses(gateway, body(model, stream=stream))
        assert response.status_code == status, response.text
        validate("ErrorResponse", response.json())
        assert "sk-" not in response.text
        if status == 429:
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
            assert int(response.headers["retry-after"]) >= 1
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(gateway).responses.create(**body(model))
    assert caught.value.status_code == status


def test_a_client_that_leaves_mid_stream_cancels_the_upstream_call(
    gateway: str, oai: FaultUpstream
) -> None:
    """The upstream sends two pieces, then nothing: the client reads the first text delta and
    hangs up; the gateway drops the upstream call instead of waiting on it."""
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST", gateway + "/v1/responses", json=body("oai/stall:2", stream=True)
        ) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():  # bounded: the stand-in sends two pieces, then waits
            if line == "event: response.output_text.delta":
                break
    assert oai.wait_for_disconnect(timeout=10) is not None


# -- what Codex really sends (tests/fixtures/agents, captured from Codex CLI) ------------------

FIXTURES = Path(__file__).parent / "fixtures" / "agents"
CODEX = ["codex_responses_tool_call.json", "codex_responses_tool_result.json"]
HOP_HEADERS = {"host", "content-length", "accept-encoding"}


def codex_request(name: str, model: str) -> tuple[dict[str, Any], dict[str, str]]:
    capture = json.loads((FIXTURES / name).read_text())
    headers = {k: v for k, v in capture["headers"].items() if k not in HOP_HEADERS}
    return {**capture["body"], "model": model}, headers


@pytest.mark.parametrize("name", CODEX)
@pytest.mark.parametrize("model", ["claude/text", "gem/text", "oai/ok"])
def test_captured_codex_requests_are_served(
    gateway: str,
    name: str,
    model: str,
    claude: AnthropicUpstream,
    gemini: GeminiUpstream,
    oai: FaultUpstream,
) -> None:
    """Codex's own requests, as captured (namespace and web_search tools, developer messages,
    the tool call and its output replayed), answered as a valid stream by every provider."""
    request, headers = codex_request(name, model)
    check_request(request)
    summary = validated_stream(gateway, request, headers=headers)
    assert summary.status == "completed"
    assert summary.text
    assert summary.usage is not None  # Codex reads the five counts of response.completed


def test_captured_codex_history_maps_to_chat(gateway: str, oai: FaultUpstream) -> None:
    request, headers = codex_request("codex_responses_tool_result.json", "oai/echo-request")
    summary = validated_stream(gateway, request, headers=headers)
    sent = json.loads(summary.text)
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["developer", "developer", "user", "user", "assistant", "tool"]
    (given,) = [item for item in request["input"] if item["type"] == "function_call"]
    (output,) = [item for item in request["input"] if item["type"] == "function_call_output"]
    (call,) = sent["messages"][4]["tool_calls"]
    assert call["id"] == given["call_id"] and call["function"]["name"] == given["name"]
    assert call["function"]["arguments"] == given["arguments"]
    assert sent["messages"][5] == {
        "role": "tool",
        "tool_call_id": given["call_id"],
        "content": output["output"],
    }
    names = [t["function"]["name"] for t in sent["tools"]]
    assert "multi_agent_v1__spawn_agent" in names and "exec_command" in names
    assert not any("web_search" in n for n in names)
    assert sent["prompt_cache_key"] == request["prompt_cache_key"]
    assert "client_metadata" not in sent
