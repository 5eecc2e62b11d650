"""Keep-alive frames on quiet streams (``GATEWAY_STREAM_KEEPALIVE``), through a real gateway
and a real upstream that is slow on purpose: a slow first token or a long pause between
chunks gets SSE comments (Anthropic's ``ping`` on ``/v1/messages`` once the message began), so
no proxy or client takes the stream for dead; each SDK still reads the same answer. A stream
that keep-alives began (status 200) and that then fails ends with the surface's own error
event, which each SDK raises."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import GatewayFactory, fault_provider, sse_data
from tests.support.clients import sdk
from tests.support.fault_upstream import FaultUpstream
from tests.support.legacy_upstream import serve_legacy_upstream

KEEPALIVE = 0.2
COMMENT = ": keep-alive"
USER = [{"role": "user", "content": "alpha beta"}]
MODELS = ["ok", "slow-first-byte:0.7", "slow:700", "stall:0", "status:429"]


def start(
    make_gateway: GatewayFactory, fault_upstream: tuple[str, FaultUpstream], **settings: Any
) -> str:
    """A gateway in front of the fault upstream: keep-alives every 0.2 s, a first-token
    timeout of 1.5 s, no retries and no breaker (the timeouts here are the point, not the
    upstream's health); ``settings`` change any of it."""
    defaults: dict[str, Any] = {
        "stream_keepalive": KEEPALIVE,
        "first_token_timeout": 1.5,
        "max_retries": 0,
        "breaker_threshold": 0,
    }
    providers = {"fault": fault_provider(fault_upstream[0], models=MODELS)}
    return make_gateway(providers=providers, **{**defaults, **settings})


@pytest.fixture
def gateway(make_gateway: GatewayFactory, fault_upstream: tuple[str, FaultUpstream]) -> str:
    return start(make_gateway, fault_upstream)


def raw(url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, headers={"x-api-key": "unused"}, timeout=20)


def lines(response: httpx.Response) -> list[str]:
    return [line for line in response.text.split("\n") if line]


def chat(model: str) -> dict[str, Any]:
    return {"model": f"fault/{model}", "messages": USER, "stream": True}


def test_a_slow_first_token_gets_comments_then_the_same_answer(gateway: str) -> None:
    response = raw(gateway, "/v1/chat/completions", chat("slow-first-byte:0.7"))
    assert response.status_code == 200
    assert response.headers["x-request-id"]  # the head keep-alives sent went through it all
    got = lines(response)
    first_data = next(i for i, line in enumerate(got) if line.startswith("data: "))
    assert first_data >= 2 and set(got[:first_data]) == {COMMENT}, got[:first_data]
    assert sse_data(response.text)[-1] == "[DONE]"
    stream = sdk(gateway).chat.completions.create(
        model="fault/slow-first-byte:0.7",
        messages=[{"role": "user", "content": "alpha beta"}],
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "alpha beta"


def test_a_long_pause_between_chunks_gets_comments(gateway: str) -> None:
    response = raw(gateway, "/v1/chat/completions", chat("slow:700"))
    got = lines(response)
    data = [i for i, line in enumerate(got) if line.startswith("data: ")]
    between = got[data[0] : data[-1]]
    assert between.count(COMMENT) >= 4, got  # 0.7 s pauses, a comment every 0.2 s
    assert [line for line in between if line != COMMENT and not line.startswith("data: ")] == []
    assert sse_data(response.text)[-1] == "[DONE]"


def test_a_stream_faster_than_the_interval_gets_none(
    make_gateway: GatewayFactory, fault_upstream: tuple[str, FaultUpstream]
) -> None:
    # an interval no busy machine's stall reaches, for a stream that takes milliseconds
    url = start(make_gateway, fault_upstream, stream_keepalive=2.0)
    response = raw(url, "/v1/chat/completions", chat("ok"))
    assert COMMENT not in response.text
    assert sse_data(response.text)[-1] == "[DONE]"


def test_messages_get_anthropics_ping_once_the_message_began(gateway: str) -> None:
    body = {"model": "fault/slow:700", "max_tokens": 64, "messages": USER, "stream": True}
    response = raw(gateway, "/v1/messages", body)
    events = [line[7:] for line in lines(response) if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert events.count("ping") >= 4, events
    pings = [orjson.loads(d) for d in sse_data(response.text) if '"ping"' in d]
    assert pings and all(p == {"type": "ping"} for p in pings)
    client = anthropic.Anthropic(base_url=gateway, api_key="unused", max_retries=0)
    with client.messages.stream(
        model="fault/slow-first-byte:0.7",
        max_tokens=64,
        messages=[{"role": "user", "content": "alpha beta"}],
    ) as stream:
        assert stream.get_final_text() == "alpha beta"


def test_a_failure_after_keepalives_began_the_stream_is_told_in_it(gateway: str) -> None:
    """Status 200 is sent with the first keep-alive, so a first-token timeout that comes
    later is each surface's error event, and each SDK raises it."""
    response = raw(gateway, "/v1/chat/completions", chat("stall:0"))
    assert response.status_code == 200
    assert lines(response)[0] == COMMENT
    last = orjson.loads(sse_data(response.text)[-1])
    assert last["error"]["code"] == "first_token_timeout"
    with pytest.raises(openai.APIError, match="no first token"):
        for _ in sdk(gateway).chat.completions.create(
            model="fault/stall:0", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass

    messages = {"model": "fault/stall:0", "max_tokens": 64, "messages": USER, "stream": True}
    response = raw(gateway, "/v1/messages", messages)
    assert response.status_code == 200 and lines(response)[0] == COMMENT
    assert [line for line in lines(response) if line.startswith("event: ")] == ["event: error"]
    client = anthropic.Anthropic(base_url=gateway, api_key="unused", max_retries=0)
    with (
        pytest.raises(anthropic.APIStatusError, match="no first token"),
        client.messages.stream(
            model="fault/stall:0", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        stream.get_final_text()

    responses = {"model": "fault/stall:0", "input": "hi", "stream": True}
    response = raw(gateway, "/v1/responses", responses)
    assert response.status_code == 200 and lines(response)[0] == COMMENT
    kinds = [orjson.loads(d)["type"] for d in sse_data(response.text)]
    assert kinds[0] == "response.created" and kinds[-1] == "response.failed", kinds
    failed = orjson.loads(sse_data(response.text)[-1])["response"]
    assert failed["status"] == "failed" and "no first token" in failed["error"]["message"]


def test_legacy_completions_keep_alive_too(make_gateway: GatewayFactory) -> None:
    with serve_legacy_upstream() as (base_url, _):
        legacy = {"type": "openai", "base_url": base_url, "models": ["slow:0.7", "slow:5"]}
        url = make_gateway(
            providers={"legacy": legacy},
            stream_keepalive=KEEPALIVE,
            first_token_timeout=1.5,
            max_retries=0,
        )
        slow = {"model": "legacy/slow:0.7", "prompt": "alpha beta", "stream": True}
        answered = raw(url, "/v1/completions", slow)
        failed = raw(url, "/v1/completions", {**slow, "model": "legacy/slow:5"})
    assert answered.status_code == 200 and lines(answered)[0] == COMMENT
    assert sse_data(answered.text)[-1] == "[DONE]"
    text = "".join(orjson.loads(d)["choices"][0]["text"] for d in sse_data(answered.text)[:-1])
    assert text == "alpha beta"
    assert failed.status_code == 200 and lines(failed)[0] == COMMENT
    assert orjson.loads(sse_data(failed.text)[-1])["error"]["code"] == "first_token_timeout"


def test_a_failure_before_the_first_keepalive_keeps_its_status(gateway: str) -> None:
    response = raw(gateway, "/v1/chat/completions", chat("status:429"))
    assert response.status_code == 429, response.text
    assert response.json()["error"]["type"] == "rate_limit_error"
    body = {"model": "fault/status:429", "max_tokens": 64, "messages": USER, "stream": True}
    response = raw(gateway, "/v1/messages", body)
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_keepalive_off_sends_none_and_a_timeout_keeps_its_status(
    make_gateway: GatewayFactory, fault_upstream: tuple[str, FaultUpstream]
) -> None:
    url = start(make_gateway, fault_upstream, stream_keepalive=0, first_token_timeout=1.0)
    response = raw(url, "/v1/chat/completions", chat("slow:700"))
    assert COMMENT not in response.text and sse_data(response.text)[-1] == "[DONE]"
    response = raw(url, "/v1/chat/completions", chat("stall:0"))
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "first_token_timeout"


def test_a_fallback_after_keepalives_began_still_answers(
    make_gateway: GatewayFactory, fault_upstream: tuple[str, FaultUpstream]
) -> None:
    """Keep-alives send bytes, not tokens: the first token may still come from a retry or a
    fallback, and the client reads one clean answer."""
    url = start(
        make_gateway,
        fault_upstream,
        fallbacks={"fault/stall:0": ["fault/ok"]},
        first_token_timeout=0.7,
    )
    response = raw(url, "/v1/chat/completions", chat("stall:0"))
    assert response.status_code == 200
    assert lines(response)[0] == COMMENT
    chunks = [orjson.loads(d) for d in sse_data(response.text)[:-1]]
    assert sse_data(response.text)[-1] == "[DONE]"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "alpha beta"
    assert {c["model"] for c in chunks} == {"fault/ok"}


def test_a_client_that_leaves_during_keepalives_cancels_the_upstream(
    gateway: str, fault_upstream: tuple[str, FaultUpstream]
) -> None:
    upstream = fault_upstream[1]
    upstream.reset()
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", f"{gateway}/v1/chat/completions", json=chat("stall:0")) as response,
    ):
        assert response.status_code == 200
        assert next(response.iter_lines()) == COMMENT  # the head and a keep-alive came
    left = time.monotonic()
    seen = upstream.wait_for_disconnect(timeout=5)
    assert seen is not None, "the upstream never saw the client go away"
    assert seen - left < 1.0  # not at the first-token timeout (1.5 s)
