"""The compiled admission (gateway/tenancy/_counters.c) decides exactly as the Python does.

Two tenancies, one compiled and one Python (``GATEWAY_COMPILED_LIMITS=false``), each with its
own SQLite file, take the same random sequences of requests, settlements and clock steps for
keys with random limits. After every step both must have answered alike (the ticket or the
refusal with its code and headers, the header lines, the injected output cap, the usage and
cost charged) and hold the same counters, floats bit for bit. The compiled run must have
decided a good part of the admissions itself, and left the rest to the Python, for the
comparison to mean anything. The end-to-end behaviour, both ways, is tests/test_tenancy.py's.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import APIError
from gateway.observe import Call
from gateway.resilience import CircuitBreaker
from gateway.routing import Deployment, Policy
from gateway.tenancy import admission
from gateway.tenancy.admission import Tenancy, Tenant
from gateway.tenancy.keys import KeyRecord
from gateway.tenancy.limits import LocalLimiter
from providers.base import Usage
from tests.conftest import settings
from tests.support.services import ADMIN_KEY

# Fractions of a micro-USD a token: costs are rounded up, once a request.
PRICES = {"echo/echo": {"input": 1.15, "output": 2.6, "cached_input": 0.575}}
SEEDS = 80
STEPS = 150


@pytest.fixture
def built() -> Any:
    """The compiled module; CI must have built it (``pip install -e .`` runs setup.py)."""
    if admission.compiled is None:
        if os.environ.get("CI"):
            pytest.fail("gateway/tenancy/_counters.c was not built: is there a C compiler?")
        pytest.skip("the compiled counters are not built here (no C compiler at install)")
    return admission.compiled


class Clock:
    """``time.time`` for both tenancies: the same now, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Parsed:
    """What admission reads of a request (``gateway.tenancy.admission.Admissible``)."""

    def __init__(self, model: str, tokens_in: int, output_cap: int | None, choices: int) -> None:
        self.model = model
        self.output_cap = output_cap
        self.choices = choices
        self.capped: list[int] = []  # what admission injected as the output cap
        self.estimate_input: Callable[[], int] | None = lambda: tokens_in
        self.cap_output: Callable[[int], None] | None = self.capped.append


def random_key(rng: random.Random, n: int) -> KeyRecord:
    while True:
        limits: dict[str, Any] = {
            "rpm": rng.choice([None, 2, 30, 600, 600, 10**6, 10**9]),
            "tpm": rng.choice([None, 300, 2_000, 10**5, 10**6, 10**6, 10**12]),  # 13 digits left
            "max_parallel": rng.choice([None, None, 1, 3, 8]),
            "budget_micro_usd": rng.choice([None, None, 5_000, 10**9]),
            "budget_tokens": rng.choice([None, None, 3_000, 10**9]),
            "budget_period": rng.choice(["total", "day", "month"]),
        }
        record = KeyRecord(
            id=f"key_{n}", name="k", prefix="sk-gw-ab", last4="wxyz", created_at=0, **limits
        )
        if record.limited:
            return record


def counters(limiter: Any) -> tuple[Any, ...]:
    assert isinstance(limiter, LocalLimiter)
    return (
        {k: (s.rpm_tat, s.tpm_tat, s.in_flight) for k, s in limiter.keys.items()},
        {
            slot: (b.spent_micro, b.spent_tokens, b.reserved_micro, b.reserved_tokens, b.held)
            for slot, b in limiter.budgets.items()
        },
        limiter.next_sweep,
    )


async def answer(tenant: Tenant, call: Call, parsed: Parsed, chain: Any) -> tuple[Any, Any]:
    try:
        ticket = await tenant.admit(call, parsed, chain)
    except APIError as exc:
        return None, (type(exc).__name__, exc.code, exc.headers, parsed.capped)
    return ticket, ("admitted", ticket is None, call.head_lines, parsed.capped)


async def admit_both(
    tenants: list[Tenant], chain: Any, tokens_in: int, cap: int | None, choices: int, where: str
) -> tuple[list[Any], list[Call], str]:
    """One request to the Python tenant and the compiled one: both answers alike, and who
    decided (``compiled``: the compiled code admitted it; ``python``; ``refused``)."""
    calls = [new_call(), new_call()]
    answers = [
        await answer(t, c, Parsed("echo/echo", tokens_in, cap, choices), chain)
        for t, c in zip(tenants, calls, strict=True)
    ]
    assert answers[0][1] == answers[1][1], where
    tickets = [a[0] for a in answers]
    if answers[1][1][0] != "admitted":
        return tickets, calls, "refused"
    compiled = tenants[1].tenancy.compiled
    assert compiled is not None
    return tickets, calls, "compiled" if type(tickets[1]) is compiled.Ticket else "python"


async def settle(ticket: Any, call: Call) -> None:
    pending = ticket.settle(call)
    if pending is not None:
        await pending


def new_call() -> Call:
    return Call("req", "POST", "/v1/chat/completions", "-", 0.0)


