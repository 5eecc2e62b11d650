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
from dataclasses import dataclass
from typing import Protocol

from gateway.tenancy.keys import KeyRecord, Window

MINUTE = 60.0
SWEEP_EVERY = 60.0  # seconds between sweeps of the counters of keys at rest


@dataclass(slots=True)
class Ask:
    """One request's claim on its key's counters: the key (its limits), and what this request
    reserves."""

    key: KeyRecord
    reservation: str  # unique per request: settlement is keyed by it
    window: Window  # the budget window: id ("2026-12", "2026-12-02", "total"), start, end
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


@dataclass(slots=True)
class Budget:
    """A key's budget in one window. ``held``: admitted requests that settle into it."""

    spent_micro: int = 0
    spent_tokens: int = 0
    reserved_micro: int = 0
    reserved_tokens: int = 0
    held: int = 0


@dataclass(slots=True)
class KeyState:
    """A key's rate counters: both TATs, and its requests admitted and not settled."""

    rpm_tat: float = 0.0
    tpm_tat: float = 0.0
    in_flight: int = 0


class Counters(Protocol):
    """Where a limiter's counter objects come from: this module, or the compiled one
    (``gateway.tenancy._counters``), whose objects have the same fields and whose admission
    of the common case (``Tenant.admit``) works on the objects this limiter holds."""

    @property
    def KeyState(self) -> type[KeyState]: ...

    @property
    def Budget(self) -> type[Budget]: ...


class _Python:
    KeyState = KeyState
    Budget = Budget


Baseline = Callable[[str, float], Awaitable[tuple[int, int]]]


