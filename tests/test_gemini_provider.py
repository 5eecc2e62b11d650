"""The gemini provider through a real gateway, with the openai SDK as client, in front of the
stand-in Gemini API (tests/support/gemini_upstream.py) over loopback.

Regression tests for the peers' bugs (PROVIDERS.md §6) are named ``test_regression_<bug>``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from google import genai

from gateway.settings import ConfigError, load_settings
from providers.base import EmbeddingRequest
from providers.errors import ProviderError, UpstreamRateLimited
from providers.gemini import SPEC, GeminiProvider, Options
from providers.http1 import PoolTransport
from providers.spec import ProviderContext
from providers.testing import chat_request as conformance_request
from providers.testing import (
    check_aclose,
    check_cancellation,
    check_provider,
    check_spec,
    expect_provider_error,
    open_provider,
)
from tests.conftest import GatewayFactory, post_chat, sse_data
from tests.support.clients import sdk
from tests.support.gemini_upstream import KEY, SIGNATURE, GeminiUpstream, serve_gemini, vector
from tests.support.openapi_spec import validate

CLIENT_KEY = "client-key-gemini"
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
MODELS = [
    *("text", "crlf", "split", "thoughts", "parallel-tools", "noarg-tool", "trailing-stop"),
    *("usage", "blocked", "safety", "max-tokens", "malformed-call", "signature", "truncate"),
    *("cut", "stream-error", "rate-limited", "flaky-429", "bad-request", "embed"),
]
USER: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, GeminiUpstream]]:
    with serve_gemini() as pair:
        yield pair


@pytest.fixture
def gemini(served: tuple[str, GeminiUpstream]) -> GeminiUpstream:
    served[1].reset()
    return served[1]


def provider_block(base_url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "gemini", "base_url": base_url, "api_key": KEY, "models": MODELS, **extra}


@pytest.fixture
def gateway(make_gateway: GatewayFactory, served: tuple[str, GeminiUpstream]) -> str:
    return make_gateway(providers={"gem": provider_block(served[0])}, api_keys=[CLIENT_KEY])


def client(gateway: str) -> openai.OpenAI:
    return sdk(gateway, CLIENT_KEY)


def stream_events(gateway: str, model: str, **body: Any) -> list[Any]:
    """The chunks of a raw streamed request (the error frame included, if any)."""
    response = post_chat(
        gateway, {"model": f"gem/{model}", "messages": USER, "stream": True, **body}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    return [orjson.loads(e) if e != "[DONE]" else e for e in sse_data(response.text)]


def whole_answer(gateway: str, model: str, **body: Any) -> Any:
    """The raw JSON of a non-streamed answer, validated against OpenAI's schema."""
    response = post_chat(gateway, {"model": f"gem/{model}", "messages": USER, **body}, headers=AUTH)
    assert response.status_code == 200, response.text
    answer = response.json()
    validate("CreateChatCompletionResponse", answer)
    return answer


# -- the stand-in itself -------------------------------------------------------------------------


def test_stand_in_speaks_what_the_google_sdk_accepts(
    served: tuple[str, GeminiUpstream], gemini: GeminiUpstream
) -> None:
    google = genai.Client(api_key=KEY, http_options={"base_url": served[0]})
    assert google.models.generate_content(model="text", contents="hi").text == "Hello world"
    streamed = google.models.generate_content_stream(model="thoughts", contents="hi")
    assert [c.text for c in streamed][-1] == "Answer."
    texts: Any = ["a", "b"]
    vectors = google.models.embed_content(model="embed", contents=texts).embeddings
    assert vectors is not None and len(vectors) == 2
    calls = gemini.calls
    assert [(c.action, c.query) for c in calls] == [
        ("generateContent", ""),
        ("streamGenerateContent", "alt=sse"),
        ("batchEmbedContents", ""),
    ]
    assert all(c.request.headers["x-goog-api-key"] == KEY for c in calls)


# -- the conformance kit (providers.testing), as a plugin's tests would use it ---------------------

