"""The attempt loop, with in-process providers: every attempt is paired with its breaker,
its in-flight count and its stream, whatever ends it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import pytest

from gateway.asgi import ClientDisconnected, DisconnectSignal
from gateway.dispatch import Dispatcher
from gateway.errors import APIError
from gateway.observe import Call, Observers
from gateway.resilience import CircuitBreaker, RetryPolicy
from gateway.routing import Deployment, Policy
from providers.base import ChatRequest, Chunk, Delta
from providers.errors import ProviderError, UpstreamConnectError

Behaviour = Callable[[int], AsyncGenerator[Chunk, None]]


class Scripted:
    """A provider whose n-th call behaves as ``behaviours[n]`` (the last one repeats)."""

    name = "p"
    models: tuple[str, ...] = ("m",)

    def __init__(self, *behaviours: Behaviour) -> None:
        self.behaviours = behaviours
        self.calls = 0
        self.closed = 0

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        behaviour = self.behaviours[min(self.calls, len(self.behaviours) - 1)]
        self.calls += 1
        try:
            async for chunk in behaviour(self.calls):
                yield chunk
        finally:
            self.closed += 1

    async def aclose(self) -> None:
        return None


async def answers(_: int) -> AsyncGenerator[Chunk, None]:
    yield Chunk([Delta(text="ok")])
    yield Chunk([Delta(finish_reason="stop")])


async def refuses(_: int) -> AsyncGenerator[Chunk, None]:
    raise UpstreamConnectError("refused")
    yield Chunk([])  # pragma: no cover - makes this an async generator


async def crashes(_: int) -> AsyncGenerator[Chunk, None]:
    raise AttributeError("'int' object has no attribute 'get'")
    yield Chunk([])  # pragma: no cover


async def crashes_mid_stream(_: int) -> AsyncGenerator[Chunk, None]:
    yield Chunk([Delta(text="ok")])
    raise KeyError("choices")


async def ignores_cancellation(_: int) -> AsyncGenerator[Chunk, None]:
    yield Chunk([Delta(text="ok")])
    while True:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            break  # swallowed, as a careless plugin might
    yield Chunk([Delta(text="late")])


def _deployment(provider: Scripted, *, threshold: int = 1, cooldown: float = 0.05) -> Deployment:
    return Deployment(
        "p/m",
        provider,
        "m",
        Policy(first_token=2, idle=0.2, total=5, retry=RetryPolicy(max_retries=0)),
        CircuitBreaker("p/m", threshold=threshold, cooldown=cooldown),
    )


async def _receive_nothing() -> dict[str, Any]:
    await asyncio.Event().wait()
    return {}


def _call() -> Call:
    return Call("req-1", "POST", "/v1/chat/completions", "-", time.perf_counter())


async def _request(deployment: Deployment) -> tuple[str, list[Chunk]]:
    """One request through a session: ``"ok"``, or the error code, and the chunks it got."""
    got: list[Chunk] = []

    def sink(chunk: Chunk) -> bytes:
        got.append(chunk)
        return b""

    async with Dispatcher(observers=Observers([])).session(
        _call(), _receive_nothing, [deployment], stream=True
    ) as session:
        try:
            first = await session.open(
                lambda d: d.provider.stream(ChatRequest("m", {"messages": []}))
            )
        except APIError as exc:
            return str(exc.code), got
        error = await session.pump(first, sink)
    return ("ok" if error is None else str(error.code)), got


def test_a_provider_bug_is_a_502_and_a_probe_that_hits_it_does_not_wedge_the_breaker() -> None:
    # REVIEW finding 2: refused (opens the breaker), then the half-open probe raised an
    # AttributeError, and every later request got 503 until restart.
    provider = Scripted(refuses, crashes, answers)
    deployment = _deployment(provider)

    async def main() -> list[str]:
        codes = [(await _request(deployment))[0]]
        await asyncio.sleep(0.06)  # cooled down: the next request is the probe
        codes.append((await _request(deployment))[0])
        codes.append((await _request(deployment))[0])  # the crash counted: open again
        await asyncio.sleep(0.06)
        codes.append((await _request(deployment))[0])
        return codes

    codes = asyncio.run(main())
    assert codes == ["upstream_unavailable", "provider_failed", "provider_cooling_down", "ok"]
    assert deployment.in_flight == 0 and provider.closed == provider.calls


def test_a_provider_bug_mid_stream_ends_the_stream_with_an_error() -> None:
    deployment = _deployment(Scripted(crashes_mid_stream), threshold=5)
    code, chunks = asyncio.run(_request(deployment))
    assert code == "provider_failed" and len(chunks) == 1
    assert deployment.in_flight == 0


def test_a_provider_that_swallows_cancellation_is_still_cut_off_by_the_idle_timeout() -> None:
    provider = Scripted(ignores_cancellation)
    deployment = _deployment(provider, threshold=5)
    code, chunks = asyncio.run(_request(deployment))
    assert code == "idle_timeout" and len(chunks) == 1
    assert deployment.in_flight == 0 and provider.closed == 1


def test_a_client_that_leaves_releases_the_attempt_without_a_verdict() -> None:
    provider = Scripted(ignores_cancellation)
    deployment = _deployment(provider, threshold=1)

    async def main() -> None:
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await gone.wait()
            return {"type": "http.disconnect"}

        def sink(chunk: Chunk) -> bytes:
            gone.set()
            return b""

        async with Dispatcher(observers=Observers([])).session(
            _call(), receive, [deployment], stream=True
        ) as session:
            first = await session.open(lambda d: d.provider.stream(ChatRequest("m", {})))
            with pytest.raises(ClientDisconnected):
                await session.pump(first, sink)

    asyncio.run(main())
    assert deployment.breaker.state == "closed" and deployment.in_flight == 0


def test_errors_that_are_not_the_upstreams_fault_never_open_a_breaker() -> None:
    class Busy(ProviderError):
        counts_against_breaker = False
        status, code = 503, "pool_exhausted"

    async def busy(_: int) -> AsyncGenerator[Chunk, None]:
        raise Busy("every connection is busy")
        yield Chunk([])  # pragma: no cover

    deployment = _deployment(Scripted(busy), threshold=1)

    async def main() -> list[str]:
        return [(await _request(deployment))[0] for _ in range(3)]

    assert asyncio.run(main()) == ["pool_exhausted"] * 3
    assert deployment.breaker.state == "closed"


def test_disconnect_signal_calls_back_once_also_when_added_late() -> None:
    signal = DisconnectSignal()
    seen: list[str] = []
    signal.add(lambda: seen.append("early"))
    signal.fire()
    signal.fire()  # a second loss of the same connection calls nobody again
    signal.add(lambda: seen.append("late"))  # the client had already left: at once
    assert seen == ["early", "late"] and signal.lost
