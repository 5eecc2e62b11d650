"""The in-process limiter's arithmetic and bookkeeping, without a gateway around it (the
end-to-end behaviour is tests/test_tenancy.py's), and the shared limiter's use of it when
Redis cannot be reached."""

from __future__ import annotations

import asyncio
import math
import socket
import time
from typing import Any

from pydantic import SecretStr

from gateway.settings import Settings
from gateway.tenancy.keys import KeyRecord, Window
from gateway.tenancy.limits import SWEEP_EVERY, Ask, LocalLimiter
from gateway.tenancy.redis_limits import RedisLimiter

NOW = time.time()  # settlement reads the clock itself
TOTAL: Window = ("total", 0.0, math.inf)


def key(key_id: str = "key_a", **limits: Any) -> KeyRecord:
    return KeyRecord(id=key_id, name="k", prefix="sk-gw-ab", last4="wxyz", created_at=0, **limits)


def ask(record: KeyRecord, reservation: str, *, window: Window = TOTAL, tokens: int = 1) -> Ask:
    return Ask(record, reservation, window, tokens, 0)


async def nothing_spent(key_id: str, since: float) -> tuple[int, int]:
    return 0, 0


def test_rpm_admits_a_minutes_worth_then_says_when() -> None:
    async def run() -> None:
        limiter = LocalLimiter(nothing_spent)
        record = key(rpm=3)
        lefts = []
        for i in range(3):
            verdict = await limiter.admit(ask(record, f"r{i}"), now=NOW)
            assert verdict.ok
            lefts.append(verdict.requests_remaining)
        assert lefts == [2, 1, 0]
        refused = await limiter.admit(ask(record, "r3"), now=NOW)
        assert not refused.ok and refused.reason == "rpm"
        assert refused.requests_remaining == 0
        assert math.isclose(refused.retry_after, 20.0)  # one unit: 60 s / 3
        assert math.isclose(refused.requests_reset, 60.0)
        assert (await limiter.admit(ask(record, "r4"), now=NOW + 20.001)).ok

    asyncio.run(run())


def test_huge_limits_never_show_a_negative_remainder() -> None:
    async def run() -> None:
        limiter = LocalLimiter(nothing_spent)
        record = key(rpm=1_000_000_000, tpm=1_000_000_000_000)
        for i in range(50):
            verdict = await limiter.admit(ask(record, f"r{i}", tokens=4_000), now=NOW)
            assert verdict.ok
            assert verdict.requests_remaining is not None and verdict.requests_remaining >= 0
            assert verdict.tokens_remaining is not None and verdict.tokens_remaining >= 0
            assert 0 < verdict.tokens_reset < 1

    asyncio.run(run())


def test_a_tpm_refusal_keeps_the_request_figures_and_moves_nothing() -> None:
    async def run() -> None:
        limiter = LocalLimiter(nothing_spent)
        record = key(rpm=60, tpm=100)
        assert (await limiter.admit(ask(record, "a", tokens=80), now=NOW)).ok
        refused = await limiter.admit(ask(record, "b", tokens=30), now=NOW)
        assert not refused.ok and refused.reason == "tpm"
        assert refused.requests_remaining == 58  # as if admitted: the RPM step passed
        assert refused.tokens_remaining == 20
        assert math.isclose(refused.retry_after, 6.0)  # 10 tokens too many at 0.6 s each
        # Nothing moved: the 20 tokens left are still there.
        assert (await limiter.admit(ask(record, "c", tokens=20), now=NOW)).ok

    asyncio.run(run())


def test_settling_frees_the_slot_refunds_tokens_and_counts_once() -> None:
    async def run() -> None:
        limiter = LocalLimiter(nothing_spent)
        record = key(tpm=100, max_parallel=1, budget_tokens=1_000)
        first = ask(record, "a", tokens=90)
        assert (await limiter.admit(first, now=NOW)).ok
        assert (await limiter.admit(ask(record, "b", tokens=1), now=NOW)).reason == "max_parallel"
        assert await limiter.settle(first, 10, 0)
        assert not await limiter.settle(first, 10, 0)  # once
        budget = limiter.budgets[("key_a", "total")]
        assert (budget.spent_tokens, budget.reserved_tokens) == (10, 0)
        verdict = await limiter.admit(ask(record, "c", tokens=85))  # 80 given back
        assert verdict.ok

    asyncio.run(run())


