"""The virtual keys' cache in one process (the end-to-end revocation across replicas is
tests/test_redis.py's): a key in use is read again before its entry expires, an entry is never
used after it expires, and a read is shared by every request that waits for it without any of
them able to cancel it or to cache what a revocation here made stale.

The database is a real SQLite file; only the read of a key is wrapped, to hold it while a test
acts (:class:`HeldReads`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.errors import APIError, AuthenticationError, ServiceUnavailable
from gateway.settings import Settings
from gateway.tenancy.admission import Tenancy, Tenant
from gateway.tenancy.keys import KeyRecord, new_key_id, new_secret


class HeldReads:
    """``Store.key_by_digest`` counted, and held after the database answered until
    :attr:`release` is set: what a request reads meanwhile is the key as it was."""

    def __init__(self, read: Callable[[str], Awaitable[KeyRecord | None]]) -> None:
        self.read = read
        self.count = 0
        self.answered = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()
        self.failing = False

    async def __call__(self, digest: str) -> KeyRecord | None:
        self.count += 1
        if self.failing:
            raise sqlite3.OperationalError("database is locked")
        record = await self.read(digest)
        self.answered.set()
        await self.release.wait()
        return record


@contextlib.asynccontextmanager
async def a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_seconds: float
) -> AsyncIterator[tuple[Tenancy, bytes, str, HeldReads]]:
    """A tenancy on a new SQLite file with one key: (tenancy, secret, key id, its reads)."""
    settings = Settings(
        admin_key=SecretStr("admin-key-for-tests"),
        database_url=f"sqlite:///{tmp_path / 'keys.db'}",
        key_cache_seconds=cache_seconds,
    )
    tenancy = Tenancy(settings)
    await tenancy.ready()
    secret = new_secret()
    record = KeyRecord(
        id=new_key_id(), name="t", prefix=secret[:10], last4=secret[-4:], created_at=time.time()
    )
    await tenancy.store.insert_key(record, tenancy.digest(secret.encode()))
    reads = HeldReads(tenancy.store.key_by_digest)
    monkeypatch.setattr(tenancy.store, "key_by_digest", reads)
    try:
        yield tenancy, secret.encode(), record.id, reads
    finally:
        await tenancy.aclose()


async def until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


def revoked(answer: Tenant | APIError) -> bool:
    return isinstance(answer, AuthenticationError) and answer.code == "api_key_revoked"


async def quickly(call: Awaitable[Tenant | APIError]) -> Tenant | APIError:
    """An answer that waits for no read of the database (the reads are held)."""
    return await asyncio.wait_for(call, 0.5)


def test_a_key_in_use_is_read_again_before_it_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run() -> None:
        async with a_key(tmp_path, monkeypatch, 2.0) as (tenancy, secret, _, reads):
            assert isinstance(await tenancy.authenticate(secret), Tenant)
            read_at = time.monotonic()
            assert reads.count == 1
            reads.release.clear()
            await until(read_at + 1.6)  # past three quarters of its 2 s, not expired
            for _ in range(5):  # served from the entry, one read behind them
                assert isinstance(await quickly(tenancy.authenticate(secret)), Tenant)
                await asyncio.sleep(0)
            assert reads.count == 2
            reads.release.set()
            await asyncio.sleep(0.1)
            await until(read_at + 2.2)  # the first entry would have expired: renewed
            assert isinstance(await quickly(tenancy.authenticate(secret)), Tenant)
            assert reads.count == 2

    asyncio.run(run())


def test_a_revocation_elsewhere_is_seen_by_the_early_read_and_never_after_expiry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another replica revokes the key (the database changes, this process is not told)."""

    async def run() -> None:
        async with a_key(tmp_path, monkeypatch, 2.0) as (tenancy, secret, key_id, reads):
            assert isinstance(await tenancy.authenticate(secret), Tenant)
            read_at = time.monotonic()
            await tenancy.store.revoke_key(key_id, time.time())
            await until(read_at + 1.6)
            assert isinstance(await quickly(tenancy.authenticate(secret)), Tenant)
            await asyncio.sleep(0.1)  # the early read has seen the revocation
            refused = await quickly(tenancy.authenticate(secret))
            assert revoked(refused)
            assert time.monotonic() < read_at + 2.0  # before the first entry expired

            # An expired entry is not used while its read is held: the request waits for it.
            reads.release.clear()
            await until(time.monotonic() + 2.1)
            waiting = asyncio.ensure_future(tenancy.authenticate(secret))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            reads.release.set()
            refused = await quickly(waiting)
            assert revoked(refused)

    asyncio.run(run())


def test_a_read_that_raced_a_revocation_here_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read answers with the key as it was, the admin API revokes it here before that
    answer is remembered: the read is done again, and the key is refused at once."""

    async def run() -> None:
        async with a_key(tmp_path, monkeypatch, 60.0) as (tenancy, secret, key_id, reads):
            reads.release.clear()
            first = asyncio.ensure_future(tenancy.authenticate(secret))
            await reads.answered.wait()  # the key as it was, not yet remembered
            await tenancy.store.revoke_key(key_id, time.time())
            tenancy.forget(key_id)  # what DELETE /admin/keys/{id} does after the update
            reads.release.set()
            refused = await quickly(first)
            assert revoked(refused)
            assert reads.count == 2
            again = await quickly(tenancy.authenticate(secret))
            assert revoked(again)

    asyncio.run(run())


def test_a_request_that_leaves_during_a_read_cancels_no_one_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run() -> None:
        async with a_key(tmp_path, monkeypatch, 60.0) as (tenancy, secret, _, reads):
            reads.release.clear()
            leaving = asyncio.ensure_future(tenancy.authenticate(secret))
            staying = asyncio.ensure_future(tenancy.authenticate(secret))
            await reads.answered.wait()
            leaving.cancel()  # its client disconnected
            await asyncio.sleep(0)
            reads.release.set()
            assert isinstance(await quickly(staying), Tenant)
            assert leaving.cancelled()
            assert reads.count == 1

    asyncio.run(run())


def test_a_failing_early_read_keeps_the_entry_until_it_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> None:
        unhandled: list[object] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: unhandled.append(ctx))
        async with a_key(tmp_path, monkeypatch, 2.0) as (tenancy, secret, _, reads):
            assert isinstance(await tenancy.authenticate(secret), Tenant)
            read_at = time.monotonic()
            reads.failing = True
            await until(read_at + 1.6)
            assert isinstance(await quickly(tenancy.authenticate(secret)), Tenant)
            await asyncio.sleep(0.1)
            assert reads.count == 2
            failed = [r for r in caplog.records if "key lookup failed" in r.getMessage()]
            assert [r.getMessage() for r in failed] == ["key lookup failed: OperationalError"]
            assert isinstance(await quickly(tenancy.authenticate(secret)), Tenant)
            assert reads.count == 2  # no read again before the entry expires
            await until(read_at + 2.1)
            down = await quickly(tenancy.authenticate(secret))
            assert isinstance(down, ServiceUnavailable) and down.code == "key_store_unavailable"
            assert not unhandled  # no task's exception left unretrieved

    with caplog.at_level(logging.ERROR, logger="gateway.tenancy"):
        asyncio.run(run())
