"""Where keys and usage live: one :class:`Store` over an engine (:class:`SqliteEngine` by
default, :class:`gateway.tenancy.postgres.PostgresEngine` for ``postgresql://``).

The SQL is written once, with ``?`` placeholders and portable types; an engine runs it. The
SQLite engine keeps one connection on one thread of its own (WAL, ``synchronous=NORMAL``, a
busy timeout): nothing here blocks the event loop, and the ledger writes in batches, so the
thread hop is paid once per batch rather than per row.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import orjson

from gateway.tenancy.keys import KeyRecord
from gateway.tenancy.migrations import MIGRATIONS

Row = tuple[Any, ...]
T = TypeVar("T")
_SQLITE_VARIABLES = 32_000  # SQLite >= 3.32 takes 32,766 parameters per statement
# Rows per statement at most: measured (instructions per row, all threads), 64-row statements
# cost no more than 1,000-row ones, and keep each hold of the GIL (binding) short.
_SQLITE_ROWS = 64
_flatten = itertools.chain.from_iterable


# sqlite3 (CPython 3.11) sends every parameter that is not exactly an int, float, str or
# bytearray through its adapter protocol, None included: an adapter lookup, then two failed
# attribute lookups, each formatting an AttributeError, ~2.8 k instructions for every NULL a
# ledger row binds. With an adapter for None, the first lookup finds it; NULL is still bound.
# The adapter is an empty dict's ``get``: None for None, called in C (a Python function is a
# frame for every NULL).
_NO_KEYS: dict[None, None] = {}
sqlite3.register_adapter(type(None), _NO_KEYS.get)
_KEY_COLUMNS = (
    "id, name, prefix, last4, created_at, models, rpm, tpm, max_parallel, budget_micro_usd, "
    "budget_tokens, budget_period, expires_at, revoked_at, metadata"
)
# Key fields a PATCH may change, as columns.
MUTABLE = (
    "name",
    "models",
    "rpm",
    "tpm",
    "max_parallel",
    "budget_micro_usd",
    "budget_tokens",
    "budget_period",
    "expires_at",
    "metadata",
)
GROUPS = {"key": "key_id", "model": "model", "day": "day"}
SUMS = {
    "requests": "COUNT(*)",
    "prompt_tokens": "COALESCE(SUM(prompt_tokens), 0)",
    "completion_tokens": "COALESCE(SUM(completion_tokens), 0)",
    "cached_tokens": "COALESCE(SUM(cached_tokens), 0)",
    "reasoning_tokens": "COALESCE(SUM(reasoning_tokens), 0)",
    "cost_micro_usd": "COALESCE(SUM(cost_micro_usd), 0)",
    "unpriced_requests": "COALESCE(SUM(1 - priced), 0)",
}
"""The integer sums a usage query answers per group (and the admin API totals), by name."""


class UsageRow(NamedTuple):
    """One ledger row: a request as billed. Never a prompt, a response or a key.

    The columns, in order, flags as 0/1. The ledger keeps its rows as plain tuples in this
    order (:data:`UsageValues`), which the engines take as they are, with no copy: the garbage
    collector stops tracking a plain tuple of strings and numbers at its first pass, never a
    NamedTuple, and thousands of rows waiting for their batch would otherwise be promoted to
    the oldest generation and make each of its (whole-heap) collections come sooner.
    """

    id: str
    request_id: str
    ts: float
    day: str
    key_id: str | None
    surface: str
    model: str | None
    provider: str | None
    upstream_model: str | None
    stream: int
    attempts: int
    status: int
    error_code: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    usage_source: str
    cost_micro_usd: int
    priced: int
    ttft_ms: float | None
    duration_ms: float
    client_left: int


USAGE_COLUMNS = UsageRow._fields
UsageValues = tuple[
    str, str, float, str, str | None, str, str | None, str | None, str | None, int, int, int,
    str | None, int, int, int, int, str, int, int, float | None, float, int,
]  # fmt: skip


class Engine(Protocol):
    dialect: str

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, key: str
    ) -> None:
        """Insert ``rows`` in one transaction, skipping those whose ``key`` exists."""
        ...

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...

    async def migrate(self, migrations: list[tuple[int, list[str]]]) -> list[int]:
        """Apply the missing migrations, each in one transaction; the versions applied."""
        ...

    async def aclose(self) -> None: ...


class SqliteEngine:
    """SQLite on threads of its own; the file is created (with its folder) on first use.

    Two lanes, each one thread with its own connection: the ledger's batches, and everything
    else (key lookups, the admin API). Under WAL a reader never waits for a writer, so a
    batch stuck on a locked file delays no key lookup.
    """

    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._lanes: dict[str, tuple[ThreadPoolExecutor, dict[str, sqlite3.Connection]]] = {
            name: (ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{name}"), {})
            for name in ("main", "ledger")
        }

    def _connect(self, lane: str) -> sqlite3.Connection:
        held: dict[str, sqlite3.Connection] = self._lanes[lane][1]
        db = held.get("db")
        if db is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            held["db"] = db
        return db

    async def _run(self, lane: str, fn: Callable[[str], T]) -> T:
        """``fn(lane)`` on the lane's thread."""
        pool = self._lanes[lane][0]
        return await asyncio.get_running_loop().run_in_executor(pool, fn, lane)

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        def run(lane: str) -> int:
            return self._connect(lane).execute(sql, tuple(args)).rowcount

        return await self._run("main", run)

    async def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, key: str
    ) -> None:
        """Many rows per statement: each statement step lets go of the GIL once, where
        ``executemany`` would hand it back and forth twice a row and slow the event loop.

        Statements come in a few sizes only (powers of two, up to :data:`_SQLITE_ROWS` rows):
        the connection's statement cache then compiles each once, where a statement per batch
        size would be parsed again for almost every batch."""
        width = len(columns)
        most = max(1, min(_SQLITE_ROWS, _SQLITE_VARIABLES // width))

        group = "(" + ", ".join("?" * width) + ")"
        statements: dict[int, str] = {}

        def statement(count: int) -> str:
            sql = statements.get(count)
            if sql is None:
                sql = statements[count] = (
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                    f"{', '.join([group] * count)} ON CONFLICT ({key}) DO NOTHING"
                )
            return sql

        def run(lane: str) -> None:
            db = self._connect(lane)
            db.execute("BEGIN IMMEDIATE")
            try:
                start = 0
                while start < len(rows):
                    count = most
                    while count > len(rows) - start:
                        count //= 2
                    chunk = rows[start : start + count]
                    start += count
                    # Flattened in C: a comprehension would run ~2 bytecodes a value, holding
                    # the GIL the event loop wants.
                    db.execute(statement(count), list(_flatten(chunk)))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        await self._run("ledger", run)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        def run(lane: str) -> list[Row]:
            return list(self._connect(lane).execute(sql, tuple(args)).fetchall())

        return await self._run("main", run)

    async def migrate(self, migrations: list[tuple[int, list[str]]]) -> list[int]:
        def run(lane: str) -> list[int]:
            db = self._connect(lane)
            db.execute("BEGIN IMMEDIATE")  # one migrating process at a time
            try:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version "
                    "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
                )
                have = {v for (v,) in db.execute("SELECT version FROM schema_version")}
                applied = []
                for version, statements in migrations:
                    if version in have:
                        continue
                    for statement in statements:
                        db.execute(statement)
                    db.execute("INSERT INTO schema_version VALUES (?, ?)", (version, time.time()))
                    applied.append(version)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return applied

        return await self._run("main", run)

    async def aclose(self) -> None:
        for lane, (pool, held) in self._lanes.items():

            def close(_: str, held: dict[str, sqlite3.Connection] = held) -> None:
                db = held.pop("db", None)
                if db is not None:
                    db.close()

            await self._run(lane, close)
            pool.shutdown(wait=True)


def open_engine(url: str) -> Engine:
    """The engine for ``GATEWAY_DATABASE_URL``: ``sqlite:///relative.db``,
    ``sqlite:////absolute.db``, a bare path, or ``postgresql://...``."""
    if url.startswith(("postgresql://", "postgres://")):
        from gateway.tenancy.postgres import PostgresEngine  # asyncpg only when used

        return PostgresEngine(url)
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        path = path[1:] if path.startswith("/") else path  # sqlite:///x.db -> x.db
        return SqliteEngine(path or ":memory:")
    if "://" in url:
        raise ValueError("expected sqlite:///<path> or postgresql://...")
    return SqliteEngine(url)


def _key_from(row: Row) -> KeyRecord:
    models = orjson.loads(row[5]) if row[5] is not None else None
    return KeyRecord(
        id=row[0],
        name=row[1],
        prefix=row[2],
        last4=row[3],
        created_at=row[4],
        models=tuple(models) if models is not None else None,
        rpm=row[6],
        tpm=row[7],
        max_parallel=row[8],
        budget_micro_usd=row[9],
        budget_tokens=row[10],
        budget_period=row[11],
        expires_at=row[12],
        revoked_at=row[13],
        metadata=orjson.loads(row[14]),
    )


def _column_value(name: str, value: Any) -> Any:
    if name == "models":
        return None if value is None else orjson.dumps(list(value)).decode()
    if name == "metadata":
        return orjson.dumps(value or {}).decode()
    return value


class Store:
    """Keys and usage over an engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def migrate(self) -> list[int]:
        return await self.engine.migrate(MIGRATIONS)

    async def insert_key(self, key: KeyRecord, digest: str) -> None:
        names = [c.strip() for c in _KEY_COLUMNS.split(",")]
        values = [_column_value(n, getattr(key, n)) for n in names]
        await self.engine.execute(
            f"INSERT INTO api_keys (digest, {_KEY_COLUMNS}) VALUES (?{', ?' * len(values)})",
            [digest, *values],
        )

    async def key_by_digest(self, digest: str) -> KeyRecord | None:
        rows = await self.engine.fetch(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE digest = ?", [digest]
        )
        return _key_from(rows[0]) if rows else None

    async def get_key(self, key_id: str) -> KeyRecord | None:
        rows = await self.engine.fetch(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", [key_id]
        )
        return _key_from(rows[0]) if rows else None

    async def list_keys(self, *, limit: int, after: str | None) -> list[KeyRecord]:
        rows = await self.engine.fetch(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id > ? ORDER BY id LIMIT ?",
            [after or "", limit],
        )
        return [_key_from(r) for r in rows]

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> KeyRecord | None:
        """Set ``changes`` (columns of :data:`MUTABLE`) on one key, in one statement."""
        if changes:
            names = [n for n in MUTABLE if n in changes]
            sets = ", ".join(f"{n} = ?" for n in names)
            args = [_column_value(n, changes[n]) for n in names]
            await self.engine.execute(f"UPDATE api_keys SET {sets} WHERE id = ?", [*args, key_id])
        return await self.get_key(key_id)

    async def revoke_key(self, key_id: str, at: float) -> KeyRecord | None:
        await self.engine.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", [at, key_id]
        )
        return await self.get_key(key_id)

    async def insert_usage(self, rows: Sequence[UsageValues]) -> None:
        """One batch, one transaction; a row already there (same id) is left as it is."""
        await self.engine.insert("usage_events", USAGE_COLUMNS, rows, key="id")

    async def spent(self, key_id: str, since: float) -> tuple[int, int]:
        """Micro-USD and tokens a key was charged from ``since`` on (a budget's window)."""
        rows = await self.engine.fetch(
            "SELECT COALESCE(SUM(cost_micro_usd), 0), "
            "COALESCE(SUM(prompt_tokens + completion_tokens), 0) "
            "FROM usage_events WHERE key_id = ? AND ts >= ?",
            [key_id, since],
        )
        return int(rows[0][0]), int(rows[0][1])

    async def usage(
        self,
        *,
        key_id: str | None,
        model: str | None,
        since: float | None,
        until: float | None,
        group_by: Sequence[str],
    ) -> list[dict[str, Any]]:
        """Sums per group (``key``, ``model``, ``day``), all integers: totals add up exactly."""
        where, args = [], []
        for column, op, value in (
            ("key_id", "=", key_id),
            ("model", "=", model),
            ("ts", ">=", since),
            ("ts", "<", until),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        columns = [GROUPS[g] for g in group_by]
        select = ", ".join([*columns, *SUMS.values()])
        sql = f"SELECT {select} FROM usage_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if columns:
            sql += f" GROUP BY {', '.join(columns)} ORDER BY {', '.join(columns)}"
        out = []
        for row in await self.engine.fetch(sql, args):
            item: dict[str, Any] = dict(zip(group_by, row[: len(columns)], strict=True))
            item.update(zip(SUMS, (int(v) for v in row[len(columns) :]), strict=True))
            item["cost_usd"] = item["cost_micro_usd"] / 1_000_000
            out.append(item)
        return out

    async def aclose(self) -> None:
        await self.engine.aclose()
