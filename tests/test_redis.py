"""Two gateway processes sharing one real ``redis-server``: they admit what one gateway would,
revoke on both, survive a replica killed with reservations open, and keep answering when
Redis stops, by the documented failure policy, recovering by themselves when it is back."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from openai.types.chat import ChatCompletionMessageParam

from gateway.tenancy import redis_limits
from tests.support.clients import sdk
from tests.support.redis_relay import RedisRelay, redis_relay
from tests.support.servers import GATEWAY, ProcessServer, free_port, spawn
from tests.support.services import (
    ADMIN_KEY,
    MESSAGE,
    Admin,
    RedisServer,
    redis_available,
    redis_server,
    stream_chat,
)

pytestmark = pytest.mark.skipif(
    not redis_available(), reason="redis-server is missing: run tests/setup-services.sh"
)


def gateway_env(database_url: str, redis_url: str | None, **extra: str) -> dict[str, str]:
    env = {
        "GATEWAY_ADMIN_KEY": ADMIN_KEY,
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_PRICES": json.dumps(
            {"echo/echo": {"input": 1, "output": 2}, "slow/echo": {"input": 1, "output": 1}}
        ),
        "GATEWAY_PROVIDERS__ECHO__TYPE": "echo",
        "GATEWAY_PROVIDERS__SLOW__TYPE": "echo",
        "GATEWAY_PROVIDERS__SLOW__MODELS": '["echo"]',
        "GATEWAY_PROVIDERS__SLOW__CHUNK_DELAY_MS": "30",
        "GATEWAY_EXPECTED_REPLICAS": "2",
        "GATEWAY_ACCESS_LOG": "false",
        **extra,
    }
    if redis_url is not None:
        env["GATEWAY_REDIS_URL"] = redis_url
    return env


@contextlib.contextmanager
def replicas(tmp_path: Path, env: dict[str, str], count: int = 2) -> Iterator[list[ProcessServer]]:
    with contextlib.ExitStack() as stack:
        servers = []
        for _ in range(count):
            port = free_port()
            servers.append(
                stack.enter_context(
                    spawn(
                        [GATEWAY, "--no-ui", "--port", str(port)],
                        env=env,
                        ready_url=f"http://127.0.0.1:{port}/health",
                        cwd=tmp_path,
                        timeout=40,
                    )
                )
            )
        yield servers


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="module")
def pair(
    shared_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ProcessServer]]:
    folder = tmp_path_factory.mktemp("pair")
    env = gateway_env(f"sqlite:///{folder / 'shared.db'}", shared_redis.url)
    with replicas(folder, env) as servers:
        yield servers


def chat(url: str, key: str, **extra: Any) -> Any:
    return sdk(url, key).chat.completions.create(
        model=extra.pop("model", "echo/echo"), messages=extra.pop("messages", MESSAGE), **extra
    )


def test_two_gateways_share_rpm(pair: list[ProcessServer]) -> None:
    a, b = pair
    key = Admin(a.base_url).create(name="rpm", rpm=6)["key"]
    outcomes = []
    for i in range(10):
        try:
            chat((a, b)[i % 2].base_url, key)
            outcomes.append("ok")
        except openai.RateLimitError as exc:
            outcomes.append(str(exc.code))
    assert outcomes == ["ok"] * 6 + ["rate_limit_exceeded"] * 4


def test_two_gateways_never_overshoot_a_budget_together(pair: list[ProcessServer]) -> None:
    a, b = pair
    admin = Admin(a.base_url)
    # 34 input + 5 output tokens reserved at $1/M: 39 micro-USD; 10 used. Fits 10 reservations.
    created = admin.create(name="budget", budget_usd=0.00039, max_parallel=40)

    async def run() -> list[tuple[str, Any]]:
        return await asyncio.gather(
            *(stream_chat((a, b)[i % 2].base_url, created["key"], max_tokens=5) for i in range(50))
        )

    results = asyncio.run(run())
    ok = [usage for code, usage in results if code == "ok"]
    assert {code for code, _ in results} <= {"ok", "insufficient_quota", "rate_limit_exceeded"}
    assert 10 <= len(ok) < 50
    total = admin.wait_requests(50, key_id=created["id"])["total"]
    assert total["requests"] == 50  # both replicas' rows, in the one ledger
    assert total["cost_micro_usd"] == 10 * len(ok) <= 390


def test_max_parallel_is_shared(pair: list[ProcessServer]) -> None:
    a, b = pair
    key = Admin(a.base_url).create(name="parallel", max_parallel=2)["key"]

    async def run() -> list[str]:
        long: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": " ".join(["word"] * 20)}  # 600 ms each: they overlap
        ]
        results = await asyncio.gather(
            *(stream_chat((a, b)[i % 2].base_url, key, messages=long) for i in range(6))
        )
        return [code for code, _ in results]

    codes = asyncio.run(run())
    assert 1 <= codes.count("ok") < 6
    assert set(codes) == {"ok", "rate_limit_exceeded"}


def test_a_revoked_key_stops_on_every_replica(pair: list[ProcessServer]) -> None:
    a, b = pair
    admin = Admin(a.base_url)
    created = admin.create(name="revoke-me", rpm=1000)
    chat(b.base_url, created["key"])
    assert admin.client.delete(f"/admin/keys/{created['id']}").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        chat(a.base_url, created["key"])
    for _ in range(100):  # B's cache holds a key for at most a second
        try:
            chat(b.base_url, created["key"])
        except openai.AuthenticationError as exc:
            assert exc.code == "api_key_revoked"
            break
        time.sleep(0.05)
    else:
        pytest.fail("the other replica kept the revoked key")


def test_nothing_in_redis_is_a_key(pair: list[ProcessServer], shared_redis: RedisServer) -> None:
    created = Admin(pair[0].base_url).create(name="secret", rpm=5, budget_usd=1)
    chat(pair[1].base_url, created["key"])
    dump = shared_redis.dump()
    assert created["id"].encode() in dump  # counters are keyed by the key's id...
    assert created["key"].encode() not in dump  # ...never by its secret
    assert created["key"][10:-4].encode() not in dump


def test_redis_adds_one_round_trip_to_a_request(shared_redis: RedisServer, tmp_path: Path) -> None:
    """A relay lets Redis's replies through one at a time: with one let through, a request of
    a key with every limit is answered, plain or streamed, by the shared counters. Its
    settlement follows the answer. Redis's time limit is longer than the test waits, so a
    request that waited for a second reply, before or after its answer, would never end."""
    admit, settle = (_sha1(source) for source in (redis_limits._ADMIT, redis_limits._SETTLE))
    with redis_relay(shared_redis.port) as relay:
        env = gateway_env(
            f"sqlite:///{tmp_path / 'relay.db'}", relay.url, GATEWAY_REDIS_TIMEOUT="60"
        )
        with replicas(tmp_path, env, count=1) as (gateway,):
            url = gateway.base_url
            created = Admin(url).create(
                name="trips", rpm=1000, tpm=1_000_000, max_parallel=10, budget_usd=1
            )
            key = created["key"]
            chat(url, key)  # the first builds the key's budget counter from the ledger
            relay.wait_quiet(lambda: settle in relay.scripts())
            start = relay.sent()
            for done, stream in enumerate((False, True, False)):
                before = relay.sent()
                relay.hold()
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    answer = pool.submit(_ask, url, key, stream)
                    relay.wait_sent(before + 1)
                    assert relay.scripts(before) == [admit]  # the admission, alone
                    delivered = relay.delivered
                    relay.release(1)
                    status, left = answer.result(timeout=10)
                assert relay.delivered == delivered + 1
                relay.open()
                assert status == 200
                assert left is not None and int(left) < 1000
                relay.wait_quiet(functools.partial(_ran, relay, start, settle, done + 1))
            assert relay.scripts(start) == [admit, settle] * 3


def _ran(relay: RedisRelay, start: int, script: str, times: int) -> bool:
    return relay.scripts(start).count(script) >= times


def _sha1(source: str) -> str:
    return hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


def _ask(url: str, key: str, stream: bool) -> tuple[int, str | None]:
    """A chat, read to its end: its status and remaining requests."""
    body = {"model": "echo/echo", "messages": MESSAGE, "stream": stream, "max_tokens": 5}
    auth = {"authorization": f"Bearer {key}"}
    chat_url = f"{url}/v1/chat/completions"
    with httpx.stream("POST", chat_url, json=body, headers=auth, timeout=30) as r:
        r.read()
    return r.status_code, r.headers.get("x-ratelimit-remaining-requests")


def test_redis_stopped_mid_run(tmp_path: Path) -> None:
    with redis_server() as server:
        env = gateway_env(f"sqlite:///{tmp_path / 'g.db'}", server.url)
        with replicas(tmp_path, env, count=1) as (gateway,):
            admin = Admin(gateway.base_url)
            rated = admin.create(name="rated", rpm=10)["key"]
            budgeted = admin.create(name="budgeted", budget_usd=1)["key"]
            chat(gateway.base_url, rated)
            chat(gateway.base_url, budgeted)
            server.freeze()  # connections stay open; nothing answers
            try:
                # Rate limits fall back to this replica's share (10 / 2 replicas = 5).
                outcomes = []
                for _ in range(8):
                    try:
                        chat(gateway.base_url, rated)
                        outcomes.append("ok")
                    except openai.RateLimitError:
                        outcomes.append("limited")
                assert outcomes == ["ok"] * 5 + ["limited"] * 3
                # Budgets fail closed, fast.
                for _ in range(3):
                    with pytest.raises(openai.InternalServerError) as caught:
                        chat(gateway.base_url, budgeted)
                    assert caught.value.status_code == 503
                    assert caught.value.code == "limits_unavailable"
                    assert caught.value.response.headers["retry-after"] == "1"
            finally:
                server.thaw()
            for _ in range(100):  # the breaker probes again within a second
                try:
                    chat(gateway.base_url, budgeted)
                    break
                except openai.InternalServerError:
                    time.sleep(0.05)
            else:
                pytest.fail("no recovery after Redis came back")
            output = gateway.output()
            assert "Redis unreachable" in output and "Redis answers again" in output


def test_the_other_failure_policies(tmp_path: Path) -> None:
    """While Redis does not answer: rate limits skipped (``open``) or refused with a 503
    (``closed``), budgets counted in process (``open``); a key without limits never asks
    Redis. The shared limits are back when Redis is."""
    with redis_server() as server:
        (tmp_path / "lenient").mkdir()
        (tmp_path / "strict").mkdir()
        lenient_env = gateway_env(
            f"sqlite:///{tmp_path / 'lenient.db'}",
            server.url,
            GATEWAY_RATE_LIMIT_FAILURE_MODE="open",
            GATEWAY_BUDGET_FAILURE_MODE="open",
        )
        strict_env = gateway_env(
            f"sqlite:///{tmp_path / 'strict.db'}",
            server.url,
            GATEWAY_RATE_LIMIT_FAILURE_MODE="closed",
        )
        with (
            replicas(tmp_path / "lenient", lenient_env, count=1) as (lenient,),
            replicas(tmp_path / "strict", strict_env, count=1) as (strict,),
        ):
            admin = Admin(lenient.base_url)
            rated = admin.create(name="rated", rpm=2, tpm=100_000, max_parallel=4)["key"]
            # 39 micro-USD reserved and 10 spent a request: 55 fits two, not a third.
            budgeted = admin.create(name="budgeted", budget_usd=0.000055)["key"]
            strict_admin = Admin(strict.base_url)
            strict_rated = strict_admin.create(name="rated", rpm=10)["key"]
            strict_budgeted = strict_admin.create(name="budgeted", budget_usd=1)["key"]
            free = strict_admin.create(name="free")["key"]
            for _ in range(2):
                chat(lenient.base_url, rated)
            with pytest.raises(openai.RateLimitError):
                chat(lenient.base_url, rated)  # the shared minute is spent
            server.freeze()
            try:
                for _ in range(4):  # skipped while Redis is away
                    chat(lenient.base_url, rated)
                outcomes = []
                for _ in range(3):
                    try:
                        chat(lenient.base_url, budgeted, model="slow/echo", max_tokens=5)
                        outcomes.append("ok")
                    except openai.RateLimitError as exc:
                        outcomes.append(str(exc.code))
                assert outcomes == ["ok", "ok", "insufficient_quota"]  # counted here
                for key in (strict_rated, strict_budgeted):
                    with pytest.raises(openai.InternalServerError) as caught:
                        chat(strict.base_url, key)
                    assert caught.value.status_code == 503
                    assert caught.value.code == "limits_unavailable"
                assert chat(strict.base_url, free).choices[0].message.content
            finally:
                server.thaw()
            for _ in range(100):  # the breaker probes again within a second
                try:
                    chat(lenient.base_url, rated)
                    time.sleep(0.05)
                except openai.RateLimitError as exc:
                    assert exc.code == "rate_limit_exceeded"  # shared again: still spent
                    break
            else:
                pytest.fail("the shared rate limit did not come back with Redis")
            assert "Redis answers again" in lenient.output()


def test_budget_counters_are_rebuilt_from_the_ledger(tmp_path: Path) -> None:
    """A Redis that lost everything (restarted without persistence) does not forget what
    was spent: the counter is rebuilt from the ledger."""
    server = RedisServer()
    server.start()
    try:
        env = gateway_env(f"sqlite:///{tmp_path / 'g.db'}", server.url)
        with replicas(tmp_path, env, count=1) as (gateway,):
            admin = Admin(gateway.base_url)
            # 39 reserved and 10 spent per request: 55 fits 2 requests (0 + 39 <= 55,
            # 10 + 39 <= 55), not a third (20 + 39 > 55), unless the spending is forgotten.
            created = admin.create(name="rebuilt", budget_usd=0.000055)
            for _ in range(2):
                chat(gateway.base_url, created["key"], model="slow/echo", max_tokens=5)
            admin.wait_requests(2, key_id=created["id"])
            server.stop()
            server.start()  # same port, empty
            for _ in range(100):
                try:
                    chat(gateway.base_url, created["key"], model="slow/echo", max_tokens=5)
                    pytest.fail("the rebuilt counter forgot the spending")
                except openai.RateLimitError as exc:
                    assert exc.code == "insufficient_quota"
                    break
                except openai.InternalServerError:  # until the breaker probes again
                    time.sleep(0.05)
            else:
                pytest.fail("no answer from the budget after Redis came back")
    finally:
        server.stop()


def test_a_killed_replica_does_not_hold_reservations_for_ever(tmp_path: Path) -> None:
    with redis_server() as server:
        env = gateway_env(
            f"sqlite:///{tmp_path / 'g.db'}", server.url, GATEWAY_RESERVATION_TTL="1.5"
        )
        with replicas(tmp_path, env) as (a, b):
            admin = Admin(a.base_url)
            created = admin.create(name="held", max_parallel=2, budget_usd=1)
            long = [{"role": "user", "content": " ".join(["word"] * 300)}]
            streams, clients = [], [httpx.Client(timeout=30) for _ in range(2)]
            for client in clients:
                response = client.send(
                    httpx.Request(
                        "POST",
                        a.base_url + "/v1/chat/completions",
                        headers={"authorization": f"Bearer {created['key']}"},
                        json={"model": "slow/echo", "messages": long, "stream": True},
                    ),
                    stream=True,
                )
                assert response.status_code == 200
                lines = response.iter_lines()  # kept: a dropped iterator closes the stream
                next(lines)
                streams.append((response, lines))
            with pytest.raises(openai.RateLimitError):
                chat(b.base_url, created["key"])  # both slots are taken, on A
            a.terminate(signal.SIGKILL)
            a.wait(10)
            for (response, _), client in zip(streams, clients, strict=True):
                with contextlib.suppress(httpx.HTTPError):
                    response.close()
                client.close()
            counters = redis.Redis.from_url(server.url)
            base = f"gw:{{k:{created['id']}}}:"
            admitted = 0
            for _ in range(200):  # past each reservation's deadline, B's admissions sweep it
                try:
                    chat(b.base_url, created["key"])
                    admitted += 1
                except openai.RateLimitError:
                    pass
                if counters.get(base + "expired") == b"2":
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the dead replica's reservations never expired")
            assert admitted >= 1
            spent = counters.hgetall(base + "spent:total")
            # Charged in full, at $1/M: 2 reservations of 1,510 input tokens (1,499 bytes of
            # words, "user", 4 + 3) and 4,096 output; plus B's requests (15 each) as they settle.
            held = 2 * (1510 + 4096)
            assert held <= int(spent[b"micro"]) <= held + 15 * admitted
            counters.close()