CHAT_SCENARIOS = ["text", "split", "thoughts", "parallel-tools", "noarg-tool", "trailing-stop"]
FAILING = ["truncate", "cut", "stream-error", "malformed-call", "rate-limited", "bad-request"]


def test_the_spec_is_one_the_gateway_loads() -> None:
    check_spec(SPEC, "gemini")
    assert SPEC.capabilities == {"chat", "tools", "vision", "reasoning", "embeddings"}


def test_streams_keep_the_normalized_grammar(served: tuple[str, GeminiUpstream]) -> None:
    async def run() -> None:
        async with open_provider(SPEC, {"base_url": served[0], "api_key": KEY}) as provider:
            for model in [*CHAT_SCENARIOS, "usage", "blocked", "safety", "max-tokens"]:
                for stream in (True, False):
                    request = conformance_request(model=model, stream=stream)
                    await check_provider(provider, request, require_usage=True)
            for model in FAILING:
                for stream in (True, False):
                    request = conformance_request(model=model, stream=stream)
                    await expect_provider_error(provider, request)
            await check_aclose(provider, conformance_request(model="usage"), after=2)
            await check_cancellation(provider, conformance_request(model="slow"), after=1)

    asyncio.run(run())


# -- answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["text", "crlf", "split"])
def test_text_streams_and_whole_answers_agree(gateway: str, model: str) -> None:
    chunks = list(
        client(gateway).chat.completions.create(
            model=f"gem/{model}", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello world"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 6
    for event in stream_events(gateway, model)[:-1]:
        validate("CreateChatCompletionStreamResponse", event)
    whole = whole_answer(gateway, model)
    assert whole["choices"][0]["message"]["content"] == "Hello world"
    assert whole["choices"][0]["finish_reason"] == "stop"


def test_thought_parts_are_reasoning_content_before_the_answer(gateway: str) -> None:
    events = stream_events(gateway, "thoughts")
    deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
    reasoning = [d["reasoning_content"] for d in deltas if "reasoning_content" in d]
    assert reasoning == ["Let me think. ", "Still thinking."]
    assert [d.get("content") for d in deltas if d.get("content")] == ["Answer."]
    whole = client(gateway).chat.completions.create(model="gem/thoughts", messages=USER)
    message = whole.choices[0].message
    assert message.content == "Answer."
    assert (message.model_extra or {})["reasoning_content"] == "Let me think. Still thinking."


def test_regression_tool_index_always_0(gateway: str) -> None:
    """§6 row 2 (bifrost#1961): each functionCall part is a call of its own, 0, 1, 2."""
    events = stream_events(gateway, "parallel-tools")
    calls = [
        c
        for e in events[:-1]
        if e["choices"]
        for c in e["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert [c["index"] for c in calls] == [0, 1, 2]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_weather", "get_time"]
    assert [orjson.loads(c["function"]["arguments"]) for c in calls] == [
        {"city": "Paris"},
        {"city": "Rome"},
        {"tz": "CET"},
    ]
    assert len({c["id"] for c in calls}) == 3 and all(c["id"].startswith("call_") for c in calls)
    for event in events[:-1]:
        validate("CreateChatCompletionStreamResponse", event)
    whole = whole_answer(gateway, "parallel-tools")["choices"][0]
    assert [c["function"] for c in whole["message"]["tool_calls"]] == [c["function"] for c in calls]
    assert whole["finish_reason"] == "tool_calls"


def test_regression_no_argument_tool_gets_empty_object(gateway: str) -> None:
    """§6 row 4 (litellm#5063): a call without args has arguments "{}", which parses."""
    for stream in (True, False):
        answer = _tool_answer(gateway, "noarg-tool", stream=stream)
        assert answer == [("now", "{}")]


def test_regression_stop_after_function_call_is_tool_calls(gateway: str) -> None:
    """§6 row 6 (python-genai#2868, ai-gateway#2399): the call chunk, then a trailing chunk with
    STOP alone: the finish is tool_calls, on the last chunk only."""
    events = stream_events(gateway, "trailing-stop")
    finishes = [e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"]]
    assert finishes[-1] == "tool_calls" and set(finishes[:-1]) == {None}
    whole = client(gateway).chat.completions.create(model="gem/trailing-stop", messages=USER)
    assert whole.choices[0].finish_reason == "tool_calls"


def test_regression_cumulative_usage_is_not_summed(gateway: str) -> None:
    """§6 rows 7-9 (agno#6624, any-llm#1291): four events each carry the usage so far: the last
    wins; thought tokens count as completion (prompt + completion == total); cached survive."""
    for stream in (True, False):
        if stream:
            chunks = list(
                client(gateway).chat.completions.create(
                    model="gem/usage",
                    messages=USER,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            usage = chunks[-1].usage
        else:
            usage = client(gateway).chat.completions.create(model="gem/usage", messages=USER).usage
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (10, 9, 19)
        assert usage.prompt_tokens + usage.completion_tokens == usage.total_tokens
        assert usage.completion_tokens_details is not None
        assert usage.completion_tokens_details.reasoning_tokens == 5
        assert usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == 4


@pytest.mark.parametrize(
    ("model", "finish"),
    [("blocked", "content_filter"), ("safety", "content_filter"), ("max-tokens", "length")],
)
def test_blocks_and_limits_are_finish_reasons(gateway: str, model: str, finish: str) -> None:
    whole = client(gateway).chat.completions.create(model=f"gem/{model}", messages=USER)
    assert whole.choices[0].finish_reason == finish
    events = stream_events(gateway, model)
    assert events[-1] == "[DONE]"
    assert [e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"]][-1] == finish


# -- thought signatures --------------------------------------------------------------------------


def test_regression_thought_signature_round_trips(gateway: str, gemini: GeminiUpstream) -> None:
    """§6 row 10 (open-webui#29860, llmgateway#1267): the signature of a functionCall reaches the
    client as tool_calls[].extra_content.google.thought_signature, and goes back upstream on the
    functionCall part when the client replays the call."""
    first = client(gateway).chat.completions.create(model="gem/signature", messages=USER)
    call = (first.choices[0].message.tool_calls or [])[0]
    assert call.model_extra == {"extra_content": {"google": {"thought_signature": SIGNATURE}}}
    replay: Any = [
        *USER,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"answer": 42}'},
    ]
    second = client(gateway).chat.completions.create(model="gem/signature", messages=replay)
    assert second.choices[0].message.content == "signature ok"
    sent = gemini.calls[-1].request.body["contents"]
    assert sent[1] == {
        "role": "model",
        "parts": [
            {
                "functionCall": {"name": "lookup", "args": {"q": "signed"}},
                "thoughtSignature": SIGNATURE,
            }
        ],
    }
    assert sent[2]["parts"][0]["functionResponse"] == {"name": "lookup", "response": {"answer": 42}}
    # The same, streamed: the signature rides on the call's delta.
    events = stream_events(gateway, "signature")
    calls = [
        c
        for e in events[:-1]
        if e["choices"]
        for c in e["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert calls[0]["extra_content"] == {"google": {"thought_signature": SIGNATURE}}


def test_a_replay_without_the_signature_gets_geminis_400(gateway: str) -> None:
    dropped: Any = [
        *USER,
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(model="gem/signature", messages=dropped)
    assert "thought_signature" in caught.value.message


# -- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["truncate", "cut"])
def test_regression_truncation_is_an_error_never_a_stop(gateway: str, model: str) -> None:
    """§6 row 12 (litellm#4562): a stream that ends without a finishReason, or whose connection
    drops, ends with an error frame and no [DONE]; a whole answer is a 502."""
    events = stream_events(gateway, model)
    assert events[-1]["error"]["code"] == "upstream_truncated"
    assert "[DONE]" not in events
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1] if e["choices"])
    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway).chat.completions.create(model=f"gem/{model}", messages=USER)
    assert caught.value.status_code == 502


def test_mid_stream_error_event_is_an_error_frame_without_the_key(gateway: str) -> None:
    events = stream_events(gateway, "stream-error")
    assert events[0]["choices"][0]["delta"]["content"] == "Hello"
    error = events[-1]["error"]
    assert "Internal error encountered" in error["message"] and KEY not in error["message"]
    with pytest.raises(openai.APIError):
        list(
            client(gateway).chat.completions.create(
                model="gem/stream-error", messages=USER, stream=True
            )
        )


def test_malformed_function_call_is_an_error_not_a_stop(
    gateway: str, gemini: GeminiUpstream
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway).chat.completions.create(model="gem/malformed-call", messages=USER)
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_malformed_function_call"
    assert len(gemini.calls) == 3  # retried (max_retries 2): another sample may succeed


def test_rate_limit_is_retried_after_retry_after(gateway: str, gemini: GeminiUpstream) -> None:
    whole = client(gateway).chat.completions.create(model="gem/flaky-429", messages=USER)
    assert whole.choices[0].message.content == "Hello world"
    assert [c.model for c in gemini.calls] == ["flaky-429", "flaky-429"]


def test_rate_limit_longer_than_the_gateway_waits_is_a_429_with_retry_after(
    gateway: str, gemini: GeminiUpstream
) -> None:
    """Google says how long in google.rpc.RetryInfo (30s), not in a header."""
    with pytest.raises(openai.RateLimitError) as caught:
        client(gateway).chat.completions.create(model="gem/rate-limited", messages=USER)
    assert caught.value.response.headers["retry-after"] == "30"
    assert len(gemini.calls) == 1


def test_upstream_400_is_a_400_with_its_message_redacted(gateway: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(model="gem/bad-request", messages=USER)
    assert "Invalid value at 'generation_config'" in caught.value.message
    assert KEY not in caught.value.message and "[redacted]" in caught.value.message


def test_a_bad_key_is_the_operators_problem_not_the_clients(
    make_gateway: GatewayFactory, served: tuple[str, GeminiUpstream]
) -> None:
    """Google answers a bad key with 400 API_KEY_INVALID: that is a 502, not a client 400."""
    block = provider_block(served[0], api_key="AIzaSyWrong-0123456789abcdefghijklmnop")
    gateway = make_gateway(providers={"gem": block}, api_keys=[CLIENT_KEY])
    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway).chat.completions.create(model="gem/text", messages=USER)
    assert caught.value.status_code == 502 and caught.value.code == "upstream_auth_failed"


def test_a_request_gemini_cannot_express_is_a_400_before_any_upstream_call(
    gateway: str, gemini: GeminiUpstream
) -> None:
    image: Any = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(
            model="gem/text", messages=[{"role": "user", "content": [image]}]
        )
    assert "data: URL" in caught.value.message
    assert gemini.calls == []


# -- the outbound request ------------------------------------------------------------------------


def test_outbound_request_mapping(gateway: str, gemini: GeminiUpstream) -> None:
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    image: Any = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    list(
        client(gateway).chat.completions.create(
            model="gem/text",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]},
            ],
            stream=True,
            temperature=0.3,
            top_p=0.9,
            max_tokens=50,
            stop=["END"],
            seed=7,
            tools=tools,
            tool_choice="required",
            reasoning_effort="low",
        )
    )
    call = gemini.calls[-1]
    assert call.request.path == "/v1beta/models/text:streamGenerateContent"
    assert call.query == "alt=sse"
    headers = call.request.headers
    assert headers["x-goog-api-key"] == KEY
    assert "authorization" not in headers and CLIENT_KEY not in repr(call.request)
    body = call.request.body
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "What is this?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            ],
        }
    ]
    assert body["generationConfig"] == {
        "temperature": 0.3,
        "topP": 0.9,
        "maxOutputTokens": 50,
        "stopSequences": ["END"],
        "seed": 7,
        "thinkingConfig": {"thinkingLevel": "LOW", "includeThoughts": True},
    }
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather of a city",
                    "parametersJsonSchema": tools[0]["function"]["parameters"],
                }
            ]
        }
    ]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    client(gateway).chat.completions.create(model="gem/text", messages=USER)
    whole = gemini.calls[-1]
    assert (whole.request.path, whole.query) == ("/v1beta/models/text:generateContent", "")


