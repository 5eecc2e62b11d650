"""PostgreSQL as the store and ledger (a real server started on a free port with a temporary
data directory), with two gateway processes sharing it and one Redis: the newcomer's whole
path, from creating a key to seeing its cost."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import openai
import pytest

from gateway.tenancy.store import Store, open_engine
from tests.support.services import Admin, postgres_available, redis_available, redis_server
from tests.test_redis import chat, gateway_env, replicas

pytestmark = pytest.mark.skipif(
    not (postgres_available() and redis_available()),
    reason="PostgreSQL or redis-server is missing: run tests/setup-services.sh",
)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    from tests.support.services import postgres_server

    with postgres_server() as url:
        yield url


def test_two_gateways_with_redis_and_postgres(database: str, tmp_path: Path) -> None:
    with redis_server() as redis_srv:
        env = gateway_env(database, redis_srv.url)
        with replicas(tmp_path, env) as (a, b):
            admin = Admin(a.base_url)
            created = admin.create(
                name="newcomer", models=["echo/echo"], rpm=4, budget_usd=1, budget_period="month"
            )
            answers = []
            for i in range(6):
                try:
                    reply = chat((a, b)[i % 2].base_url, created["key"])
                    answers.append(reply.usage.total_tokens)
                except openai.RateLimitError as exc:
                    assert exc.code == "rate_limit_exceeded"
                    answers.append(0)
            assert answers == [10, 10, 10, 10, 0, 0]  # four a minute, across both
            with pytest.raises(openai.PermissionDeniedError):
                chat(b.base_url, created["key"], model="slow/echo")
            usage = admin.wait_requests(7, key_id=created["id"])
            assert usage["total"]["requests"] == 7
            assert usage["total"]["cost_micro_usd"] == 4 * (5 * 1 + 5 * 2)
            by_model = Admin(b.base_url).usage(key_id=created["id"], group_by="model")
            assert {r["model"]: r["requests"] for r in by_model["data"]} == {
                "echo/echo": 6,
                "slow/echo": 1,
            }


def test_keys_and_spending_survive_a_restart(database: str, tmp_path: Path) -> None:
    env = gateway_env(database, None)
    with replicas(tmp_path, env, count=1) as (first,):
        created = Admin(first.base_url).create(name="durable", budget_usd=0.000055)
        for _ in range(2):  # 10 spent each, 39 reserved: a third does not fit in 55
            chat(first.base_url, created["key"], model="slow/echo", max_tokens=5)
        Admin(first.base_url).wait_requests(2, key_id=created["id"])
    with replicas(tmp_path, env, count=1) as (second,):
        with pytest.raises(openai.RateLimitError) as caught:
            chat(second.base_url, created["key"], model="slow/echo", max_tokens=5)
        assert caught.value.code == "insufficient_quota"
        shown = Admin(second.base_url).client.get(f"/admin/keys/{created['id']}").json()
        assert shown["name"] == "durable"


def test_migrations_are_versioned_and_idempotent(database: str) -> None:
    async def run() -> tuple[list[int], list[int], list[int]]:
        store = Store(open_engine(database))
        try:
            again = await store.migrate()
            twice = await store.migrate()
            connection = await asyncpg.connect(database)
            try:
                rows = await connection.fetch("SELECT version FROM schema_version")
            finally:
                await connection.close()
            return again, twice, [r[0] for r in rows]
        finally:
            await store.aclose()

    again, twice, versions = asyncio.run(run())
    assert again == [] or again == [1]
    assert twice == []
    assert versions == [1]


def test_no_plaintext_key_in_postgres(database: str, tmp_path: Path) -> None:
    env = gateway_env(database, None)
    with replicas(tmp_path, env, count=1) as (gateway,):
        created = Admin(gateway.base_url).create(name="secret", rpm=10)
        chat(gateway.base_url, created["key"])
        Admin(gateway.base_url).wait_requests(1, key_id=created["id"])

    async def everything() -> str:
        connection = await asyncpg.connect(database)
        try:
            text = []
            for table in ("api_keys", "usage_events", "schema_version"):
                for row in await connection.fetch(f"SELECT * FROM {table}"):
                    text.append(repr(tuple(row)))
            return "\n".join(text)
        finally:
            await connection.close()

    dump = asyncio.run(everything())
    assert created["id"] in dump
    assert created["key"] not in dump and created["key"][10:-4] not in dump
