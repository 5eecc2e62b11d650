"""PostgreSQL as the store (``GATEWAY_DATABASE_URL=postgresql://...``), through asyncpg: the
same SQL as SQLite (``?`` placeholders become ``$n``), a small pool, and migrations under an
advisory lock so that replicas starting together migrate once."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]

_PLACEHOLDER = re.compile(r"\?")
_MIGRATION_LOCK = 7_346_221  # pg_advisory_xact_lock id: "the gateway migrates"
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 10.0


def _numbered(sql: str) -> str:
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


class PostgresEngine:
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None

    async def _get(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=4,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
            )
        return self._pool

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        pool = await self._get()
        status: str = await pool.execute(_numbered(sql), *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, key: str
    ) -> None:
        marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
            f"ON CONFLICT ({key}) DO NOTHING"
        )
        pool = await self._get()
        async with pool.acquire() as connection, connection.transaction():
            await connection.executemany(sql, rows)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        pool = await self._get()
        records = await pool.fetch(_numbered(sql), *args)
        return [tuple(r) for r in records]

    async def migrate(self, migrations: list[tuple[int, list[str]]]) -> list[int]:
        pool = await self._get()
        applied: list[int] = []
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
            )
            have = {r[0] for r in await connection.fetch("SELECT version FROM schema_version")}
            for version, statements in migrations:
                if version in have:
                    continue
                for statement in statements:
                    await connection.execute(statement)
                await connection.execute(
                    "INSERT INTO schema_version VALUES ($1, $2)", version, time.time()
                )
                applied.append(version)
        return applied

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