def test_a_new_budget_window_replaces_the_keys_earlier_one() -> None:
    async def run() -> None:
        limiter = LocalLimiter(nothing_spent)
        record = key(budget_tokens=100)
        other = key("key_b", budget_tokens=100)
        day1: Window = ("2026-12-01", NOW - 86_400, NOW)
        day2: Window = ("2026-12-02", NOW, NOW + 86_400)
        late = ask(record, "late", window=day1, tokens=10)
        assert (await limiter.admit(late, now=NOW - 1)).ok
        assert (await limiter.admit(ask(other, "b", window=day1), now=NOW - 1)).ok
        assert (await limiter.admit(ask(record, "next", window=day2), now=NOW + 1)).ok
        assert set(limiter.budgets) == {("key_a", "2026-12-02"), ("key_b", "2026-12-01")}
        # A request of the day before settles into its own day, not the new one.
        assert await limiter.settle(late, 7, 0)
        assert limiter.budgets[("key_a", "2026-12-02")].spent_tokens == 0

    asyncio.run(run())


def test_the_counters_of_keys_at_rest_are_forgotten() -> None:
    """A key whose TATs are past and that has nothing in flight or unsettled loses its
    counters (memory, not behaviour: it is admitted as a new key would be); the others keep
    theirs. Admission sweeps once a SWEEP_EVERY."""

    async def run() -> None:
        limiter = LocalLimiter(nothing_spent)
        resting, busy = key("k_rest", rpm=60), key("k_busy", rpm=1)
        held, parallel = key("k_held", tpm=1000), key("k_par", max_parallel=2)
        for record, reservation in ((resting, "a"), (busy, "b")):
            assert (await limiter.admit(ask(record, reservation), now=NOW)).ok
            assert await limiter.settle(ask(record, reservation), 1, 0)
        assert (await limiter.admit(ask(held, "c", tokens=10), now=NOW)).ok  # not settled
        assert (await limiter.admit(ask(parallel, "d"), now=NOW)).ok  # in flight
        # Half a minute on: the RPM-1 key's TAT is still ahead; the others are held.
        assert limiter.sweep(NOW + 30) == 1
        assert sorted(limiter.keys) == ["k_busy", "k_held", "k_par"]
        again = await limiter.admit(ask(resting, "e"), now=NOW + 30)
        assert again.ok and again.requests_remaining == 59  # as a new key
        assert await limiter.settle(ask(resting, "e"), 1, 0)
        assert await limiter.settle(ask(held, "c", tokens=10), 10, 0)
        assert await limiter.settle(ask(parallel, "d"), 1, 0)
        # The first admission a SWEEP_EVERY after the last sweep sweeps the rest.
        other = key("k_other", rpm=10)
        assert (await limiter.admit(ask(other, "f"), now=NOW + 30 + SWEEP_EVERY)).ok
        assert sorted(limiter.keys) == ["k_other"]

    asyncio.run(run())


def test_a_swept_budget_is_read_again_from_the_ledger() -> None:
    """A key at rest loses its budget with its counters, unless a request not yet settled
    holds it; its next request reads what it spent again (``baseline``): nothing spent is
    forgotten, and a held reservation is never dropped."""

    async def run() -> None:
        reads: list[str] = []
        ledger = {"k_spent": (700, 7)}  # what the ledger says each key spent

        async def baseline(key_id: str, since: float) -> tuple[int, int]:
            reads.append(key_id)
            return ledger.get(key_id, (0, 0))

        limiter = LocalLimiter(baseline)
        spent, holding = key("k_spent", budget_micro_usd=1_000), key("k_hold", budget_tokens=100)
        assert (await limiter.admit(Ask(spent, "a", TOTAL, 1, 200), now=NOW)).ok
        assert await limiter.settle(Ask(spent, "a", TOTAL, 1, 200), 1, 200)
        ledger["k_spent"] = (900, 8)  # its row, written since
        assert (await limiter.admit(Ask(holding, "b", TOTAL, 10, 0), now=NOW)).ok  # held
        assert reads == ["k_spent", "k_hold"]
        assert limiter.sweep(NOW + 1) == 1
        assert list(limiter.budgets) == [("k_hold", "total")]
        # Read again: 900 of 1,000 spent, so a 200 reservation no longer fits, 100 does.
        refused = await limiter.admit(Ask(spent, "c", TOTAL, 1, 200), now=NOW + 2)
        assert not refused.ok and refused.reason == "budget_usd"
        assert (await limiter.admit(Ask(spent, "d", TOTAL, 1, 100), now=NOW + 2)).ok
        assert reads == ["k_spent", "k_hold", "k_spent"]
        # The held budget was kept: its reservation settles into it.
        assert await limiter.settle(Ask(holding, "b", TOTAL, 10, 0), 4, 0)
        assert limiter.budgets[("k_hold", "total")].spent_tokens == 4

    asyncio.run(run())


