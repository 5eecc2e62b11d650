"""The ledger off the hot path: a locked database delays no request; rows wait in a bounded
buffer, then are dropped and counted; what was buffered is written once the database is
back. And one settlement per request, whatever ends it."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam

from gateway.app import create_app
from gateway.observe import Call
from gateway.settings import ModelPrice
from gateway.tenancy.ledger import BATCH, Ledger, usage_row
from gateway.tenancy.prices import Prices
from gateway.tenancy.store import USAGE_COLUMNS, Store, open_engine
from providers.base import Usage
from tests.conftest import settings
from tests.support.clients import sdk
from tests.support.servers import serve_in_thread
from tests.support.services import ADMIN_KEY, Admin

MESSAGE: list[ChatCompletionMessageParam] = [{"role": "user", "content": "one two three"}]


def test_a_locked_database_delays_no_request(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    app = create_app(
        settings(admin_key=ADMIN_KEY, database_url=f"sqlite:///{db}", ledger_queue_size=5)
    )
    with serve_in_thread(app) as url:
        admin = Admin(url)
        created = admin.create(name="busy", rpm=1000)
        client = sdk(url, created["key"], timeout=30)
        client.chat.completions.create(model="echo/echo", messages=MESSAGE)
        admin.wait_requests(1, key_id=created["id"])
        # Another process holds the write lock: every batch waits, then fails, and retries.
        locker = sqlite3.connect(db, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        try:
            for _ in range(12):
                reply = client.chat.completions.create(model="echo/echo", messages=MESSAGE)
                assert reply.choices[0].message.content == "one two three"
            # Key lookups read past the lock (WAL): a key made before the lock still works
            # once its cache entry is gone.
            time.sleep(1.1)
            client.chat.completions.create(model="echo/echo", messages=MESSAGE)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        # 13 requests during the lock and 5 rows kept at most: 8 or more dropped and
        # counted, the rest written once the lock is gone; none both.
        usage = admin.wait_requests(6, key_id=created["id"])
        assert usage["dropped_rows"] >= 8
        assert usage["total"]["requests"] + usage["dropped_rows"] == 1 + 13


def test_the_ledger_records_requests_of_static_keys_too(tmp_path: Path) -> None:
    app = create_app(
        settings(
            api_keys=["static-key-0123456789"],
            admin_key=ADMIN_KEY,
            database_url=f"sqlite:///{tmp_path / 'g.db'}",
        )
    )
    with serve_in_thread(app) as url:
        sdk(url, "static-key-0123456789").chat.completions.create(
            model="echo/echo", messages=MESSAGE
        )
        usage = Admin(url).wait_requests(1, group_by="key")
        assert [r["key"] for r in usage["data"]] == ["static-0"]
        assert usage["data"][0]["unpriced_requests"] == 1  # no price: cost 0, and it says so
        assert usage["total"]["cost_micro_usd"] == 0


def test_a_key_revoked_while_its_streams_run(tmp_path: Path) -> None:
    """Revoking stops new requests at once; the streams already admitted finish and are
    charged once each, and their reservations are given back."""
    app = create_app(
        settings(
            admin_key=ADMIN_KEY,
            database_url=f"sqlite:///{tmp_path / 'g.db'}",
            prices={"slow/echo": {"input": 1, "output": 1}},
            providers={"slow": {"type": "echo", "chunk_delay_ms": 20, "models": ["echo"]}},
        )
    )
    with serve_in_thread(app) as url:
        admin = Admin(url)
        created = admin.create(name="revoked-live", budget_usd=1, max_parallel=2)
        words = " ".join(["word"] * 40)
        with httpx.Client(timeout=30) as one, httpx.Client(timeout=30) as two:
            streams = []
            for client in (one, two):
                response = client.send(
                    client.build_request(
                        "POST",
                        url + "/v1/chat/completions",
                        headers={"authorization": f"Bearer {created['key']}"},
                        json={
                            "model": "slow/echo",
                            "messages": [{"role": "user", "content": words}],
                            "stream": True,
                            "stream_options": {"include_usage": True},
                        },
                    ),
                    stream=True,
                )
                assert response.status_code == 200
                streams.append(response)
            assert admin.client.delete(f"/admin/keys/{created['id']}").status_code == 200
            try:
                sdk(url, created["key"]).chat.completions.create(
                    model="slow/echo", messages=MESSAGE
                )
                raise AssertionError("a revoked key was admitted")
            except openai.AuthenticationError as exc:
                assert exc.code == "api_key_revoked"
            for response in streams:
                body = response.read().decode()
                assert body.rstrip().endswith("data: [DONE]")
                assert '"completion_tokens":40' in body
                response.close()
        usage = admin.wait_requests(2, key_id=created["id"])["total"]
        assert usage["requests"] == 2  # the refused request never reached a surface
        assert usage["completion_tokens"] == 80
        tenancy_reservations = app.state.tenancy.limiter.reservations
        assert tenancy_reservations == {}


def _call(request_id: str, key_id: str, tokens: tuple[int, int]) -> Call:
    call = Call(request_id, "POST", "/v1/chat/completions", "127.0.0.1", time.perf_counter())
    call.surface, call.model, call.deployment, call.key_id = "chat", "m", "p/m", key_id
    call.usage = Usage(input_tokens=tokens[0], output_tokens=tokens[1])
    call.first_token_at, call.status = time.perf_counter(), 200
    return call


def test_buffered_rows_are_plain_tuples_the_collector_lets_go() -> None:
    """A NamedTuple stays tracked by the garbage collector; thousands of rows waiting for their
    batch would be promoted to its oldest generation and bring its whole-heap passes sooner.
    A plain tuple of strings and numbers is untracked at the first pass."""
    prices = Prices({"p/m": ModelPrice(input=1.0, output=2.0)})
    rows = [usage_row(_call(f"r{i}", "key_a", (10, 5)), prices, now=time.time()) for i in range(3)]
    gc.collect()
    for row in rows:
        assert type(row) is tuple and not gc.is_tracked(row)
        assert dict(zip(USAGE_COLUMNS, row, strict=True))["cost_micro_usd"] == 20
    # pending() reads the buffered rows by position: the same sums as the columns say.
    ledger = Ledger(Store(open_engine(":memory:")), prices)
    for row in rows:
        ledger.buffer.append(row)
    ledger.buffer.append(usage_row(_call("other", "key_b", (100, 0)), prices, now=time.time()))
    assert ledger.pending("key_a", 0.0) == (60, 45)
    assert ledger.pending("key_a", time.time() + 60) == (0, 0)


def test_batches_of_any_size_are_written_once_each_row(tmp_path: Path) -> None:
    """Statements come in a few sizes (so SQLite compiles each once): every batch size is cut
    into them without losing or repeating a row, and a row written twice is kept once."""
    prices = Prices({})

    async def run() -> tuple[int, int, list[tuple[str, int]]]:
        store = Store(open_engine(str(tmp_path / "batches.db")))
        await store.migrate()
        sizes = [1, 63, 64, 65, 130, 257]
        batches = [
            [
                usage_row(_call(f"b{size}-{i}", f"key_{size}", (i, 1)), prices, now=time.time())
                for i in range(size)
            ]
            for size in sizes
        ]
        for batch in batches:
            await store.insert_usage(batch)
        await store.insert_usage(batches[3])  # written again: ON CONFLICT keeps one
        rows = await store.engine.fetch(
            "SELECT COUNT(*), COUNT(DISTINCT request_id) FROM usage_events"
        )
        per_key = await store.engine.fetch(
            "SELECT key_id, SUM(prompt_tokens) FROM usage_events GROUP BY key_id ORDER BY key_id"
        )
        await store.aclose()
        return rows[0][0], rows[0][1], [(k, int(s)) for k, s in per_key]

    count, distinct, per_key = asyncio.run(run())
    assert count == distinct == 1 + 63 + 64 + 65 + 130 + 257
    assert dict(per_key) == {f"key_{n}": n * (n - 1) // 2 for n in (1, 63, 64, 65, 130, 257)}


def test_nulls_bind_as_null_through_the_none_adapter() -> None:
    """The store registers an adapter for None (sqlite3 adapts every NULL otherwise, through
    two failed attribute lookups): what is written and read back is still NULL."""
    assert (type(None), sqlite3.PrepareProtocol) in sqlite3.adapters
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (a TEXT, b INTEGER)")
    db.execute("INSERT INTO t VALUES (?, ?)", (None, 1))
    assert db.execute("SELECT a IS NULL, typeof(a), b FROM t").fetchall() == [(1, "null", 1)]


def test_a_batch_is_written_when_full_or_when_its_interval_ends(tmp_path: Path) -> None:
    """``GATEWAY_LEDGER_FLUSH_SECONDS``: rows short of a batch wait for the interval (here an
    hour: none are written), a full batch is written at once, and a short interval writes
    what is there."""
    prices = Prices({})

    async def written(store: Store) -> int:
        rows = await store.engine.fetch("SELECT COUNT(*) FROM usage_events")
        return int(rows[0][0])

    async def wait_for(store: Store, count: int) -> int:
        for _ in range(500):  # 10 s at most
            if (found := await written(store)) >= count:
                break
            await asyncio.sleep(0.02)
        return found

    async def run() -> tuple[int, int, int]:
        store = Store(open_engine(str(tmp_path / "cadence.db")))
        await store.migrate()
        slow = Ledger(store, prices, interval=3600.0)
        for i in range(5):
            slow.add(usage_row(_call(f"s{i}", "key_s", (1, 1)), prices, now=time.time()))
        await asyncio.sleep(0.8)  # past the default 500 ms: still buffered
        held = await written(store)
        for i in range(5, BATCH):
            slow.add(usage_row(_call(f"s{i}", "key_s", (1, 1)), prices, now=time.time()))
        full = await wait_for(store, BATCH)
        await slow.aclose()
        quick = Ledger(store, prices, interval=0.05)
        quick.add(usage_row(_call("q", "key_q", (1, 1)), prices, now=time.time()))
        soon = await wait_for(store, BATCH + 1)
        await quick.aclose()
        await store.aclose()
        return held, full, soon

    held, full, soon = asyncio.run(run())
    assert (held, full, soon) == (0, BATCH, BATCH + 1)
    assert settings(ledger_flush_seconds=2).ledger_flush_seconds == 2.0


class _Timed(Store):
    """A store whose every batch takes ``delay`` seconds (a busy database) or fails, and that
    records the batches it was given."""

    def __init__(self, path: Path, *, delay: float = 0.0, fail: bool = False) -> None:
        super().__init__(open_engine(str(path)))
        self.delay, self.fail = delay, fail
        self.batches: list[int] = []

    async def insert_usage(self, rows: Sequence[tuple[object, ...]]) -> None:
        self.batches.append(len(rows))
        await asyncio.sleep(self.delay)
        if self.fail:
            raise sqlite3.OperationalError("database is locked")
        await super().insert_usage(rows)  # type: ignore[arg-type]


def test_rows_that_come_during_a_write_wait_for_a_batch_or_the_interval(tmp_path: Path) -> None:
    """The rows added while a full batch is written are not chased with small transactions:
    they go with the next full batch, or with the interval's write; and the interval still
    bounds how long a row waits."""
    prices = Prices({})

    def rows(ledger: Ledger, prefix: str, count: int) -> None:
        for i in range(count):
            ledger.add(usage_row(_call(f"{prefix}{i}", "key_w", (1, 1)), prices, now=time.time()))

    async def run() -> tuple[list[int], list[int], list[int], list[int]]:
        store = _Timed(tmp_path / "cadence.db", delay=0.2)
        await store.migrate()
        slow = Ledger(store, prices, interval=3600.0)
        rows(slow, "a", BATCH)  # a full batch: its write starts at once, and takes 0.2 s
        await asyncio.sleep(0.05)
        rows(slow, "b", 250)  # during that write
        await asyncio.sleep(0.6)
        during = list(store.batches)
        rows(slow, "c", BATCH - 250)  # the second batch fills
        await asyncio.sleep(0.4)
        second = list(store.batches)
        await slow.aclose()
        store.batches.clear()
        quick = Ledger(store, prices, interval=0.3)
        rows(quick, "d", BATCH + 10)
        await asyncio.sleep(1.0)  # the full batch at once, the ten at the interval
        timed = list(store.batches)
        await quick.aclose()
        written = await store.engine.fetch("SELECT COUNT(*) FROM usage_events")
        await store.aclose()
        return during, second, timed, [int(written[0][0])]

    during, second, timed, written = asyncio.run(run())
    assert during == [BATCH]
    assert second == [BATCH, BATCH]
    assert timed == [BATCH, 10]
    assert written == [3 * BATCH + 10]


def test_a_failing_database_is_tried_again_once_an_interval(tmp_path: Path) -> None:
    """A full buffer wakes the writer on every row; a database that fails is still tried
    about twice an interval, not once a request."""
    prices = Prices({})

    async def run() -> tuple[int, int]:
        store = _Timed(tmp_path / "failing.db", fail=True)
        await store.migrate()
        ledger = Ledger(store, prices, capacity=5 * BATCH, interval=0.25)
        for i in range(BATCH + 200):  # more than a batch buffered: every row wakes the writer
            ledger.add(usage_row(_call(f"f{i}", "key_f", (1, 1)), prices, now=time.time()))
        started = time.monotonic()
        i = BATCH + 200
        while time.monotonic() - started < 1.0:  # ~1,000 rows a second, for a second
            ledger.add(usage_row(_call(f"f{i}", "key_f", (1, 1)), prices, now=time.time()))
            i += 1
            if i % 10 == 0:
                await asyncio.sleep(0.01)
        tries = len(store.batches)
        store.fail = False
        await ledger.aclose()
        written = await store.engine.fetch("SELECT COUNT(*) FROM usage_events")
        await store.aclose()
        return tries, int(written[0][0]) - i

    tries, missing = asyncio.run(run())
    assert 2 <= tries <= 12
    assert missing == 0  # once the database answers, every buffered row is written
