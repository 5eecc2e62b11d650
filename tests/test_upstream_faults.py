"""Upstream failures a review reproduced (REVIEW.md findings 2-5), each through a real gateway:
the right status, the right count of upstream deliveries, and no breaker opened for nothing."""

from __future__ import annotations

import concurrent.futures
import logging
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import GatewayFactory, fault_provider, post_chat, sse_data
from tests.support.fault_upstream import FaultUpstream
from tests.support.openapi_spec import validate
from tests.support.socket_upstream import close_delimited_json, serve_socket_upstream

USER = [{"role": "user", "content": "alpha beta"}]


def body(model: str, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "messages": USER, "stream": stream}


@pytest.mark.parametrize("stream", [True, False])
def test_valid_json_of_the_wrong_shape_is_a_502_not_a_500(
    make_gateway: GatewayFactory, fault_upstream: tuple[str, FaultUpstream], stream: bool
) -> None:
    url = make_gateway(
        providers={"fault": fault_provider(fault_upstream[0], models=["malformed-choices"])}
    )
    response = post_chat(url, body("fault/malformed-choices", stream))
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_malformed"


def test_a_request_the_upstream_read_before_hanging_up_is_delivered_once(
    make_gateway: GatewayFactory,
) -> None:
    # REVIEW finding 3: reused connection + transport replay + two retries = 4 deliveries.
    payload = orjson.dumps(_completion("warm-up"))
    framed = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    answers = iter([framed % len(payload) + payload])

    def answer(head: bytes, raw: bytes) -> bytes | None:
        return next(answers, None)  # the first on a kept-alive connection; then hang up

    with serve_socket_upstream(answer) as upstream:
        url = make_gateway(
            providers={"up": {"type": "openai", "base_url": upstream.base_url, "models": ["m"]}}
        )
        assert post_chat(url, body("up/m")).status_code == 200  # a pooled, reusable connection
        response = post_chat(url, body("up/m"))
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_disconnected"
        assert upstream.count() == 2, "the POST the upstream read was sent again"


def test_a_body_delimited_by_closing_the_connection_is_read_whole(
    make_gateway: GatewayFactory,
) -> None:
    # REVIEW finding 5: read as truncated (502) though valid (RFC 9112 section 6.3).
    with serve_socket_upstream(lambda head, raw: close_delimited_json(_completion("whole"))) as up:
        url = make_gateway(
            providers={"up": {"type": "openai", "base_url": up.base_url, "models": ["m"]}}
        )
        response = post_chat(url, body("up/m"))
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "whole"


def test_waiting_for_a_pooled_connection_is_not_charged_to_the_upstream(
    make_gateway: GatewayFactory, fault_upstream: tuple[str, FaultUpstream]
) -> None:
    # REVIEW finding 4: MAX_CONNECTIONS=1, 8 streams to an upstream answering in 0.6 s,
    # first-token 1 s: 7 got 504 and the breaker opened.
    url = make_gateway(
        providers={
            "serial": fault_provider(
                fault_upstream[0],
                models=["slow-first:0.6"],
                max_connections=1,
                first_token_timeout=1.0,
                max_retries=0,
                breaker_threshold=2,
            )
        }
    )
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(lambda _: post_chat(url, body("serial/slow-first:0.6", True)), range(8))
        )
    assert [r.status_code for r in responses] == [200] * 8
    assert post_chat(url, body("serial/slow-first:0.6")).status_code == 200


def test_a_pool_wait_past_its_bound_is_the_gateways_503_and_opens_no_breaker(
    make_gateway: GatewayFactory, fault_upstream: tuple[str, FaultUpstream]
) -> None:
    url = make_gateway(
        providers={
            "serial": fault_provider(
                fault_upstream[0],
                models=["slow-first:1.0"],
                max_connections=1,
                pool_timeout=0.2,
                max_retries=0,
                breaker_threshold=1,
            )
        }
    )
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(
            pool.map(lambda _: post_chat(url, body("serial/slow-first:1.0")), range(4))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 200 and 503 in statuses
    for response in responses:
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "pool_exhausted"
    assert post_chat(url, body("serial/slow-first:1.0")).status_code == 200, "no breaker opened"


def test_reasoning_content_from_an_openai_type_upstream_reaches_the_client(
    make_gateway: GatewayFactory, fault_upstream: tuple[str, FaultUpstream]
) -> None:
    url = make_gateway(providers={"fault": fault_provider(fault_upstream[0], models=["reasoning"])})
    streamed = post_chat(url, body("fault/reasoning", stream=True))
    chunks = [orjson.loads(e) for e in sse_data(streamed.text)[:-1]]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks)
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert (reasoning, content) == ("Thinking it over.", "alpha beta")
    whole = post_chat(url, body("fault/reasoning")).json()
    validate("CreateChatCompletionResponse", whole)
    assert whole["choices"][0]["message"]["reasoning_content"] == "Thinking it over."


def test_every_response_carries_a_request_id_that_the_upstream_and_the_logs_see(
    make_gateway: GatewayFactory,
    fault_upstream: tuple[str, FaultUpstream],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = make_gateway(
        providers={"fault": fault_provider(fault_upstream[0], models=["ok", "status:500"])}
    )
    fault_upstream[1].reset()
    with caplog.at_level(logging.INFO):
        mine = post_chat(url, body("fault/ok"), headers={"x-request-id": "client-trace-42"})
        theirs = fault_upstream[1].requests[-1].headers.get("x-request-id")
        failed = post_chat(
            url, body("fault/status:500"), headers={"x-request-id": "bad id with spaces"}
        )
        plain = httpx.get(url + "/v1/models", timeout=5)
        missing = httpx.get(url + "/nowhere", timeout=5)
    assert mine.headers["x-request-id"] == "client-trace-42" and theirs == "client-trace-42"
    generated = failed.headers["x-request-id"]
    assert generated != "bad id with spaces" and len(generated) >= 16
    assert plain.headers["x-request-id"] and missing.headers["x-request-id"]
    assert plain.headers["x-request-id"] != missing.headers["x-request-id"]
    lines = [r.getMessage() for r in caplog.records]
    mine_lines = [line for line in lines if "client-trace-42" in line]
    assert mine_lines and all("model=fault/ok" in line for line in mine_lines)
    failed_lines = [line for line in lines if generated in line]
    # the retries, the access line and the failure line with its cause all carry the id
    assert any("retrying" in line for line in failed_lines)
    assert any(
        "failed" in line and "cause=" in line and "attempts=3" in line for line in failed_lines
    )


def _completion(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
    }
