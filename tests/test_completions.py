"""Legacy ``POST /v1/completions`` end to end: the real openai SDK against a real gateway in front
of an OpenAI-compatible upstream on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from gateway.app import create_app
from gateway.observe import Call
from providers.errors import ProviderError
from tests.conftest import GatewayFactory, settings, sse_data
from tests.support.clients import sdk
from tests.support.legacy_upstream import LegacyUpstream, serve_legacy_upstream
from tests.support.openapi_spec import validate
from tests.support.servers import serve_in_thread

KEY = "client-key-completions"
MODELS = ["ok", "sse-always", "error-frame:2", "truncate:1", "status:429:1", "status:400"]
MODELS += ["status:500"]


@pytest.fixture(scope="module")
def legacy() -> Iterator[tuple[str, LegacyUpstream]]:
    with serve_legacy_upstream() as served:
        yield served


def _up(base_url: str) -> dict[str, Any]:
    return {"type": "openai", "base_url": base_url, "api_key": "sk-up-0123456789", "models": MODELS}


@pytest.fixture
def gateway(make_gateway: GatewayFactory, legacy: tuple[str, LegacyUpstream]) -> str:
    legacy[1].reset()
    return make_gateway(
        api_keys=[KEY], providers={"echo": {"type": "echo"}, "up": {**_up(legacy[0])}}
    )


def post(url: str, body: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {KEY}"}
    return httpx.post(url + "/v1/completions", json=body, headers=headers, timeout=10)


def test_whole_answer_through_an_openai_upstream(
    gateway: str, legacy: tuple[str, LegacyUpstream]
) -> None:
    client = sdk(gateway, KEY)
    answer = client.completions.create(
        model="up/ok", prompt="say this please", n=2, max_tokens=5, suffix="!"
    )
    assert [c.text for c in answer.choices] == ["say this please"] * 2
    assert [c.index for c in answer.choices] == [0, 1]
    assert answer.choices[0].finish_reason == "stop"
    assert answer.id.startswith("cmpl-") and answer.id != "cmpl-upstream"
    assert answer.model == "up/ok" and answer.object == "text_completion"
    assert answer.usage is not None and answer.usage.total_tokens == 11
    seen = legacy[1].requests[-1]
    assert (
        seen.path == "/v1/completions"
        and seen.headers["authorization"] == "Bearer sk-up-0123456789"
    )
    assert seen.body == {
        "model": "ok",
        "prompt": "say this please",
        "n": 2,
        "max_tokens": 5,
        "suffix": "!",
    }
    validate("CreateCompletionResponse", post(gateway, {"model": "up/ok", "prompt": "x"}).json())


def test_stream_with_include_usage_ends_with_a_usage_chunk(
    gateway: str, legacy: tuple[str, LegacyUpstream]
) -> None:
    stream = sdk(gateway, KEY).completions.create(
        model="up/ok", prompt="one two three", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "one two three"
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("cmpl-")
    assert {c.model for c in chunks} == {"up/ok"}
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    body = legacy[1].requests[-1].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_stream_without_include_usage_has_no_usage_chunk_but_usage_was_asked(
    gateway: str, legacy: tuple[str, LegacyUpstream]
) -> None:
    raw = post(gateway, {"model": "up/ok", "prompt": ["a b", "c"], "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = sse_data(raw.text)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all("usage" not in c for c in chunks)
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert texts == {0: "a b", 1: "c"}
    assert legacy[1].requests[-1].body["stream_options"] == {"include_usage": True}


def test_token_prompts_pass_through_as_given(
    gateway: str, legacy: tuple[str, LegacyUpstream]
) -> None:
    answer = sdk(gateway, KEY).completions.create(model="up/ok", prompt=[[1, 2, 3], [4]])
    assert [c.text for c in answer.choices] == ["tokens:3", "tokens:1"]
    assert legacy[1].requests[-1].body["prompt"] == [[1, 2, 3], [4]]


def test_an_upstream_that_streams_anyway_is_aggregated_with_its_logprobs(gateway: str) -> None:
    answer = post(gateway, {"model": "up/sse-always", "prompt": "whole answer", "logprobs": 1})
    assert answer.status_code == 200
    choice = answer.json()["choices"][0]
    assert choice["text"] == "whole answer" and choice["finish_reason"] == "length"
    assert choice["logprobs"]["tokens"] == ["whole ", "answer"]
    assert choice["logprobs"]["text_offset"] == [0, 6]
    validate("CreateCompletionResponse", answer.json())


@pytest.mark.parametrize(
    ("model", "code"),
    [("up/error-frame:2", "upstream_error"), ("up/truncate:1", "upstream_truncated")],
)
def test_a_failure_after_the_first_byte_is_an_error_event_without_done(
    gateway: str, model: str, code: str
) -> None:
    raw = post(gateway, {"model": model, "prompt": "a b c d", "stream": True})
    assert raw.status_code == 200
    events = sse_data(raw.text)
    assert "[DONE]" not in events
    error = orjson.loads(events[-1])["error"]
    assert error["code"] == code
    with pytest.raises(openai.APIError):
        list(sdk(gateway, KEY).completions.create(model=model, prompt="a b c d", stream=True))


def test_failures_before_the_first_byte_get_a_status(
    gateway: str, legacy: tuple[str, LegacyUpstream]
) -> None:
    retried = post(gateway, {"model": "up/status:429:1", "prompt": "x", "stream": True})
    assert retried.status_code == 200 and sse_data(retried.text)[-1] == "[DONE]"
    assert len(legacy[1].requests) == 2
    refused = post(gateway, {"model": "up/status:400", "prompt": "x", "stream": True})
    assert refused.status_code == 400
    assert "legacy upstream: status 400" in refused.json()["error"]["message"]
    failed = post(gateway, {"model": "up/status:500", "prompt": "x"})
    assert failed.status_code == 502 and failed.json()["error"]["type"] == "upstream_error"
    validate("ErrorResponse", failed.json())


def test_a_provider_without_the_legacy_api_gets_400_naming_it(gateway: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gateway, KEY).completions.create(model="echo/echo", prompt="x")
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "model_not_supported"
    assert body["param"] == "model" and "'echo'" in body["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "up/ok"}, "prompt"),
        ({"prompt": "x"}, "model"),
        ({"model": "up/ok", "prompt": 5}, "prompt"),
        ({"model": "up/ok", "prompt": []}, "prompt"),
        ({"model": "up/ok", "prompt": [1, -1]}, "prompt[1]"),
        ({"model": "up/ok", "prompt": ["a", 1]}, "prompt[1]"),
        ({"model": "up/ok", "prompt": [[1], []]}, "prompt[1]"),
        ({"model": "up/ok", "prompt": "x", "n": 0}, "n"),
        ({"model": "up/ok", "prompt": "x", "n": 17}, "n"),
        ({"model": "up/ok", "prompt": "x", "max_tokens": -1}, "max_tokens"),
        ({"model": "up/ok", "prompt": "x", "max_tokens": 10**9}, "max_tokens"),
        ({"model": "up/ok", "prompt": "x", "temperature": 3}, "temperature"),
        ({"model": "up/ok", "prompt": "x", "top_p": "1"}, "top_p"),
        ({"model": "up/ok", "prompt": "x", "stream": "yes"}, "stream"),
        ({"model": "up/ok", "prompt": "x", "stream_options": []}, "stream_options"),
        (
            {"model": "up/ok", "prompt": "x", "stream_options": {"include_usage": 1}},
            "stream_options.include_usage",
        ),
        ({"model": "up/ok", "prompt": "x", "stop": 5}, "stop"),
        ({"model": "up/ok", "prompt": "x", "stop": ["a", 5]}, "stop[1]"),
        ({"model": "up/ok", "prompt": "x", "best_of": 21}, "best_of"),
        ({"model": "up/ok", "prompt": "x", "logprobs": -1}, "logprobs"),
        ({"model": "up/ok", "prompt": "x", "echo": "yes"}, "echo"),
        ({"model": "up/ok", "prompt": "x", "logit_bias": {"50256": "x"}}, "logit_bias.50256"),
        ({"model": "up/ok", "prompt": "x", "extra": {"api_key": "sk-x"}}, "extra.api_key"),
    ],
)
def test_bad_requests_get_400_naming_the_field(gateway: str, body: Any, param: str) -> None:
    answer = post(gateway, body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    validate("ErrorResponse", answer.json())


# -- observers -------------------------------------------------------------------------


class Finished:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.done = threading.Event()

    def attempt_started(self, call: Call, deployment: str) -> None: ...
    def attempt_finished(
        self, call: Call, deployment: str, error: ProviderError | None
    ) -> None: ...
    def first_token(self, call: Call) -> None: ...

    def finished(self, call: Call) -> None:
        self.calls.append(dataclasses.replace(call))
        self.done.set()


def test_observers_see_the_surface_model_usage_and_finish(
    legacy: tuple[str, LegacyUpstream],
) -> None:
    seen = Finished()
    app = create_app(settings(providers={"up": _up(legacy[0])}), observers=(seen,))
    with serve_in_thread(app) as url:
        list(sdk(url).completions.create(model="up/ok", prompt="a b", stream=True))
        assert seen.done.wait(5)
    call = seen.calls[0]
    assert (call.surface, call.model, call.deployment) == ("completions", "up/ok", "up/ok")
    assert call.stream and call.finish_reason == "length" and call.ttft is not None
    assert call.usage is not None and call.usage.output_tokens == 2
