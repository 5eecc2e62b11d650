"""The compiled ledger row (gateway/tenancy/_rows.c) is usage_row's, value for value: random
requests of every shape (no usage, a settled or unsettled cost, deployments with and without a
provider, no first token, client gone), times on both sides of midnight, durations too large
for a whole number of microseconds in a double. Only the id differs: each maker has its own
prefix and counter, in order."""

from __future__ import annotations

import functools
import os
import random
import re
import time
from typing import Any

import pytest

from gateway.observe import Call
from gateway.settings import ModelPrice
from gateway.tenancy import ledger
from gateway.tenancy.ledger import Ledger, request_cost, usage_row
from gateway.tenancy.prices import Prices
from gateway.tenancy.store import USAGE_COLUMNS, Store, open_engine
from providers.base import Usage

PRICES = Prices(
    {
        "p/m": ModelPrice(input=1.15, output=2.6, cached_input=0.5),
        "m": ModelPrice(input=0.3, output=0.9),
    }
)
DAY = 86_400.0
MIDNIGHT = 1_800_057_600.0  # 2027-01-16T00:00:00Z


@pytest.fixture
def rows() -> Any:
    """The compiled module; CI must have built it (``pip install -e .`` runs setup.py)."""
    try:
        from gateway.tenancy import _rows
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("gateway/tenancy/_rows.c was not built: is there a C compiler?")
        pytest.skip("the compiled rows are not built here (no C compiler at install)")
    return _rows


def maker(rows: Any, prefix: str = "test-") -> Any:
    return rows.RowMaker(
        prefix, functools.partial(request_cost, PRICES), ledger._day, ledger._NO_USAGE
    )


def random_call(rng: random.Random, i: int) -> Call:
    started = rng.choice([1_000.0, 123_456.789, 0.001, 5e12, -20.5])
    call = Call(f"req-{i}", "POST", "/v1/chat/completions", "127.0.0.1", started)
    call.key_id = rng.choice([None, "key_a", "static-0"])
    call.surface = rng.choice(["chat", "messages", "", "responses"])
    call.model = rng.choice([None, "m", "p/m", "gpt-x"])
    call.deployment = rng.choice([None, "", "p/m", "p/m", "noslash", "p/", "a/b/c", "other/m"])
    call.stream = rng.random() < 0.5
    call.attempts = rng.choice([0, 1, 3])
    call.status = rng.choice([0, 200, 429, 502])
    call.error_code = rng.choice([None, "rate_limit_exceeded"])
    call.usage = rng.choice(
        [
            None,
            Usage(input_tokens=rng.randrange(10**6), output_tokens=rng.randrange(10**5)),
            Usage(input_tokens=80, output_tokens=10, cached_tokens=50, reasoning_tokens=7),
            Usage(input_tokens=3, output_tokens=2**70, source="estimated"),  # no int64 here
        ]
    )
    call.cost = rng.choice([None, None, (1234, True), (0, False)])
    call.first_token_at = rng.choice(
        [None, started + rng.random(), started - 0.25, started + 3e9, started + 1e-7]
    )
    call.client_left = rng.random() < 0.2
    return call


def test_the_compiled_row_is_usage_row(rows: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    make = maker(rows)
    checked = 0
    nows = [
        MIDNIGHT - 1e-6,
        MIDNIGHT,
        MIDNIGHT + 1e-6,
        MIDNIGHT + DAY - 0.5,
        MIDNIGHT + DAY,
        MIDNIGHT - DAY * 400,
        time.time(),
        -DAY - 0.5,  # before 1970
        1e17,  # no date: both raise
    ]
    for i in range(3_000):
        call = random_call(rng, i)
        now = rng.choice(nows)
        end = call.started + rng.choice([0.0, 0.0015, 2.5, 1e13, -1.0])
        monkeypatch.setattr(time, "perf_counter", lambda end=end: end)
        where = f"call {i}: {call}, now {now!r}, end {end!r}"
        try:
            expected = usage_row(call, PRICES, now=now)
        except (ValueError, OverflowError, OSError) as exc:  # no date for the day
            with pytest.raises(type(exc)):
                make(call, now, end)
            continue
        got = make(call, now, end)
        assert type(got) is tuple and len(got) == len(USAGE_COLUMNS)
        assert re.fullmatch(r"test-[0-9a-f]{12}", got[0]), where
        for column, mine, theirs in zip(USAGE_COLUMNS[1:], got[1:], expected[1:], strict=True):
            assert type(mine) is type(theirs) and mine == theirs, f"{column}: {mine!r}; {where}"
        checked += 1
    assert checked > 2_500


def test_ids_are_in_order_past_twelve_digits(rows: Any) -> None:
    make = maker(rows, "p-")
    call = Call("r", "POST", "/v1/chat/completions", "127.0.0.1", time.perf_counter())
    call.surface = "chat"
    ids = [make(call, time.time(), time.perf_counter())[0] for _ in range(3)]
    assert ids == ["p-000000000000", "p-000000000001", "p-000000000002"]
    assert all(re.fullmatch(r"p-[0-9a-f]{12}", i) for i in ids)


def test_bad_arguments_are_errors_not_crashes(rows: Any) -> None:
    make = maker(rows)
    call = Call("r", "POST", "/v1/chat/completions", "127.0.0.1", 1.0)
    with pytest.raises(TypeError):
        make(call, 1, 2.0)  # now is time.time(): a float
    with pytest.raises(TypeError):
        make(call, 1.0, 2.0, 3)
    with pytest.raises(TypeError):
        make(call, now=1.0, end=2.0)
    with pytest.raises(AttributeError):
        make(object(), 1.0, 2.0)
    call.cost = (1, 2, 3)  # type: ignore[assignment]
    with pytest.raises(TypeError):
        make(call, 1.0, 2.0)
    with pytest.raises(TypeError):
        rows.RowMaker.__new__(rows.RowMaker)(call, 1.0, 2.0)  # never initialized
    with pytest.raises(ValueError):
        rows.RowMaker("é", print, print, None)


def test_the_ledger_makes_its_rows_compiled_unless_told_not_to(rows: Any) -> None:
    store = Store(open_engine(":memory:"))
    compiled, python = Ledger(store, PRICES), Ledger(store, PRICES, compiled=False)
    assert isinstance(compiled.row, rows.RowMaker) and python.row is None
    call = Call("r", "POST", "/v1/chat/completions", "127.0.0.1", time.perf_counter())
    call.surface, call.key_id, call.usage = "chat", "key_a", Usage(input_tokens=5)
    for each in (compiled, python):
        each.finished(call)
    (mine,), (theirs,) = compiled.buffer, python.buffer
    assert mine[0] != theirs[0] and mine[0].split("-")[:2] != theirs[0].split("-")[:2]
    # Not the time, nor the duration: read at other instants.
    assert (mine[1], *mine[3:21]) == (theirs[1], *theirs[3:21])