def test_a_base_url_ending_in_a_version_is_used_as_it_is(
    make_gateway: GatewayFactory, served: tuple[str, GeminiUpstream], gemini: GeminiUpstream
) -> None:
    gateway = make_gateway(
        providers={"gem": provider_block(served[0] + "/v1/")}, api_keys=[CLIENT_KEY]
    )
    client(gateway).chat.completions.create(model="gem/text", messages=USER)
    assert gemini.calls[-1].request.path == "/v1/models/text:generateContent"


def test_regression_key_never_in_a_url_a_log_or_a_response(
    gateway: str, gemini: GeminiUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """§6 row 21 (litellm#8075, #15799): the key goes only in the x-goog-api-key header, and
    no log line or response shows it, even when the upstream quotes it."""
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []
    for model in ("text", "bad-request", "stream-error", "malformed-call", "truncate"):
        for stream in (True, False):
            response = post_chat(
                gateway, {"model": f"gem/{model}", "messages": USER, "stream": stream}, headers=AUTH
            )
            bodies.append(response.text + repr(response.headers))
    assert gemini.calls
    for call in gemini.calls:
        assert KEY not in call.request.path and KEY not in call.query
        assert "key=" not in call.query
        assert call.request.headers["x-goog-api-key"] == KEY
    assert not [b for b in bodies if KEY in b]
    assert KEY not in caplog.text
    assert not [r for r in caplog.records if KEY in r.getMessage() or KEY in repr(r.args)]


@pytest.mark.parametrize(
    ("line", "variable"),
    [
        ('GATEWAY_PROVIDERS__G__MODELS=["m"]\n', "GATEWAY_PROVIDERS__G__API_KEY"),
        (
            f'GATEWAY_PROVIDERS__G__API_KEY={KEY}\nGATEWAY_PROVIDERS__G__MODELS=["m"]\n'
            f"GATEWAY_PROVIDERS__G__BASE_URL=https://h/v1beta?key={KEY}\n",
            "GATEWAY_PROVIDERS__G__BASE_URL",
        ),
        (
            'GATEWAY_PROVIDERS__G__API_KEY=\nGATEWAY_PROVIDERS__G__MODELS=["m"]\n',
            "GATEWAY_PROVIDERS__G__API_KEY",
        ),
    ],
)
def test_bad_options_name_the_variable_and_never_echo_the_key(
    tmp_path: Path, line: str, variable: str
) -> None:
    path = tmp_path / "gateway.env"
    path.write_text("GATEWAY_PROVIDERS__G__TYPE=gemini\n" + line)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert f"{variable}:" in str(caught.value) and KEY not in str(caught.value)


# -- embeddings -----------------------------------------------------------------------------------


def test_regression_embeddings_base64_ignored(gateway: str, gemini: GeminiUpstream) -> None:
    """§6 row 20 (openai-python#1490): the SDK's default call asks for base64 and gets the
    upstream's floats back; Gemini is asked for floats (it knows no base64)."""
    default = client(gateway).embeddings.create(model="gem/embed", input=["alpha", "beta"])
    floats = client(gateway).embeddings.create(
        model="gem/embed", input=["alpha", "beta"], encoding_format="float", dimensions=4
    )
    # float32 on the wire in base64: equal to the upstream's floats within float32 precision.
    assert [d.embedding for d in default.data] == [
        pytest.approx(vector("alpha", 8), rel=1e-6),
        pytest.approx(vector("beta", 8), rel=1e-6),
    ]
    assert [d.embedding for d in floats.data] == [vector("alpha", 4), vector("beta", 4)]
    assert default.usage.prompt_tokens == default.usage.total_tokens == 3  # ~4 chars a token
    sent = [c.request.body["requests"] for c in gemini.calls]
    assert "outputDimensionality" not in sent[0][0] and sent[1][0]["outputDimensionality"] == 4
    assert all(c.request.path == "/v1beta/models/embed:batchEmbedContents" for c in gemini.calls)


# The provider directly, with a real transport: batching, usage and failures.


def _embed(base_url: str, model: str, inputs: list[str], body: dict[str, Any]) -> Any:
    async def run() -> Any:
        transport = PoolTransport()
        context = ProviderContext(name="gem", models=(model,), transport=transport)
        options = Options.model_validate({"base_url": base_url, "api_key": KEY})
        provider = GeminiProvider(context, options)
        try:
            return await provider.embed(EmbeddingRequest(model, inputs, body))
        finally:
            await transport.aclose()

    return asyncio.run(run())


def test_embeddings_are_one_vector_per_text_in_order(
    served: tuple[str, GeminiUpstream], gemini: GeminiUpstream
) -> None:
    base = served[0]
    texts = [f"text {i}" for i in range(150)]
    result = _embed(base, "embed", texts, {"dimensions": 4})
    assert len(result.vectors) == 150 and {len(v) for v in result.vectors} == {4}
    assert result.vectors[0] == _embed(base, "embed", ["text 0"], {"dimensions": 4}).vectors[0]
    assert result.vectors[0] != result.vectors[1]
    # 150 texts: two batchEmbedContents calls (at most 100 each), in order.
    batches = [c.request.body for c in gemini.calls[:2]]
    assert [len(b["requests"]) for b in batches] == [100, 50]
    assert batches[0]["requests"][0] == {
        "model": "models/embed",
        "content": {"parts": [{"text": "text 0"}]},
        "outputDimensionality": 4,
    }
    assert all(c.request.path == "/v1beta/models/embed:batchEmbedContents" for c in gemini.calls)
    assert result.usage.source == "estimated" and result.usage.input_tokens > 0


def test_embedding_usage_is_the_upstreams_when_it_counts(
    served: tuple[str, GeminiUpstream], gemini: GeminiUpstream
) -> None:
    result = _embed(served[0], "embed-counted", ["a", "b"], {})
    assert (result.usage.input_tokens, result.usage.source) == (6, "provider")
    assert {len(v) for v in result.vectors} == {8}


def test_embedding_token_arrays_is_a_client_error(
    served: tuple[str, GeminiUpstream], gemini: GeminiUpstream
) -> None:
    with pytest.raises(ProviderError) as caught:
        _embed(served[0], "embed", [], {"input": [[1, 2, 3]]})
    assert caught.value.status == 400 and caught.value.client_fault
    assert gemini.calls == []


def test_embedding_failures_are_provider_errors(
    served: tuple[str, GeminiUpstream], gemini: GeminiUpstream
) -> None:
    with pytest.raises(UpstreamRateLimited) as caught:
        _embed(served[0], "rate-limited", ["a"], {})
    assert caught.value.retry_after == 30.0


def _tool_answer(gateway: str, model: str, *, stream: bool) -> list[tuple[str, str]]:
    if not stream:
        whole = client(gateway).chat.completions.create(model=f"gem/{model}", messages=USER)
        assert whole.choices[0].finish_reason == "tool_calls"
        return [
            (c.function.name, c.function.arguments)
            for c in whole.choices[0].message.tool_calls or []
            if c.type == "function"
        ]
    calls: dict[int, list[str]] = {}
    finish = None
    for chunk in client(gateway).chat.completions.create(
        model=f"gem/{model}", messages=USER, stream=True
    ):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, ["", ""])
                entry[0] += (delta.function and delta.function.name) or ""
                entry[1] += (delta.function and delta.function.arguments) or ""
    assert finish == "tool_calls"
    for _, arguments in calls.values():
        orjson.loads(arguments)
    return [(name, arguments) for name, arguments in calls.values()]
