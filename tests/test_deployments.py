"""Breakers per deployment and several deployments behind one name, through a real gateway.

One OpenAI-compatible upstream serves several models (the fault upstream picks its behaviour by
model name), as vLLM or a proxy in front of many models does.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import pytest

from tests.conftest import GatewayFactory, fault_provider, post_chat
from tests.support.fault_upstream import FaultUpstream

USER = [{"role": "user", "content": "alpha beta"}]


def body(model: str, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "messages": USER, "stream": stream}


def test_one_models_failures_do_not_take_down_the_other_models_of_its_provider(
    make_gateway: GatewayFactory, fault_upstream: tuple[str, FaultUpstream]
) -> None:
    url = make_gateway(
        providers={
            "fault": fault_provider(
                fault_upstream[0],
                models=["ok", "status:503", "status:400", "stall:1", "truncate:1"],
                max_retries=0,
                breaker_threshold=2,
                breaker_cooldown=60,
                first_token_timeout=2,
                idle_timeout=0.3,
            )
        }
    )
    for model in ("fault/status:503", "fault/stall:1", "fault/truncate:1"):
        post_chat(url, body(model, stream=True))
        post_chat(url, body(model, stream=True))
        cooling = post_chat(url, body(model))
        assert cooling.status_code == 503, model
        assert cooling.json()["error"]["code"] == "provider_cooling_down"
        assert 1 <= int(cooling.headers["retry-after"]) <= 60
    # The same upstream still serves its healthy model, and still refuses a bad request with
    # its own 400, not with the failing models' 503.
    assert post_chat(url, body("fault/ok")).status_code == 200
    assert post_chat(url, body("fault/status:400")).status_code == 400


def test_a_clients_errors_never_open_a_breaker(
    make_gateway: GatewayFactory, fault_upstream: tuple[str, FaultUpstream]
) -> None:
    url = make_gateway(
        providers={
            "fault": fault_provider(
                fault_upstream[0],
                models=["status:400", "status:404", "status:422", "status:429:0", "status:401"],
                max_retries=0,
                breaker_threshold=1,
            )
        }
    )
    expected = {"400": 400, "404": 404, "422": 400, "429:0": 429, "401": 502}
    for _ in range(3):
        for model, status in expected.items():
            assert post_chat(url, body(f"fault/status:{model}")).status_code == status


def test_breaker_threshold_zero_turns_it_off(
    make_gateway: GatewayFactory, fault_upstream: tuple[str, FaultUpstream]
) -> None:
    url = make_gateway(
        providers={
            "fault": fault_provider(
                fault_upstream[0], models=["status:503"], max_retries=0, breaker_threshold=0
            )
        },
        breaker_threshold=1,
    )
    fault_upstream[1].reset()
    statuses = [post_chat(url, body("fault/status:503")).status_code for _ in range(6)]
    assert statuses == [502] * 6 and fault_upstream[1].attempts("status:503") == 6


def test_an_opening_is_logged_once(
    make_gateway: GatewayFactory,
    fault_upstream: tuple[str, FaultUpstream],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = make_gateway(
        providers={
            "fault": fault_provider(
                fault_upstream[0],
                models=["status:503", "ok"],
                max_retries=0,
                breaker_threshold=2,
                breaker_cooldown=0.2,
            )
        },
        aliases={"flaky": "fault/status:503"},
    )
    with caplog.at_level(logging.INFO, logger="gateway"):
        for _ in range(5):
            post_chat(url, body("fault/status:503"))
    opened = [r.getMessage() for r in caplog.records if "breaker" in r.getMessage()]
    assert len(opened) == 1 and "fault/status:503" in opened[0] and "opened" in opened[0]


def test_an_alias_spreads_requests_over_its_deployments_by_weight(
    make_gateway: GatewayFactory,
) -> None:
    url = make_gateway(
        providers={"a": {"type": "echo"}, "b": {"type": "echo"}},
        aliases={"gpt": [{"model": "a/echo", "weight": 3}, {"model": "b/echo", "weight": 1}]},
    )
    answered = collections.Counter(post_chat(url, body("gpt")).json()["model"] for _ in range(200))
    assert set(answered) == {"a/echo", "b/echo"}
    assert 0.6 < answered["a/echo"] / 200 < 0.9, answered


def test_an_alias_falls_back_to_its_other_deployments_first(
    make_gateway: GatewayFactory, fault_upstream: tuple[str, FaultUpstream]
) -> None:
    url = make_gateway(
        providers={
            "fault": fault_provider(fault_upstream[0], models=["status:503"], max_retries=0),
            "echo": {"type": "echo"},
            "spare": {"type": "echo"},
        },
        aliases={"gpt": [{"model": "fault/status:503", "weight": 1000}, {"model": "echo/echo"}]},
        fallbacks={"gpt": ["spare/echo"]},
    )
    for _ in range(10):
        response = post_chat(url, body("gpt"))
        assert response.status_code == 200
        assert response.json()["model"] == "echo/echo"
