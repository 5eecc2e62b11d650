"""Admission against a key's limits, in process: GCRA for RPM and TPM, a count of requests in
flight, and budgets as reserve-then-settle; the same rules as the Redis limiter, whose Lua
runs this arithmetic for every replica at once.

GCRA keeps one number per limit, the theoretical arrival time (TAT): each unit of cost moves
it by ``60 s / limit``, and a request is admitted while the TAT stays within 60 s of now, so
a whole minute's allowance may be spent at once, then a steady rate, with no window boundary
to burst across. TPM admission charges the reserved tokens; settlement gives back the part not
used by moving the TAT back.

A budget admits a request only when ``spent + reserved + this reservation`` fits, all checks
passing or none counting. Settlement charges the real cost once and frees the reservation, so
concurrent requests can never overshoot a budget by more than the reservations allow.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

MINUTE = 60.0


@dataclass(slots=True)
class Ask:
    """One request's claim on its key's counters."""

    key_id: str
    reservation: str  # unique per request: settlement is keyed by it
    rpm: int | None
    tpm: int | None
    max_parallel: int | None
    budget_micro_usd: int | None
    budget_tokens: int | None
    window: str  # budget window id ("2026-12", "2026-12-02", "total")
    window_start: float
    window_end: float
    tokens: int  # reserved: input estimate + output bound
    micro_usd: int  # reserved cost


@dataclass(slots=True)
class Verdict:
    """Admission's answer; the numbers feed the ``x-ratelimit-*`` headers."""

    ok: bool
    reason: str | None = None  # rpm, tpm, max_parallel, budget_usd, budget_tokens
    retry_after: float = 0.0
    requests_remaining: int | None = None
    requests_reset: float = 0.0
    tokens_remaining: int | None = None
    tokens_reset: float = 0.0
    degraded: bool = False  # decided without the shared counters (Redis unreachable)


def gcra(tat: float, now: float, limit: int, cost: int) -> tuple[bool, float, float, int]:
    """One GCRA step: (admitted, new TAT, retry after, remaining) for ``cost`` units."""
    interval = MINUTE / limit
    base = tat if tat > now else now
    new_tat = base + cost * interval
    excess = new_tat - now - MINUTE
    # "+ 1e-6" forgives the float error of a whole number of units (2.9999999 is 3), as the
    # Redis script does, without round()'s decimal conversion.
    if excess > 1e-9:
        remaining = math.floor((MINUTE - (base - now)) / interval + 1e-6)
        return False, tat, excess, remaining if remaining > 0 else 0
    remaining = math.floor((MINUTE - (new_tat - now)) / interval + 1e-6)
    return True, new_tat, 0.0, remaining if remaining > 0 else 0


@dataclass(slots=True)
class _Budget:
    spent_micro: int = 0
    spent_tokens: int = 0
    reserved_micro: int = 0
    reserved_tokens: int = 0


@dataclass(slots=True)
class _KeyState:
    rpm_tat: float = 0.0
    tpm_tat: float = 0.0
    in_flight: set[str] = field(default_factory=set)


Baseline = Callable[[str, float], Awaitable[tuple[int, int]]]


