"""The gemini provider's translations, without I/O: OpenAI chat -> Gemini request, Gemini
responses -> the normalized stream, Google error bodies.

Every request built here is checked with the stand-in's ``request_problem`` (the google-genai
SDK's ``Content``/``Tool``/``ToolConfig``/``GenerationConfig`` types) and every response fixture
with ``checked`` (``GenerateContentResponse``), so the fixtures speak the real wire.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from providers.base import Chunk, Delta
from providers.errors import ProviderError, UnsupportedRequest
from providers.gemini_errors import ModelOutputError, google_error
from providers.gemini_request import GENERATED_ID, chat_request, embed_requests
from providers.gemini_response import ResponseReader, new_call_id
from tests.support.gemini_upstream import SCENARIOS, SIGNATURE, checked, request_problem, whole

USER = {"role": "user", "content": "hi"}


def mapped(body: dict[str, Any], *, model: str = "gemini-3-flash", thoughts: bool = True) -> Any:
    out = chat_request(body, model=model, include_thoughts=thoughts)
    assert request_problem("generateContent", out) is None
    return out


def read(*events: dict[str, Any]) -> list[Chunk]:
    """The chunks of a stream of (SDK-checked) events, which must finish."""
    reader = ResponseReader()
    chunks = [c for e in events for c in reader.read(checked(e))]
    reader.check_finished()
    return chunks


def deltas(chunks: list[Chunk]) -> list[Delta]:
    return [d for c in chunks for d in c.deltas]


def candidate(*parts: dict[str, Any], index: int = 0, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"index": index, **extra}
    if parts:
        body["content"] = {"role": "model", "parts": list(parts)}
    return body


def event(*candidates: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"candidates": list(candidates), **extra}


def test_every_scenario_of_the_stand_in_is_valid_wire() -> None:
    for events in SCENARIOS.values():
        for e in events:
            checked(e)
        whole(events)


# -- requests ------------------------------------------------------------------------------------


def test_system_and_developer_messages_form_the_system_instruction() -> None:
    out = mapped(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                USER,
                {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
            ]
        }
    )
    assert out["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "No emoji."}]}
    assert out["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]


def test_roles_map_and_same_role_neighbours_merge() -> None:
    out = mapped(
        {
            "messages": [
                USER,
                {"role": "assistant", "content": "hello"},
                {"role": "assistant", "content": ""},  # says nothing: dropped
                {"role": "user", "content": "one"},
                {"role": "user", "content": "two"},
            ]
        }
    )
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": [{"text": "hello"}]},
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
    ]


@pytest.mark.parametrize(
    ("url", "part"),
    [
        (
            "data:image/jpeg;base64,/9j/4AAQ",
            {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
        ),
        (
            "gs://bucket/cat.png",
            {"fileData": {"fileUri": "gs://bucket/cat.png", "mimeType": "image/png"}},
        ),
        (
            "https://generativelanguage.googleapis.com/v1beta/files/abc",
            {"fileData": {"fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc"}},
        ),
        (
            "https://www.youtube.com/watch?v=9hE5-98ZeCg",
            {"fileData": {"fileUri": "https://www.youtube.com/watch?v=9hE5-98ZeCg"}},
        ),
    ],
)
def test_images_gemini_can_read(url: str, part: dict[str, Any]) -> None:
    image = {"type": "image_url", "image_url": {"url": url}}
    out = mapped({"messages": [{"role": "user", "content": [image]}]})
    assert out["contents"][0]["parts"] == [part]


@pytest.mark.parametrize(
    "url", ["https://example.com/cat.png", "http://169.254.169.254/x", "data:image/png,plain"]
)
def test_images_the_gateway_would_have_to_fetch_are_refused(url: str) -> None:
    image = {"type": "image_url", "image_url": {"url": url}}
    with pytest.raises(UnsupportedRequest) as caught:
        mapped({"messages": [{"role": "user", "content": [image]}]})
    assert "messages[0].content[0].image_url.url" in caught.value.message
    assert caught.value.status == 400 and caught.value.client_fault


def test_audio_and_inline_files() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    file = {
        "type": "file",
        "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
    }
    out = mapped({"messages": [{"role": "user", "content": [audio, file]}]})
    assert out["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]
    with pytest.raises(UnsupportedRequest):
        mapped(
            {
                "messages": [
                    {"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}
                ]
            }
        )


def test_replayed_tool_calls_and_results() -> None:
    ours = new_call_id()
    out = mapped(
        {
            "messages": [
                USER,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": ours,
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                            "extra_content": {"google": {"thought_signature": SIGNATURE}},
                        },
                        {
                            "id": "fc-7",
                            "type": "function",
                            "function": {"name": "now", "arguments": ""},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": ours, "content": '{"temp": 21}'},
                {"role": "tool", "tool_call_id": "fc-7", "content": "noon"},
            ]
        }
    )
    assert out["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                # The signature goes back on its functionCall part; an id Gemini never issued
                # (ours) is not sent, Gemini's own is.
                {
                    "functionCall": {"name": "weather", "args": {"city": "Paris"}},
                    "thoughtSignature": SIGNATURE,
                },
                {"functionCall": {"name": "now", "args": {}, "id": "fc-7"}},
            ],
        },
        {
            # Parallel results share one turn; a JSON object result is kept, text is wrapped.
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "weather", "response": {"temp": 21}}},
                {"functionResponse": {"name": "now", "response": {"output": "noon"}, "id": "fc-7"}},
            ],
        },
    ]


def test_a_tool_result_names_the_latest_call_with_its_id() -> None:
    def turn(name: str) -> list[dict[str, Any]]:
        call = {"id": "call_0", "type": "function", "function": {"name": name, "arguments": "{}"}}
        return [
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_0", "content": "ok"},
        ]

    out = mapped({"messages": [USER, *turn("first"), *turn("second")]})
    names = [
        p["functionResponse"]["name"]
        for c in out["contents"]
        for p in c["parts"]
        if "functionResponse" in p
    ]
    assert names == ["first", "second"]


@pytest.mark.parametrize(
    ("message", "where"),
    [
        ({"role": "tool", "tool_call_id": "nope", "content": "x"}, "messages[1].tool_call_id"),
        ({"role": "tool", "content": "x"}, "messages[1].tool_call_id"),
        (
            {
                "role": "assistant",
                "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "[1]"}}],
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            {
                "role": "assistant",
                "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{"}}],
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "a",
                        "function": {"name": "f"},
                        "extra_content": {"google": {"thought_signature": 1}},
                    }
                ],
            },
            "thought_signature",
        ),
        ({"role": "narrator", "content": "x"}, "messages[1].role"),
    ],
)
def test_conversations_gemini_cannot_take_are_refused(message: dict[str, Any], where: str) -> None:
    with pytest.raises(UnsupportedRequest) as caught:
        mapped({"messages": [USER, message]})
    assert where in caught.value.message


TOOLS = [
    {
        "type": "function",
        "function": {"name": "a", "description": "A", "parameters": {"type": "object"}},
    },
    {"type": "function", "function": {"name": "b"}},
]


@pytest.mark.parametrize(
    ("choice", "config", "names"),
    [
        (None, None, ["a", "b"]),
        ("auto", {"mode": "AUTO"}, ["a", "b"]),
        ("none", {"mode": "NONE"}, ["a", "b"]),
        ("required", {"mode": "ANY"}, ["a", "b"]),
        (
            {"type": "function", "function": {"name": "b"}},
            {"mode": "ANY", "allowedFunctionNames": ["b"]},
            ["a", "b"],
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "a"}}],
                },
            },
            {"mode": "AUTO"},
            ["a"],
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "b"}}],
                },
            },
            {"mode": "ANY", "allowedFunctionNames": ["b"]},
            ["b"],
        ),
    ],
)
def test_tools_and_tool_choice(choice: Any, config: Any, names: list[str]) -> None:
    body: dict[str, Any] = {"messages": [USER], "tools": TOOLS}
    if choice is not None:
        body["tool_choice"] = choice
    out = mapped(body)
    declarations = out["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in declarations] == names
    if "a" in names:
        assert declarations[0] == {
            "name": "a",
            "description": "A",
            "parametersJsonSchema": {"type": "object"},
        }
    assert out.get("toolConfig") == (None if config is None else {"functionCallingConfig": config})


@pytest.mark.parametrize(
    "body",
    [
        {"tools": [{"type": "custom", "custom": {"name": "x"}}]},
        {"tools": TOOLS, "tool_choice": "sometimes"},
        {"tools": TOOLS, "tool_choice": {"type": "function"}},
    ],
)
def test_tools_gemini_cannot_take_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedRequest):
        mapped({"messages": [USER], **body})


def test_generation_config() -> None:
    out = mapped(
        {
            "messages": [USER],
            "temperature": 0.5,
            "top_p": 0.8,
            "n": 2,
            "seed": 3,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "max_tokens": 99,
            "max_completion_tokens": 100,
            "stop": "END",
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": {"type": "object"}},
            },
            # No Gemini counterpart, nothing a client relies on: ignored.
            "user": "u",
            "store": True,
            "parallel_tool_calls": False,
            "logit_bias": {"1": 2},
        },
        thoughts=False,
    )
    assert out["generationConfig"] == {
        "temperature": 0.5,
        "topP": 0.8,
        "candidateCount": 2,
        "seed": 3,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "maxOutputTokens": 100,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"},
    }
    assert set(out) == {"contents", "generationConfig"}
    json_object = mapped(
        {"messages": [USER], "response_format": {"type": "json_object"}}, thoughts=False
    )
    assert json_object["generationConfig"] == {"responseMimeType": "application/json"}
    assert "generationConfig" not in mapped({"messages": [USER]}, thoughts=False)


@pytest.mark.parametrize(
    ("model", "effort", "thinking"),
    [
        ("gemini-3-pro-preview", None, {"includeThoughts": True}),
        ("gemini-3-pro-preview", "low", {"thinkingLevel": "LOW", "includeThoughts": True}),
        ("gemini-3-flash", "minimal", {"thinkingLevel": "MINIMAL", "includeThoughts": True}),
        ("gemini-3-flash", "none", {"thinkingLevel": "MINIMAL"}),
        ("gemini-3.1-pro", "xhigh", {"thinkingLevel": "XHIGH", "includeThoughts": True}),
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
        ("gemini-2.5-flash", "low", {"thinkingBudget": 1024, "includeThoughts": True}),
        ("models/gemini-2.5-pro", "medium", {"thinkingBudget": 8192, "includeThoughts": True}),
        ("gemini-2.0-flash-thinking", "high", {"thinkingBudget": 24576, "includeThoughts": True}),
    ],
)
def test_reasoning_effort_is_a_thinking_level_or_budget(
    model: str, effort: Any, thinking: Any
) -> None:
    body: dict[str, Any] = {"messages": [USER]}
    if effort is not None:
        body["reasoning_effort"] = effort
    assert mapped(body, model=model)["generationConfig"]["thinkingConfig"] == thinking


def test_thoughts_are_not_asked_for_when_the_provider_says_so() -> None:
    out = mapped({"messages": [USER], "reasoning_effort": "high"}, thoughts=False)
    assert out["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "HIGH"}
    with pytest.raises(UnsupportedRequest):
        mapped({"messages": [USER], "reasoning_effort": "extreme"})
    with pytest.raises(UnsupportedRequest):
        mapped({"messages": [USER], "reasoning_effort": {"level": 1}})


def test_embedding_requests_are_batched_by_100() -> None:
    batches = embed_requests("text-embedding-004", [str(i) for i in range(201)], {"dimensions": 64})
    assert [len(b["requests"]) for b in batches] == [100, 100, 1]
    assert batches[2]["requests"][0] == {
        "model": "models/text-embedding-004",
        "content": {"parts": [{"text": "200"}]},
        "outputDimensionality": 64,
    }
    assert all(request_problem("batchEmbedContents", b) is None for b in batches)
    with pytest.raises(UnsupportedRequest):
        embed_requests("m", ["a"], {"dimensions": 0})


# -- responses -----------------------------------------------------------------------------------


def test_parts_of_one_event_keep_their_order() -> None:
    chunks = read(
        event(
            candidate(
                {"text": "Plan. ", "thought": True},
                {"text": "More plan.", "thought": True, "thoughtSignature": SIGNATURE},
                {"text": "Calling."},
                {"functionCall": {"name": "f", "args": {"x": 1}}},
                {"text": "Done."},
                finishReason="STOP",
            )
        )
    )
    out = deltas(chunks)
    assert [(d.reasoning, d.text, bool(d.tool_calls)) for d in out] == [
        ("Plan. More plan.", None, False),
        (None, "Calling.", False),
        (None, None, True),
        (None, "Done.", False),
    ]
    assert out[0].reasoning_signature == SIGNATURE
    assert [d.finish_reason for d in out] == [None, None, None, "tool_calls"]
    assert all(len(c.deltas) == 1 for c in chunks)


def test_regression_tool_deltas_lost_or_merged() -> None:
    """§6 row 5 (litellm#36262, sglang#39782): three calls over three events stay three
    calls, each with its own arguments; Gemini's ids are kept, missing ones made up."""
    calls = [
        {"functionCall": {"name": "a", "args": {"n": 1}, "id": "g-1"}},
        {"functionCall": {"name": "b", "args": {"n": 2}}},
        {"functionCall": {"name": "c", "args": {"n": 3}}},
    ]
    chunks = read(
        *[event(candidate(c)) for c in calls], event(candidate({"text": ""}, finishReason="STOP"))
    )
    tool_calls = [t for d in deltas(chunks) for t in d.tool_calls or []]
    assert [(t.index, t.name, t.arguments) for t in tool_calls] == [
        (0, "a", '{"n":1}'),
        (1, "b", '{"n":2}'),
        (2, "c", '{"n":3}'),
    ]
    assert tool_calls[0].id == "g-1"
    assert all(GENERATED_ID.fullmatch(t.id or "") for t in tool_calls[1:])
    assert tool_calls[1].id != tool_calls[2].id
    assert deltas(chunks)[-1].finish_reason == "tool_calls"


def test_candidates_are_choices_with_their_own_call_numbers() -> None:
    chunks = read(
        event(
            candidate({"text": "A"}, index=0), candidate({"functionCall": {"name": "f"}}, index=1)
        ),
        event(candidate({"functionCall": {"name": "g"}}, index=0, finishReason="STOP")),
        event(candidate(index=1, finishReason="STOP")),
    )
    out = deltas(chunks)
    assert [(d.choice, d.text, [t.index for t in d.tool_calls or []]) for d in out] == [
        (0, "A", []),
        (1, None, [0]),
        (0, None, [0]),
        (1, None, []),
    ]
    assert [d.finish_reason for d in out if d.finish_reason] == ["tool_calls", "tool_calls"]
    reader = ResponseReader()
    reader.read(
        checked(
            event(
                candidate({"text": "A"}, index=0, finishReason="STOP"),
                candidate({"text": "B"}, index=1),
            )
        )
    )
    with pytest.raises(ProviderError, match="before it finished"):
        reader.check_finished()  # choice 1 never finished


@pytest.mark.parametrize(
    ("raw", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("LANGUAGE", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons_in_openai_words_with_the_raw_one_kept(raw: str, finish: str) -> None:
    out = deltas(read(event(candidate({"text": "x"}, finishReason=raw))))
    assert (out[-1].finish_reason, out[-1].stop_reason) == (finish, raw)


def test_an_unknown_finish_reason_is_a_stop_and_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reader = ResponseReader()
    with caplog.at_level(logging.WARNING, logger="gateway.provider"):
        out = deltas(reader.read({"candidates": [{"finishReason": "SOMETHING_NEW"}]}))
    assert (out[0].finish_reason, out[0].stop_reason) == ("stop", "SOMETHING_NEW")
    assert "SOMETHING_NEW" in caplog.text


@pytest.mark.parametrize(
    "raw", ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"]
)
def test_unusable_model_output_is_an_error_not_a_stop(raw: str) -> None:
    with pytest.raises(ModelOutputError) as caught:
        read(event(candidate(finishReason=raw)))
    assert caught.value.code == "upstream_" + raw.lower()
    assert caught.value.retryable and not caught.value.counts_against_breaker


def test_regression_usage_summed_per_chunk() -> None:
    """§6 row 7 (agno#6624, langchainjs#10164): usageMetadata is cumulative; the last wins."""
    chunks = read(*SCENARIOS["usage"])
    usages = [c.usage for c in chunks if c.usage is not None]
    assert len(usages) == 4
    last = usages[-1]
    assert (last.input_tokens, last.output_tokens, last.cached_tokens, last.reasoning_tokens) == (
        10,
        9,
        4,
        5,
    )


def test_regression_thinking_tokens_missing() -> None:
    """§6 row 8 (any-llm#1291, Portkey#1458): thoughts are output tokens, so prompt +
    completion is Gemini's total, in every scenario that reports usage."""
    for events in SCENARIOS.values():
        for e in events:
            if "usageMetadata" in e:
                usage = [c.usage for c in ResponseReader().read(checked(e)) if c.usage][-1]
                assert usage.total_tokens == e["usageMetadata"]["totalTokenCount"]
    tool_use = {
        "promptTokenCount": 5,
        "toolUsePromptTokenCount": 3,
        "candidatesTokenCount": 2,
        "totalTokenCount": 10,
    }
    counted = ResponseReader().read(checked({"usageMetadata": tool_use}))[0].usage
    assert counted is not None and counted.total_tokens == 10


def test_regression_no_late_thinking_from_a_bare_signature() -> None:
    """§6 row 11 (CCR PR #1275): a signature on the last, empty text part is no thinking
    block after the answer; signatures on answer text are not kept."""
    chunks = read(
        event(candidate({"text": "Hi", "thoughtSignature": SIGNATURE})),
        event(candidate({"text": "", "thoughtSignature": SIGNATURE}, finishReason="STOP")),
    )
    out = deltas(chunks)
    assert [(d.text, d.reasoning, d.reasoning_signature) for d in out] == [
        ("Hi", None, None),
        (None, None, None),
    ]


def test_a_blocked_prompt_is_content_filter_and_a_finished_stream() -> None:
    out = deltas(read(*SCENARIOS["blocked"]))
    assert [(d.finish_reason, d.stop_reason) for d in out] == [("content_filter", "SAFETY")]


@pytest.mark.parametrize(
    "events", [[], SCENARIOS["truncate"], [{"usageMetadata": {"promptTokenCount": 1}}]]
)
def test_a_stream_without_a_finish_is_truncated(events: list[dict[str, Any]]) -> None:
    with pytest.raises(ProviderError) as caught:
        read(*events)
    assert caught.value.code == "upstream_truncated"


@pytest.mark.parametrize(
    "data",
    [
        {"candidates": {"0": {}}},
        {"candidates": [1]},
        {"candidates": [{"index": -1}]},
        {"candidates": [{"content": []}]},
        {"candidates": [{"content": {"parts": {}}}]},
        {"candidates": [{"content": {"parts": ["text"]}}]},
        {"candidates": [{"content": {"parts": [{"text": 1}]}}]},
        {"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]},
        {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": [1]}}]}}]},
        {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "id": 7}}]}}]},
        {"candidates": [{"content": {"parts": [{"text": "x", "thoughtSignature": 1}]}}]},
        {"candidates": [{"finishReason": 1}]},
        {"usageMetadata": [1]},
    ],
)
def test_wrong_shapes_are_malformed_not_crashes(data: dict[str, Any]) -> None:
    with pytest.raises(ProviderError) as caught:
        ResponseReader().read(data)
    assert caught.value.code == "upstream_malformed"


def test_output_after_the_finish_is_malformed() -> None:
    reader = ResponseReader()
    reader.read(checked(event(candidate({"text": "a"}, finishReason="STOP"))))
    reader.read(checked(event(candidate({"text": ""}, finishReason="STOP"))))  # harmless echo
    with pytest.raises(ProviderError) as caught:
        reader.read(checked(event(candidate({"text": "late"}))))
    assert caught.value.code == "upstream_malformed"


# -- errors --------------------------------------------------------------------------------------


def test_google_error_bodies() -> None:
    body = {
        "error": {
            "code": 429,
            "message": "Quota exceeded.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12.5s"},
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "RATE_LIMIT_EXCEEDED",
                },
            ],
        }
    }
    assert google_error(body) == ("Quota exceeded.", 12.5, "RATE_LIMIT_EXCEEDED")
    assert google_error([body]) == ("Quota exceeded.", 12.5, "RATE_LIMIT_EXCEEDED")
    assert google_error({"error": "plain"}) == ("plain", None, None)
    assert google_error(
        {
            "error": {
                "details": [
                    1,
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "soon"},
                ]
            }
        }
    ) == ("", None, None)
    assert google_error(None) == ("", None, None)
