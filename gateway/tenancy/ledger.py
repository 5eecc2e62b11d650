"""The usage ledger: one row per API request, written off the hot path in batches.

:class:`Ledger` is an observer: ``finished(call)`` turns the request into a row (the columns
of :class:`gateway.tenancy.store.UsageRow`, as a plain tuple) and appends it to a bounded
buffer; one writer task per process writes each batch of 1,000 rows as it fills, and what
is left every 500 ms (``GATEWAY_LEDGER_FLUSH_SECONDS``): few, large commits (each rewrites
the index pages it touches). A slow or unreachable database only makes the buffer
grow: rows stay buffered (and are retried) up to ``capacity``, then the oldest are dropped,
counted and logged. No request ever waits for the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final

from gateway.observe import Call, QuietObserver
from gateway.tenancy.prices import Prices
from gateway.tenancy.store import USAGE_COLUMNS, Store, UsageValues
from providers.base import Usage

try:  # built by setup.py where a C compiler is found (optional)
    from gateway.tenancy import _rows
except ImportError:  # pragma: no cover - usage_row makes every row
    _rows = None  # type: ignore[assignment]

logger = logging.getLogger("gateway.ledger")
BATCH = 1000
INTERVAL = 0.5
WRITE_TIMEOUT = 10.0


def request_cost(prices: Prices, call: Call) -> tuple[int, bool]:
    """Micro-USD for what ``call`` used (0 when nothing was used) and whether it was priced:
    what its settlement charged, when it had one."""
    if call.cost is not None:
        return call.cost
    rate = prices.rate_of(call.deployment, call.model)
    usage = call.usage
    if rate is None or usage is None:
        return 0, rate is not None
    return rate.cost(usage.input_tokens, usage.output_tokens, usage.cached_tokens), True


# Row ids: this process's start time and random part, then a counter.
_PROCESS = f"{time.time_ns():x}-{os.urandom(4).hex()}-"
_counter = itertools.count()


@functools.lru_cache(maxsize=4)
def _day(days: int) -> str:
    """The UTC date of a day number (days since the epoch): one strftime a day."""
    return datetime.fromtimestamp(days * 86_400, UTC).strftime("%Y-%m-%d")


_NO_USAGE = Usage(source="provider")


# Where pending() reads a buffered row (literals: typed by position).
_TS: Final = 2
_KEY: Final = 4
_PROMPT: Final = 13
_COMPLETION: Final = 14
_COST: Final = 18
assert [USAGE_COLUMNS[i] for i in (_TS, _KEY, _PROMPT, _COMPLETION, _COST)] == [
    "ts",
    "key_id",
    "prompt_tokens",
    "completion_tokens",
    "cost_micro_usd",
]


def usage_row(call: Call, prices: Prices, *, now: float) -> UsageValues:
    usage = call.usage or _NO_USAGE
    cost, priced = call.cost or request_cost(prices, call)
    deployment = call.deployment
    provider, _, upstream = deployment.partition("/") if deployment else (None, "", None)
    first_token_at = call.first_token_at
    started = call.started
    # Milliseconds to the microsecond (never negative: int() is floor; round(x, 3) would
    # convert through decimal).
    return (  # a plain tuple (see UsageRow)
        f"{_PROCESS}{next(_counter):012x}",  # in order: appended to the index, not scattered
        call.request_id,
        now,
        _day(int(now // 86_400)),
        call.key_id,
        call.surface or "-",
        call.model,
        provider,
        upstream or None,
        int(call.stream),
        call.attempts,
        call.status,
        call.error_code,
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_tokens,
        usage.reasoning_tokens,
        usage.source if call.usage is not None else "none",
        cost,
        int(priced),
        None if first_token_at is None else int((first_token_at - started) * 1e6 + 0.5) / 1000,
        int((time.perf_counter() - started) * 1e6 + 0.5) / 1000,
        int(call.client_left),
    )


class Ledger(QuietObserver):
    """An :class:`gateway.observe.Observer` that records API requests (``call.surface`` set)."""

    def __init__(
        self,
        store: Store,
        prices: Prices,
        *,
        capacity: int = 10_000,
        interval: float = INTERVAL,
        compiled: bool = True,
    ) -> None:
        self.store = store
        self.prices = prices
        # The compiled usage_row when it was built (``compiled``: GATEWAY_COMPILED_LIMITS),
        # with ids of its own: a prefix unique to this ledger.
        self.row = (
            _rows.RowMaker(
                f"{time.time_ns():x}-{os.urandom(4).hex()}-",
                functools.partial(request_cost, prices),
                _day,
                _NO_USAGE,
            )
            if compiled and _rows is not None
            else None
        )
        self.capacity = capacity
        self.interval = interval  # seconds between writes of a batch that is not full
        self.buffer: deque[UsageValues] = deque()
        self._writing: list[UsageValues] = []  # the batch being written, out of the buffer
        self.dropped = 0
        self.written = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._flushing: asyncio.Lock | None = None
        self._failing = False
        # Awaited before each write: the store's migrations (a database down at the start).
        self.prepare: Callable[[], Awaitable[None]] | None = None

    # Observer
    def finished(self, call: Call) -> None:
        if call.surface is None:
            return
        if self.row is not None:
            self.add(self.row(call, time.time(), time.perf_counter()))
        else:
            self.add(usage_row(call, self.prices, now=time.time()))

    def add(self, row: UsageValues) -> None:
        if len(self.buffer) + len(self._writing) >= self.capacity:
            if not self.buffer:  # every buffered row is being written: this one goes
                self._drop(1)
                return
            self.buffer.popleft()
            self._drop(1)
        self.buffer.append(row)
        if self._task is None:
            self._start()
        if len(self.buffer) >= BATCH and self._wake is not None:
            self._wake.set()

    def _drop(self, count: int) -> None:
        self.dropped += count
        if self.dropped == count or self.dropped // 1000 != (self.dropped - count) // 1000:
            logger.error(
                "usage ledger: buffer full (%d rows), %d rows dropped so far",
                self.capacity,
                self.dropped,
            )

    def pending(self, key_id: str, since: float) -> tuple[int, int]:
        """Micro-USD and tokens of ``key_id``'s buffered rows from ``since`` on."""
        micro = tokens = 0
        for row in (*self.buffer, *self._writing):
            if row[_KEY] == key_id and row[_TS] >= since:
                micro += row[_COST]
                tokens += row[_PROMPT] + row[_COMPLETION]
        return micro, tokens

    def _start(self) -> None:
        if self._task is None:
            with contextlib.suppress(RuntimeError):  # no running loop: started on the next row
                loop = asyncio.get_running_loop()
                self._wake = asyncio.Event()
                self._flushing = asyncio.Lock()
                self._task = loop.create_task(self._run(), name="usage-ledger")

    async def _run(self) -> None:
        """Full batches as they fill; everything else once an interval. The rows that come
        while a full batch is written wait for the next one or for the interval: written at
        once, they would make a string of small transactions, each rewriting the index pages
        it touches, the longer the slower the writes (under callgrind, about a hundred per
        1,000 rows). After a failed write the next try waits for the interval, however full
        the buffer is."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        due = loop.time() + self.interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, due - loop.time()))
            self._wake.clear()
            if loop.time() >= due:
                await self.flush(wait=WRITE_TIMEOUT)
                due = loop.time() + self.interval
            elif not await self.flush(wait=WRITE_TIMEOUT, whole=True):
                await asyncio.sleep(max(0.0, due - loop.time()))

    async def flush(self, *, wait: float = WRITE_TIMEOUT, whole: bool = False) -> bool:
        """Write what is buffered, batch by batch (``whole``: full batches only); False when
        the database failed (the rows go back to the buffer for the next try)."""
        if self._flushing is None:
            self._flushing = asyncio.Lock()
        least = BATCH if whole else 1
        async with self._flushing:
            while len(self.buffer) >= least:
                count = min(BATCH, len(self.buffer))
                self._writing = [self.buffer.popleft() for _ in range(count)]
                try:
                    if self.prepare is not None:
                        await asyncio.wait_for(self.prepare(), wait)
                    await asyncio.wait_for(self.store.insert_usage(self._writing), wait)
                except Exception as exc:
                    self.buffer.extendleft(reversed(self._writing))
                    self._writing = []
                    over = len(self.buffer) - self.capacity
                    for _ in range(max(0, over)):
                        self.buffer.popleft()
                    if over > 0:
                        self._drop(over)
                    if not self._failing:
                        logger.error(
                            "usage ledger: writing %d rows failed (%s); %d rows buffered, retrying",
                            count,
                            type(exc).__name__,
                            len(self.buffer),
                        )
                    self._failing = True
                    return False
                self.written += count
                self._writing = []
                if self._failing:
                    logger.warning("usage ledger: writing again")
                    self._failing = False
        return True

    async def aclose(self, *, wait: float = 5.0) -> None:
        """Stop the writer and flush what remains, for at most ``wait`` seconds."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.buffer and not await self.flush(wait=wait):
            logger.error("usage ledger: %d rows not written at shutdown", len(self.buffer))