class LocalLimiter:
    """Counters in this process. ``baseline(key_id, since)`` is what the ledger says a key
    spent in a window, read once per key and window; after that the process counts.

    ``share`` divides every rate and parallel limit (a replica's part when the counters are
    not shared); budgets are never divided.
    """

    def __init__(self, baseline: Baseline, *, share: int = 1) -> None:
        self.baseline = baseline
        self.share = share
        self.keys: dict[str, _KeyState] = {}
        self.budgets: dict[tuple[str, str], _Budget] = {}
        self._loading: dict[tuple[str, str], asyncio.Future[_Budget]] = {}
        self.reservations: dict[str, Ask] = {}

    def _limit(self, value: int | None) -> int | None:
        return None if value is None else max(1, value // self.share)

    async def _budget(self, ask: Ask) -> _Budget:
        slot = (ask.key_id, ask.window)
        budget = self.budgets.get(slot)
        if budget is not None:
            return budget
        loading = self._loading.get(slot)
        if loading is None:
            loading = asyncio.get_running_loop().create_future()
            self._loading[slot] = loading
            try:
                micro, tokens = await self.baseline(ask.key_id, ask.window_start)
                budget = self.budgets.setdefault(slot, _Budget(micro, tokens))
                loading.set_result(budget)
            except BaseException as exc:
                loading.set_exception(exc)
                loading.exception()  # retrieved: the waiters get it too
                raise
            finally:
                del self._loading[slot]
            return budget
        return await asyncio.shield(loading)

    async def admit(self, ask: Ask, now: float | None = None) -> Verdict:
        budget = None
        if ask.budget_micro_usd is not None or ask.budget_tokens is not None:
            budget = self.budgets.get((ask.key_id, ask.window))
            if budget is None:
                budget = await self._budget(ask)  # the only await: below is one atomic step
        now = time.time() if now is None else now
        state = self.keys.get(ask.key_id)
        if state is None:
            state = self.keys[ask.key_id] = _KeyState()
        verdict = Verdict(ok=True)
        rpm, tpm, parallel = ask.rpm, ask.tpm, ask.max_parallel
        if self.share != 1:
            rpm, tpm, parallel = self._limit(rpm), self._limit(tpm), self._limit(parallel)
        rpm_tat = tpm_tat = 0.0
        if rpm is not None:
            ok, rpm_tat, wait, left = gcra(state.rpm_tat, now, rpm, 1)
            verdict.requests_remaining = left
            verdict.requests_reset = rpm_tat - now if rpm_tat > now else 0.0
            if not ok:
                return _deny(verdict, "rpm", wait)
        if tpm is not None:
            ok, tpm_tat, wait, left = gcra(state.tpm_tat, now, tpm, ask.tokens)
            verdict.tokens_remaining = left
            verdict.tokens_reset = tpm_tat - now if tpm_tat > now else 0.0
            if not ok:
                return _deny(verdict, "tpm", wait)
        if parallel is not None and len(state.in_flight) >= parallel:
            return _deny(verdict, "max_parallel", 1.0)
        if budget is not None:
            if ask.budget_micro_usd is not None and (
                budget.spent_micro + budget.reserved_micro + ask.micro_usd > ask.budget_micro_usd
            ):
                return _deny(verdict, "budget_usd", ask.window_end - now)
            if ask.budget_tokens is not None and (
                budget.spent_tokens + budget.reserved_tokens + ask.tokens > ask.budget_tokens
            ):
                return _deny(verdict, "budget_tokens", ask.window_end - now)
            budget.reserved_micro += ask.micro_usd
            budget.reserved_tokens += ask.tokens
        if rpm is not None:
            state.rpm_tat = rpm_tat
        if tpm is not None:
            state.tpm_tat = tpm_tat
        if parallel is not None:
            state.in_flight.add(ask.reservation)
        self.reservations[ask.reservation] = ask
        return verdict

    async def settle(self, ask: Ask, tokens: int, micro_usd: int) -> bool:
        """Charge what a request really used and free its reservation; only the first call
        for a reservation counts (True)."""
        reservation = ask.reservation
        if self.reservations.pop(reservation, None) is None:
            return False
        state = self.keys.get(ask.key_id)
        if state is not None:
            state.in_flight.discard(reservation)
            tpm = ask.tpm if self.share == 1 else self._limit(ask.tpm)
            if tpm is not None and tokens < ask.tokens:
                refund = (ask.tokens - tokens) * MINUTE / tpm
                state.tpm_tat = max(time.time(), state.tpm_tat - refund)
        budget = self.budgets.get((ask.key_id, ask.window))
        if budget is not None and (
            ask.budget_micro_usd is not None or ask.budget_tokens is not None
        ):
            budget.reserved_micro -= ask.micro_usd
            budget.reserved_tokens -= ask.tokens
            budget.spent_micro += micro_usd
            budget.spent_tokens += tokens
        return True

    async def aclose(self) -> None:
        return None


def _deny(verdict: Verdict, reason: str, wait: float) -> Verdict:
    verdict.ok = False
    verdict.reason = reason
    verdict.retry_after = max(wait, 0.001)
    return verdict