def test_the_sweep_leaves_the_counters_of_the_request_that_runs_it() -> None:
    """The admission that sweeps already holds its key's budget: that key is kept, so its
    reservation lands in the budget the next requests see."""

    async def run() -> None:
        limiter = LocalLimiter(nothing_spent)
        record = key("k_budget", budget_micro_usd=1_000)
        assert (await limiter.admit(Ask(record, "a", TOTAL, 1, 100), now=NOW)).ok
        assert await limiter.settle(Ask(record, "a", TOTAL, 1, 100), 1, 100)
        # A sweep is due, and the key is at rest: its own request keeps it.
        assert (await limiter.admit(Ask(record, "b", TOTAL, 1, 300), now=NOW + SWEEP_EVERY)).ok
        budget = limiter.budgets[("k_budget", "total")]
        assert (budget.spent_micro, budget.reserved_micro) == (100, 300)
        assert "k_budget" in limiter.keys

    asyncio.run(run())


def test_a_budget_swept_while_a_request_waited_for_it_is_put_back() -> None:
    """Requests waiting for a budget being read get it when the read ends; a sweep that runs
    before they resume (another key's admission) may drop it. The waiter puts it back, so its
    reservation is in the budget the next requests see."""

    async def run() -> None:
        gate = asyncio.Event()

        async def baseline(key_id: str, since: float) -> tuple[int, int]:
            await gate.wait()
            return 1_000, 0  # the whole budget spent: the first reader is refused

        limiter = LocalLimiter(baseline)
        record, other = key("k", budget_micro_usd=1_000), key("j", rpm=10)
        first, second = ("w1", 0.0, math.inf), ("w2", 0.0, math.inf)
        gate.set()
        assert (await limiter.admit(Ask(record, "a", first, 1, 0), now=NOW)).ok
        assert await limiter.settle(Ask(record, "a", first, 1, 0), 1, 0)
        gate.clear()  # the next window is read slowly
        reader = asyncio.create_task(limiter.admit(Ask(record, "r", second, 1, 100)))
        waiter = asyncio.create_task(limiter.admit(Ask(record, "w", second, 1, 0)))
        for _ in range(3):
            await asyncio.sleep(0)
        gate.set()  # the reader resumes, then the sweeper, then the waiter
        sweeper = asyncio.create_task(
            limiter.admit(Ask(other, "s", TOTAL, 1, 0), now=NOW + 3 * SWEEP_EVERY)
        )
        refused, admitted, swept = await asyncio.gather(reader, waiter, sweeper)
        assert not refused.ok and admitted.ok and swept.ok
        assert limiter.budgets[("k", "w2")].reserved_tokens == 1

    asyncio.run(run())


def test_what_the_failure_policy_admitted_settles_against_what_it_counted() -> None:
    """Redis unreachable (nothing listens on its port), rate limits ``open``, budgets
    ``open``: this process counts the request's budget and skips its rate limits, so its
    settlement charges the budget and gives no TPM back (it would move the TAT of tokens
    never charged) and frees no parallel slot it never took."""

    async def run() -> None:
        with socket.socket() as probe:  # a port nothing listens on once it is closed
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        settings = Settings(
            redis_url=SecretStr(f"redis://127.0.0.1:{port}/0"),
            rate_limit_failure_mode="open",
            budget_failure_mode="open",
        )
        local = LocalLimiter(nothing_spent)
        limiter = RedisLimiter(settings, fallback=local)
        record = key(tpm=1_000, max_parallel=1, budget_tokens=10_000)
        try:
            for i in range(3):  # the TPM and the parallel limit would refuse the second
                claim = ask(record, f"r{i}", tokens=600)
                verdict = await limiter.admit(claim)
                assert verdict.ok and verdict.degraded
                assert await limiter.settle(claim, 100, 0)
            state = local.keys[record.id]
            assert state.tpm_tat == 0.0 and not state.in_flight
            budget = local.budgets[(record.id, "total")]
            assert (budget.spent_tokens, budget.reserved_tokens) == (300, 0)
            assert not limiter.local_reservations and not limiter.pending
        finally:
            await limiter.aclose()

    asyncio.run(run())
