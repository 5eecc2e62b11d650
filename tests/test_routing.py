"""Routing: deployments behind a name, picked by weight among the healthy, least busy first."""

from __future__ import annotations

import collections
from collections.abc import AsyncGenerator

import pytest

from gateway.errors import NotFound
from gateway.resilience import CircuitBreaker
from gateway.routing import Deployment, Policy, Router
from providers.base import ChatRequest, Chunk


class _Idle:
    name = "p"
    models: tuple[str, ...] = ("a", "b", "c")

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        yield Chunk(deltas=[])

    async def aclose(self) -> None:
        return None


def _deployments(*names: str) -> list[Deployment]:
    return [
        Deployment(f"p/{n}", _Idle(), n, Policy(), CircuitBreaker(f"p/{n}", threshold=1))
        for n in names
    ]


def test_a_model_id_is_its_own_one_deployment_then_its_fallbacks() -> None:
    a, b, c = _deployments("a", "b", "c")
    router = Router([a, b, c], fallbacks={"p/a": ["p/c", "p/b"]})
    assert router.chain("p/a") == (a, c, b)
    assert router.chain("p/b") == (b,)
    with pytest.raises(NotFound):
        router.chain("p/nope")


def test_weights_share_the_traffic_when_nothing_is_busy() -> None:
    a, b = _deployments("a", "b")
    router = Router([a, b], aliases={"gpt": [("p/a", 3.0), ("p/b", 1.0)]})
    firsts = collections.Counter(router.chain("gpt")[0].model_id for _ in range(4000))
    assert 0.70 < firsts["p/a"] / 4000 < 0.80, firsts
    # The other deployment is the first fallback, before any configured one.
    assert {router.chain("gpt")[1].model_id for _ in range(50)} == {"p/a", "p/b"}


def test_the_least_busy_per_unit_of_weight_goes_first() -> None:
    a, b = _deployments("a", "b")
    router = Router([a, b], aliases={"gpt": [("p/a", 2.0), ("p/b", 1.0)]})
    a.in_flight, b.in_flight = 4, 1  # 2 per unit of weight against 1
    assert all(router.chain("gpt")[0] is b for _ in range(100))
    a.in_flight, b.in_flight = 2, 2  # 1 against 2
    assert all(router.chain("gpt")[0] is a for _ in range(100))


def test_a_deployment_whose_breaker_is_open_is_not_picked_but_stays_a_last_fallback() -> None:
    a, b, c = _deployments("a", "b", "c")
    router = Router(
        [a, b, c], aliases={"gpt": [("p/a", 100.0), ("p/b", 1.0)]}, fallbacks={"gpt": ["p/c"]}
    )
    a.breaker.failure()  # threshold 1: open
    for _ in range(100):
        assert router.chain("gpt") == (b, a, c)


def test_when_every_breaker_is_open_the_chain_still_names_them() -> None:
    a, b = _deployments("a", "b")
    router = Router([a, b], aliases={"gpt": [("p/a", 1.0), ("p/b", 1.0)]})
    a.breaker.failure()
    b.breaker.failure()
    assert set(router.chain("gpt")) == {a, b}