def pair(tmp_path: Path) -> list[Tenancy]:
    return [
        Tenancy(
            settings(
                admin_key=ADMIN_KEY,
                database_url=f"sqlite:///{tmp_path / name}.db",
                prices=PRICES,
                reserve_max_tokens=500,
                compiled_limits=name == "compiled",
            )
        )
        for name in ("python", "compiled")
    ]


# The price bound reads the deployments' names only.
CHAIN = (Deployment("echo/echo", None, "echo", Policy(), CircuitBreaker("echo/echo")),)  # type: ignore[arg-type]


async def compare(tmp_path: Path, compiled: Any, clock: Clock) -> dict[str, int]:
    tenancies = pair(tmp_path)
    assert tenancies[0].compiled_limiter is None and tenancies[1].compiled_limiter is not None
    for tenancy in tenancies:
        await tenancy.ready()
    chain = CHAIN
    tally = {"compiled": 0, "python": 0, "refused": 0, "settled": 0}
    try:
        for seed in range(SEEDS):
            rng = random.Random(seed)
            key = random_key(rng, seed)
            tenants = [Tenant(tenancy, key) for tenancy in tenancies]
            held: list[tuple[list[Any], list[Call]]] = []
            for step in range(STEPS):
                roll = rng.random()
                where = f"seed {seed}, step {step}, {key}"
                if roll < 0.12:
                    # Hours and days too: a key's day and month windows end mid-run.
                    clock.now += rng.choice([0.001, 0.05, 0.4, 1.5, 20.0, 61.0, 14_400.0, 86_400.0])
                elif roll < 0.62 or not held:
                    tokens_in = rng.choice([0, 1, 20, 100, 250, 1_000])
                    cap = rng.choice([None, None, None, 0, 5, 50, 400, 10_000])
                    choices = rng.choice([1, 1, 1, 2, 3])
                    tickets, calls, kind = await admit_both(
                        tenants, chain, tokens_in, cap, choices, where
                    )
                    tally[kind] += 1
                    if kind != "refused":
                        held.append((tickets, calls))
                else:
                    tickets, calls = held.pop(rng.randrange(len(held)))
                    usage = rng.choice(
                        [
                            None,
                            Usage(
                                input_tokens=rng.randrange(300), output_tokens=rng.randrange(600)
                            ),
                            Usage(input_tokens=80, output_tokens=10, cached_tokens=50),
                        ]
                    )
                    started = rng.random() < 0.5
                    for call in calls:
                        call.deployment = "echo/echo"
                        call.usage = usage
                        call.first_token_at = 1.0 if started else None
                    for ticket, call in zip(tickets, calls, strict=True):
                        await settle(ticket, call)
                        await settle(ticket, call)  # once: the second changes nothing
                    assert (calls[0].usage, calls[0].cost) == (calls[1].usage, calls[1].cost), where
                    tally["settled"] += 1
                assert counters(tenancies[0].limiter) == counters(tenancies[1].limiter), where
            for tickets, calls in held:  # the rest, so the next key starts from nothing held
                for ticket, call in zip(tickets, calls, strict=True):
                    await settle(ticket, call)
    finally:
        for tenancy in tenancies:
            await tenancy.aclose()
    return tally