class LocalLimiter:
    """Counters in this process. ``baseline(key_id, since)`` is what the ledger says a key
    spent in a window, read once per key and window; after that the process counts.

    ``share`` divides every rate and parallel limit (a replica's part when the counters are
    not shared); budgets are never divided. ``counters`` makes the counter objects (the
    compiled ones, for the compiled admission to work on).
    """

    def __init__(self, baseline: Baseline, *, share: int = 1, counters: Counters = _Python) -> None:
        self.baseline = baseline
        self.share = share
        self.counters = counters
        self.keys: dict[str, KeyState] = {}
        self.budgets: dict[tuple[str, str], Budget] = {}
        self._loading: dict[tuple[str, str], asyncio.Future[Budget]] = {}
        self._windows: dict[str, str] = {}  # a key's one window in ``budgets``
        # The requests admitted here and not settled: their counters, for settlement.
        self.reservations: dict[str, tuple[KeyState, Budget | None]] = {}
        self.next_sweep = 0.0

    def _limit(self, value: int | None) -> int | None:
        return None if value is None else max(1, value // self.share)

    async def _budget(self, slot: tuple[str, str], since: float) -> Budget:
        """The budget of ``slot`` (key, window starting at ``since``), not in the table: read
        from the ledger once, however many requests wait for it."""
        loading = self._loading.get(slot)
        if loading is None:
            loading = asyncio.get_running_loop().create_future()
            self._loading[slot] = loading
            try:
                micro, tokens = await self.baseline(slot[0], since)
                budget = self._hold(slot, self.counters.Budget(micro, tokens))
                loading.set_result(budget)
            except BaseException as exc:
                loading.set_exception(exc)
                loading.exception()  # retrieved: the waiters get it too
                raise
            finally:
                del self._loading[slot]
            return budget
        # A waiter resumes after the reader: a sweep in between (another key's admission) may
        # have dropped the budget from the table, so it is put back.
        return self._hold(slot, await asyncio.shield(loading))

    def _hold(self, slot: tuple[str, str], budget: Budget) -> Budget:
        """The budget of ``slot`` (key, window) in the table, ``budget`` if it has none. The
        key's earlier window leaves the table (the requests it holds settle into their own
        budget objects): without this, a key with a daily budget would leave one entry behind
        a day. Every budget enters the table here."""
        key_id, window = slot
        previous = self._windows.get(key_id)
        if previous is not None and previous != window:
            self.budgets.pop((key_id, previous), None)
        self._windows[key_id] = window
        return self.budgets.setdefault(slot, budget)

    async def admit(self, ask: Ask, now: float | None = None) -> Verdict:
        """Every check passes and every counter moves, or none does (GCRA: the module's
        docstring)."""
        key = ask.key
        budget = None
        if key.budgeted:
            slot = (key.id, ask.window[0])
            budget = self.budgets.get(slot)
            if budget is None:  # the only await: below is one atomic step
                budget = await self._budget(slot, ask.window[1])
        if now is None:
            now = time.time()
        if now >= self.next_sweep:
            self.sweep(now, keep=key.id)  # not the counters this request holds already
        state = self.keys.get(key.id)
        if state is None:
            state = self.keys[key.id] = self.counters.KeyState()
        rpm, tpm, parallel = key.rpm, key.tpm, key.max_parallel
        if self.share != 1:
            rpm, tpm, parallel = self._limit(rpm), self._limit(tpm), self._limit(parallel)
        requests_left = tokens_left = None
        requests_reset = tokens_reset = 0.0
        if rpm is not None:
            interval = MINUTE / rpm
            tat = state.rpm_tat
            base = tat if tat > now else now
            if base + interval - now - MINUTE > 1e-9:
                return _denied("rpm", now, tat, base, interval, interval)
            requests_reset = base + interval - now
            # "+ 1e-6" forgives the float error of a whole number of units (2.9999999 is 3),
            # as the Redis script does, without round()'s decimal conversion; the clamp: with
            # a huge limit, the float error of the minute itself is many units.
            requests_left = int((MINUTE - requests_reset) / interval + 1e-6)
            if requests_left < 0:
                requests_left = 0
        if tpm is not None:
            interval = MINUTE / tpm
            tat = state.tpm_tat
            base = tat if tat > now else now
            if base + ask.tokens * interval - now - MINUTE > 1e-9:
                verdict = _denied("tpm", now, tat, base, ask.tokens * interval, interval)
                verdict.requests_remaining = requests_left
                verdict.requests_reset = requests_reset
                return verdict
            tokens_reset = base + ask.tokens * interval - now
            tokens_left = int((MINUTE - tokens_reset) / interval + 1e-6)
            if tokens_left < 0:
                tokens_left = 0
        reason = None
        wait = 0.0
        if parallel is not None and state.in_flight >= parallel:
            reason, wait = "max_parallel", 1.0
        elif budget is not None:
            if key.budget_micro_usd is not None and (
                budget.spent_micro + budget.reserved_micro + ask.micro_usd > key.budget_micro_usd
            ):
                reason, wait = "budget_usd", ask.window[2] - now
            elif key.budget_tokens is not None and (
                budget.spent_tokens + budget.reserved_tokens + ask.tokens > key.budget_tokens
            ):
                reason, wait = "budget_tokens", ask.window[2] - now
            else:
                budget.reserved_micro += ask.micro_usd
                budget.reserved_tokens += ask.tokens
                budget.held += 1
        if reason is not None:
            return Verdict(
                False,
                reason,
                wait if wait > 0.001 else 0.001,
                requests_left,
                requests_reset,
                tokens_left,
                tokens_reset,
            )
        if rpm is not None:
            state.rpm_tat = now + requests_reset
        if tpm is not None:
            state.tpm_tat = now + tokens_reset
        state.in_flight += 1
        self.reservations[ask.reservation] = (state, budget)
        return Verdict(True, None, 0.0, requests_left, requests_reset, tokens_left, tokens_reset)

    async def settle(self, ask: Ask, tokens: int, micro_usd: int) -> bool:
        """Charge what a request really used and free its reservation; only the first call
        for a reservation counts (True)."""
        held = self.reservations.pop(ask.reservation, None)
        if held is None:
            return False
        state, budget = held
        key = ask.key
        state.in_flight -= 1
        tpm = key.tpm if self.share == 1 else self._limit(key.tpm)
        if tpm is not None and tokens < ask.tokens:
            tat = state.tpm_tat - (ask.tokens - tokens) * MINUTE / tpm
            now = time.time()
            state.tpm_tat = tat if tat > now else now
        if budget is not None:
            budget.reserved_micro -= ask.micro_usd
            budget.reserved_tokens -= ask.tokens
            budget.spent_micro += micro_usd
            budget.spent_tokens += tokens
            budget.held -= 1
        return True

    def sweep(self, now: float, *, keep: str | None = None) -> int:
        """Forget the counters of keys at rest (both TATs past, nothing in flight or held by a
        request not yet settled): GCRA admits from such a state exactly as from a new one, so
        only memory changes. Their budgets go too (none of it reserved): the next request
        reads what the key spent from the ledger again, one query. Without it, every key ever
        used (revoked ones too) keeps both. Runs from admission (``keep``: the key admitted),
        once a :data:`SWEEP_EVERY`; returns how many keys went."""
        self.next_sweep = now + SWEEP_EVERY
        idle = {
            key_id
            for key_id, state in self.keys.items()
            if state.rpm_tat <= now
            and state.tpm_tat <= now
            and not state.in_flight
            and key_id != keep
        }
        for key_id in idle:
            del self.keys[key_id]
        for slot in [s for s, b in self.budgets.items() if s[0] in idle and not b.held]:
            del self.budgets[slot]
            del self._windows[slot[0]]
        return len(idle)

    async def aclose(self) -> None:
        return None


def _denied(
    reason: str, now: float, tat: float, base: float, cost: float, interval: float
) -> Verdict:
    """The refusal of a GCRA limit (``cost``: its units times the interval): nothing moved,
    so the reset is the TAT as it was, and what remains is counted from ``base``."""
    left = math.floor((MINUTE - (base - now)) / interval + 1e-6)
    verdict = Verdict(False, reason, max(base + cost - now - MINUTE, 0.001))
    if reason == "rpm":
        verdict.requests_remaining = left if left > 0 else 0
        verdict.requests_reset = tat - now if tat > now else 0.0
    else:
        verdict.tokens_remaining = left if left > 0 else 0
        verdict.tokens_reset = tat - now if tat > now else 0.0
    return verdict