def test_the_compiled_admission_decides_as_the_python(
    built: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(time, "time", clock)  # both limiters and the compiled plan read it
    tally = asyncio.run(compare(tmp_path, built, clock))
    admitted = tally["compiled"] + tally["python"]
    # Both ways were exercised: the compiled path admitted most (the common case), the
    # Python the rest and every refusal.
    assert tally["compiled"] > admitted / 3, tally
    assert tally["python"] > 100 and tally["refused"] > 100 and tally["settled"] > 1_000, tally


@pytest.mark.parametrize("budget", ["budget_tokens", "budget_micro_usd"])
def test_a_budget_reached_exactly_is_decided_alike(
    built: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: str
) -> None:
    """At a budget's edge: a request that fits to the unit (compiled), one over by one unit
    (refused by both)."""
    monkeypatch.setattr(time, "time", Clock())

    async def run() -> list[str]:
        tenancies = pair(tmp_path)
        for tenancy in tenancies:
            await tenancy.ready()
        rate = tenancies[0].prices.rates["echo/echo"]
        first, second = rate.cost(10, 50), rate.cost(7, 50)  # micro-USD of each request
        seen = []
        for n, slack in enumerate((1, 0, -1)):  # the budget's room after both requests
            limit: dict[str, Any] = {
                "budget_tokens": 117 + slack,
                "budget_micro_usd": first + second + slack,
            }
            key = KeyRecord(
                id=f"key_{n}",
                name="k",
                prefix="sk-gw-ab",
                last4="wxyz",
                created_at=0,
                rpm=10**6,
                **{budget: limit[budget]},
            )
            tenants = [Tenant(tenancy, key) for tenancy in tenancies]
            *_, kind = await admit_both(tenants, CHAIN, 10, 50, 1, f"{budget} {slack}")
            assert kind == "python"  # the key's first request here: the budget is read
            *_, kind = await admit_both(tenants, CHAIN, 7, 50, 1, f"{budget} {slack}")
            seen.append(kind)
        for tenancy in tenancies:
            await tenancy.aclose()
        return seen

    assert asyncio.run(run()) == ["compiled", "compiled", "refused"]


def test_without_the_compiled_module_or_with_it_off_the_python_decides(tmp_path: Path) -> None:
    off = Tenancy(
        settings(
            admin_key=ADMIN_KEY, database_url=f"sqlite:///{tmp_path}/a.db", compiled_limits=False
        )
    )
    assert off.compiled is None and off.compiled_limiter is None
    assert type(off.limiter) is LocalLimiter
    assert type(off.limiter.counters.KeyState()).__module__ == "gateway.tenancy.limits"
    key = KeyRecord(id="key_1", name="k", prefix="sk-gw-ab", last4="wxyz", created_at=0, rpm=5)
    assert Tenant(off, key)._plan is None
    asyncio.run(off.aclose())


def test_a_shared_or_divided_limiter_is_never_the_compiled_ones(built: Any, tmp_path: Path) -> None:
    """The Redis limiter's fallback divides limits between replicas: the Python decides."""
    on = Tenancy(settings(admin_key=ADMIN_KEY, database_url=f"sqlite:///{tmp_path}/a.db"))
    assert on.compiled_limiter is on.limiter
    on.limiter = LocalLimiter(on.baseline, share=2, counters=built)
    assert on.compiled_limiter is None
    on.limiter = LocalLimiter(on.baseline)  # the Python's counter objects
    assert on.compiled_limiter is None
    asyncio.run(on.aclose())


def test_the_compiled_objects_refuse_bad_arguments(built: Any) -> None:
    with pytest.raises(ValueError):
        built.Plan(-1, None, None, None, None, 1, True, None, None, print, print, time.time)
    with pytest.raises(ValueError):
        built.Plan(0, None, None, None, None, 1, True, None, None, print, print, time.time)
    with pytest.raises(TypeError):
        built.admit(1, 2, 3)
    plan = built.Plan(
        600, None, None, None, None, 1, True, b"x: 600\r\n", None, print, cost, time.time
    )
    state = built.KeyState()
    call = new_call()
    too_big = 10**30  # out of the compiled range: the Python decides
    assert built.admit(plan, state, None, call, too_big, None, 1, None, 1.0, 2.0, None) is None
    assert built.admit(plan, state, None, call, 1, None, 1, None, 3.0, 2.0, None) is None  # sweep
    assert (state.rpm_tat, state.in_flight, call.head_lines) == (0.0, 0, None)
    ticket = built.admit(plan, state, None, call, 1, None, 1, None, 0.0, 2.0, None)
    assert call.head_lines == (
        b"x: 600\r\nx-ratelimit-remaining-requests: 599\r\nx-ratelimit-reset-requests: 100ms\r\n"
    )
    assert (state.rpm_tat, state.in_flight, ticket.settled) == (0.1, 1, False)
    assert ticket.settle(call) is None and ticket.settle(call) is None
    assert (state.in_flight, ticket.settled, call.cost) == (0, True, (0, False))


def cost(call: Call) -> tuple[int, bool]:
    return 0, False


def test_every_reset_is_written_as_the_python_writes_it(built: Any) -> None:
    """``x-ratelimit-reset-requests`` for resets from none to a minute, the roundings' edges
    among them: the compiled lines against ``duration()`` of the same float."""
    rng = random.Random(7)
    edges = [0.0, 1e-9, 0.0004, 0.9994, 0.9995, 0.99951, 1.0, 1.0049, 1.005, 1.0051, 9.994]
    edges += [9.995, 9.9951, 10.0, 10.05, 59.94, 59.95, 59.96, 59.999, 60.0, 60.0000000005]
    resets = edges + [rng.uniform(0, 60) for _ in range(2_000)]
    rpm = 1_000  # an interval of 60 ms
    interval = 60.0 / rpm
    line = b"x-ratelimit-limit-requests: 1000\r\n"
    plan = built.Plan(rpm, None, None, None, None, 1, True, line, None, print, cost, time.time)
    now = 1_800_000_000.25
    for reset in resets:
        state = built.KeyState(now - interval + reset)
        if state.rpm_tat <= now:  # no earlier TAT: the reset is one interval
            state.rpm_tat = 0.0
        base = state.rpm_tat if state.rpm_tat > now else now
        shown = base + interval - now  # what both compute
        call = new_call()
        assert built.admit(plan, state, None, call, 0, None, 1, None, now, now + 1, None)
        left = max(int((60.0 - shown) / interval + 1e-6), 0)
        python = (
            f"x-ratelimit-remaining-requests: {left}\r\n"
            f"x-ratelimit-reset-requests: {admission.duration(shown)}\r\n"
        )
        assert call.head_lines == line + python.encode(), reset
