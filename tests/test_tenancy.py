"""Virtual keys end to end, in process: a real gateway on 127.0.0.1 with the admin API and an
SQLite ledger, the openai SDK as the client. Auth (401), model lists (403), RPM, TPM and
requests in flight (429 with headers), budgets reserved then settled (429
``insufficient_quota``), and the usage ledger."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.app import create_app
from gateway.settings import ConfigError
from tests.conftest import settings
from tests.support.clients import sdk
from tests.support.servers import GATEWAY, free_port, serve_in_thread, spawn
from tests.support.services import ADMIN_KEY, MESSAGE, Admin, ledger_rows, stream_chat

STATIC_KEY = "static-client-key-0123456789"
PRICES = {
    "echo/echo": {"input": 1.0, "output": 2.0},
    "slow/echo": {"input": 1.0, "output": 1.0},
}
LONG = [{"role": "user", "content": " ".join(["word"] * 20)}]


def gateway_settings(db: Path, **extra: Any) -> Any:
    return settings(
        api_keys=[STATIC_KEY],
        admin_key=ADMIN_KEY,
        database_url=f"sqlite:///{db}",
        prices=PRICES,
        providers={
            "echo": {"type": "echo"},
            "slow": {"type": "echo", "chunk_delay_ms": 30, "models": ["echo"]},
        },
        **extra,
    )


@pytest.fixture(scope="module", params=[True, False], ids=["compiled", "python"])
def served(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[str, Path]]:
    """Every test of a served gateway runs twice: with the compiled admission (when it is
    built, as CI requires) and with the Python alone (``GATEWAY_COMPILED_LIMITS=false``)."""
    db = tmp_path_factory.mktemp("teams") / "gateway.db"
    # Without uvicorn's access log, as the gateway's own server runs (gateway.server): the
    # x-ratelimit-* lines then go through gateway.response_head's own path.
    app = create_app(gateway_settings(db, compiled_limits=request.param))
    with serve_in_thread(app, access_log=False) as url:
        yield url, db


@pytest.fixture(scope="module")
def url(served: tuple[str, Path]) -> str:
    return served[0]


@pytest.fixture(scope="module")
def admin(url: str) -> Admin:
    return Admin(url)


def chat(url: str, key: str, **extra: Any) -> Any:
    return sdk(url, key).chat.completions.with_raw_response.create(
        model=extra.pop("model", "echo/echo"), messages=extra.pop("messages", MESSAGE), **extra
    )


# The admin API


def test_admin_routes_take_the_admin_key_only(url: str, admin: Admin) -> None:
    created = admin.create(name="client")
    for headers in (
        {},
        {"authorization": f"Bearer {STATIC_KEY}"},
        {"authorization": f"Bearer {created['key']}"},
        {"authorization": f"Bearer {ADMIN_KEY}x"},
        {"authorization": "Basic abc"},
    ):
        response = httpx.get(url + "/admin/keys", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["type"] == "authentication_error"
    # The admin key is not a client key.
    with pytest.raises(openai.AuthenticationError):
        chat(url, ADMIN_KEY)


def test_without_an_admin_key_there_are_no_admin_routes(tmp_path: Path) -> None:
    with serve_in_thread(create_app(settings(api_keys=[STATIC_KEY]))) as url:
        response = httpx.get(url + "/admin/keys", headers={"authorization": f"Bearer {STATIC_KEY}"})
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "unknown_url"
    assert not (tmp_path / "llm-gateway.db").exists()  # nothing created either


def test_a_key_is_created_shown_once_and_used_from_the_sdk(url: str, admin: Admin) -> None:
    created = admin.create(name="alice", models=["echo/echo"], metadata={"team": "a"})
    secret = created["key"]
    assert secret.startswith("sk-gw-") and len(secret) == 49
    assert created["display"] == f"{secret[:10]}...{secret[-4:]}"
    answer = chat(url, secret).parse()
    assert answer.choices[0].message.content == "one two three four five"
    shown = admin.client.get(f"/admin/keys/{created['id']}").json()
    listed = admin.client.get("/admin/keys", params={"limit": 1000}).json()
    assert secret not in str(shown) and secret not in str(listed)
    assert shown["metadata"] == {"team": "a"} and shown["status"] == "active"
    assert created["id"] in [k["id"] for k in listed["data"]]


def test_every_key_change_is_logged_with_its_request_never_its_secret(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    caplog.set_level(logging.INFO, logger="gateway.admin")
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        body = {"name": "bob\nforged line", "rpm": 7, "metadata": {"note": "private-note"}}
        created = client.post("/admin/keys", json=body, headers={"x-request-id": "audit-1"})
        key_id = created.json()["id"]
        change = {"rpm": 9, "metadata": {"note": "also-private"}}
        client.patch(f"/admin/keys/{key_id}", json=change, headers={"x-request-id": "audit-2"})
        client.delete(f"/admin/keys/{key_id}", headers={"x-request-id": "audit-3"})
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.admin"]
    secret = created.json()["key"]
    assert lines == [
        f"request audit-1: admin: key {key_id} created, name 'bob\\nforged line': rpm=7, "
        "budget_period='total'",
        f"request audit-2: admin: key {key_id} updated: rpm=9; also metadata",
        f"request audit-3: admin: key {key_id} revoked",
    ]
    assert not any(secret in line or "private" in line for line in lines)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "rpm": "5"}, "rpm"),
        ({"name": "x", "rpm": 0}, "rpm"),
        ({"name": "x", "tpm": 1.5}, "tpm"),
        ({"name": "x", "budget_usd": -1}, "budget_usd"),
        ({"name": "x", "budget_period": "week"}, "budget_period"),
        ({"name": "x", "models": "echo/echo"}, "models"),
        ({"name": "x", "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "x", "expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "x", "metadata": {"big": "x" * 20_000}}, "metadata"),
        ({"name": "x", "surprise": 1}, "surprise"),
    ],
)
def test_bad_key_bodies_get_400_and_create_nothing(
    url: str, admin: Admin, body: dict[str, Any], param: str
) -> None:
    before = len(admin.client.get("/admin/keys", params={"limit": 1000}).json()["data"])
    response = admin.client.post("/admin/keys", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert param in (error["param"] or "")
    assert len(admin.client.get("/admin/keys", params={"limit": 1000}).json()["data"]) == before


def test_not_json_and_unknown_ids(admin: Admin) -> None:
    response = admin.client.post(
        "/admin/keys", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    for method in ("GET", "PATCH", "DELETE"):
        response = admin.client.request(method, "/admin/keys/key_nope", json={})
        assert response.status_code == 404, method
        assert response.json()["error"]["code"] == "key_not_found"


def test_unknown_revoked_and_expired_keys_get_401(url: str, admin: Admin) -> None:
    with pytest.raises(openai.AuthenticationError):
        chat(url, "sk-gw-" + "A" * 43)
    created = admin.create(name="revoked")
    chat(url, created["key"])
    revoked = admin.client.delete(f"/admin/keys/{created['id']}")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    with pytest.raises(openai.AuthenticationError) as caught:
        chat(url, created["key"])  # at once in the replica that revoked it
    assert caught.value.code == "api_key_revoked"
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    expiring = admin.create(name="expiring", expires_at=soon)
    chat(url, expiring["key"])
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while datetime.now(UTC) < deadline:  # bounded: the key expires within a second
        try:
            chat(url, expiring["key"])
        except openai.AuthenticationError as exc:
            assert exc.code == "api_key_expired"
            break
        time.sleep(0.1)
    else:
        pytest.fail("the key did not expire")


def test_a_model_outside_the_list_is_403_and_hidden(url: str, admin: Admin) -> None:
    key = admin.create(name="only-echo", models=["echo/*"])["key"]
    chat(url, key)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        chat(url, key, model="slow/echo")
    assert caught.value.code == "model_not_allowed"
    assert [m.id for m in sdk(url, key).models.list()] == ["echo/echo"]
    with pytest.raises(openai.NotFoundError):
        sdk(url, key).models.retrieve("slow/echo")
    every = {m.id for m in sdk(url, STATIC_KEY).models.list()}
    assert {"echo/echo", "slow/echo"} <= every


def test_static_keys_keep_working_without_limits(url: str) -> None:
    for _ in range(5):
        response = chat(url, STATIC_KEY)
        assert "x-ratelimit-limit-requests" not in response.headers


# Rate limits


def test_rpm_limits_with_headers_on_every_response(url: str, admin: Admin) -> None:
    key = admin.create(name="rpm", rpm=3)["key"]
    remaining = []
    for _ in range(3):
        response = chat(url, key)
        assert response.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(int(response.headers["x-ratelimit-remaining-requests"]))
        assert response.headers["x-ratelimit-reset-requests"].endswith("s")
    assert remaining == [2, 1, 0]
    with pytest.raises(openai.RateLimitError) as caught:
        chat(url, key)
    error = caught.value
    assert error.code == "rate_limit_exceeded"
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(error.response.headers["retry-after"]) <= 20
    assert error.response.headers["x-should-retry"] == "true"


def test_a_key_with_both_limits_gets_all_six_headers_once(url: str, admin: Admin) -> None:
    key = admin.create(name="both", rpm=100, tpm=100_000)["key"]
    for stream in (False, True):
        body = {"model": "echo/echo", "messages": MESSAGE, "stream": stream}
        auth = {"authorization": f"Bearer {key}"}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=auth) as r:
            r.read()
        assert r.status_code == 200
        for name in ("requests", "tokens"):
            (limit,) = r.headers.get_list(f"x-ratelimit-limit-{name}")
            (left,) = r.headers.get_list(f"x-ratelimit-remaining-{name}")
            (reset,) = r.headers.get_list(f"x-ratelimit-reset-{name}")
            assert 0 <= int(left) < int(limit) == (100 if name == "requests" else 100_000)
            assert reset.endswith("ms") or reset.endswith("s")
        assert len(r.headers.get_list("x-request-id")) == 1


def test_tpm_counts_reserved_tokens_and_refunds_the_unused(url: str, admin: Admin) -> None:
    key = admin.create(name="tpm", tpm=200)["key"]
    # Reserved: "user" and the content, 4 + 23 bytes, + 4 + 3 = 34 input, 50 output: 84;
    # used: 5 + 5. (Time gives a token back every 0.3 s: hence the ranges.)
    first = chat(url, key, max_tokens=50)
    assert first.headers["x-ratelimit-limit-tokens"] == "200"
    assert 116 <= int(first.headers["x-ratelimit-remaining-tokens"]) <= 120
    second = chat(url, key, max_tokens=50)
    # The first gave back 74 unused tokens when it ended.
    assert 200 - 10 - 84 <= int(second.headers["x-ratelimit-remaining-tokens"]) <= 116
    with pytest.raises(openai.BadRequestError) as caught:
        chat(url, key, max_tokens=500)  # can never fit in the minute: 400, not 429
    assert caught.value.code == "tokens_exceed_limit"
    for _ in range(10):
        try:
            chat(url, key, max_tokens=150)
        except openai.RateLimitError as exc:
            assert exc.code == "rate_limit_exceeded"
            assert "x-ratelimit-remaining-tokens" in exc.response.headers
            break
    else:
        pytest.fail("TPM never limited")


def test_max_parallel_counts_requests_in_flight(url: str, admin: Admin) -> None:
    key = admin.create(name="parallel", max_parallel=2)["key"]

    codes = asyncio.run(_gather(url, key, 6, messages=LONG))  # 600 ms each: they overlap
    assert 1 <= codes.count("ok") < 6  # six at once, two slots
    assert set(codes) == {"ok", "rate_limit_exceeded"}
    # Every slot came back: two more in parallel both pass.
    assert asyncio.run(_gather(url, key, 2)) == ["ok", "ok"]


async def _gather(url: str, key: str, count: int, **extra: Any) -> list[str]:
    results = await asyncio.gather(*(stream_chat(url, key, **extra) for _ in range(count)))
    return [code for code, _ in results]


# Budgets


def test_a_budget_is_never_overshot_by_parallel_streams(url: str, admin: Admin) -> None:
    # Each stream reserves (4 + 23 + 4 + 3) input + 5 output tokens at $1/M: 39 micro-USD,
    # and uses 5 + 5: 10. The budget fits 10 reservations.
    created = admin.create(name="budget", budget_usd=0.00039)

    async def run() -> list[tuple[str, Any]]:
        return await asyncio.gather(
            *(stream_chat(url, created["key"], max_tokens=5) for _ in range(50))
        )

    results = asyncio.run(run())
    ok = [usage for code, usage in results if code == "ok"]
    refused = [headers for code, headers in results if code != "ok"]
    assert 10 <= len(ok) < 50  # not all refused, and the reservations held the line
    assert all(h["x-should-retry"] == "false" for h in refused)
    assert {code for code, _ in results} == {"ok", "insufficient_quota"}
    usage = admin.wait_requests(50, key_id=created["id"])["total"]
    assert usage["cost_micro_usd"] <= 390
    assert usage["cost_micro_usd"] == 10 * len(ok)  # every admitted stream charged once
    assert usage["prompt_tokens"] == sum(u.prompt_tokens for u in ok)
    assert usage["completion_tokens"] == sum(u.completion_tokens for u in ok)


def test_token_budget_refuses_with_insufficient_quota(url: str, admin: Admin) -> None:
    created = admin.create(name="tokens", budget_tokens=100, budget_period="day")
    served = 0
    for _ in range(20):
        try:
            chat(url, created["key"], max_tokens=5)
            served += 1
        except openai.RateLimitError as exc:
            assert exc.code == "insufficient_quota"
            assert exc.type == "insufficient_quota"
            assert exc.response.headers["x-should-retry"] == "false"
            break
    else:
        pytest.fail("the token budget never ran out")
    assert served >= 2
    usage = admin.wait_requests(served + 1, key_id=created["id"])["total"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] == 10 * served <= 100


def test_raising_a_budget_keeps_what_was_spent(url: str, admin: Admin) -> None:
    created = admin.create(name="raise", budget_usd=0.000039)  # one reservation
    chat(url, created["key"], model="slow/echo", max_tokens=5)
    with pytest.raises(openai.RateLimitError):
        chat(url, created["key"], model="slow/echo", max_tokens=5)  # 10 spent + 39 > 39
    patched = admin.client.patch(f"/admin/keys/{created['id']}", json={"budget_usd": 0.000049})
    assert patched.status_code == 200 and patched.json()["budget_usd"] == 0.000049
    chat(url, created["key"], model="slow/echo", max_tokens=5)  # 10 + 39 <= 49
    with pytest.raises(openai.RateLimitError):
        chat(url, created["key"], model="slow/echo", max_tokens=5)  # 20 + 39 > 49


def test_an_unpriced_model_is_refused_for_a_usd_budget(tmp_path: Path) -> None:
    app = create_app(gateway_settings(tmp_path / "g.db").model_copy(update={"prices": {}}))
    with serve_in_thread(app) as url:
        key = Admin(url).create(name="x", budget_usd=1)["key"]
        with pytest.raises(openai.BadRequestError) as caught:
            chat(url, key)
        assert caught.value.code == "model_not_priced"


def test_a_client_that_leaves_is_settled_and_its_slot_freed(url: str, admin: Admin) -> None:
    created = admin.create(name="leaver", max_parallel=1, budget_usd=1)
    long = [{"role": "user", "content": " ".join(["word"] * 200)}]
    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {created['key']}"},
        json={"model": "slow/echo", "messages": long, "stream": True, "max_tokens": 300},
        timeout=10,
    ) as response:
        assert response.status_code == 200
        for _ in response.iter_lines():
            break  # the first piece, then leave
    # The slot comes back once the gateway notices (bounded wait), then a request passes.
    for _ in range(100):
        try:
            chat(url, created["key"], model="echo/echo")
            break
        except openai.RateLimitError:
            time.sleep(0.05)
    else:
        pytest.fail("the parallel slot of a departed client was never freed")
    rows = admin.wait_requests(2, key_id=created["id"])
    assert rows["total"]["requests"] >= 2
    row = _rows(url, created["id"])[0]
    assert row["client_left"] == 1 and row["usage_source"] == "estimated"
    # Charged its reservation (the provider's usage never came): never nothing.
    assert row["cost_micro_usd"] > 0 and row["completion_tokens"] == 300


# The ledger


_SERVED_DB: dict[str, Path] = {}


@pytest.fixture(autouse=True)
def _remember_db(served: tuple[str, Path]) -> None:
    _SERVED_DB[served[0]] = served[1]


def _rows(url: str, key_id: str) -> list[dict[str, Any]]:
    return ledger_rows(_SERVED_DB[url], key_id)


def test_the_ledger_has_one_row_per_request(url: str, admin: Admin) -> None:
    created = admin.create(name="ledger", rpm=100)
    chat(url, created["key"], extra_headers={"x-request-id": "ledger-req-1"})
    asyncio.run(_gather(url, created["key"], 1))
    with pytest.raises(openai.BadRequestError):
        chat(url, created["key"], max_tokens=0)
    embedding = sdk(url, created["key"]).embeddings.create(model="echo/echo", input="a b c")
    admin.wait_requests(4, key_id=created["id"])
    rows = _rows(url, created["id"])
    assert [r["surface"] for r in rows] == ["chat", "chat", "chat", "embeddings"]
    first, streamed, bad, embedded = rows
    assert first["request_id"] == "ledger-req-1"
    assert (first["provider"], first["upstream_model"], first["model"]) == (
        "echo",
        "echo",
        "echo/echo",
    )
    assert (first["status"], first["error_code"], first["attempts"]) == (200, None, 1)
    assert (first["prompt_tokens"], first["completion_tokens"]) == (5, 5)
    assert first["cost_micro_usd"] == 5 * 1 + 5 * 2 and first["priced"] == 1
    assert first["usage_source"] == "provider" and first["client_left"] == 0
    assert first["ttft_ms"] is not None and first["duration_ms"] >= first["ttft_ms"]
    assert streamed["stream"] == 1 and streamed["provider"] == "slow"
    # Refused before any upstream call: recorded, nothing charged.
    assert (bad["status"], bad["attempts"], bad["completion_tokens"], bad["cost_micro_usd"]) == (
        400,
        0,
        0,
        0,
    )
    assert embedded["prompt_tokens"] == embedding.usage.prompt_tokens


def test_usage_groups_filters_and_exact_totals(url: str, admin: Admin) -> None:
    a = admin.create(name="usage-a")
    b = admin.create(name="usage-b")
    for key, model, times in ((a, "echo/echo", 3), (a, "slow/echo", 2), (b, "echo/echo", 1)):
        for _ in range(times):
            chat(url, key["key"], model=model)
    admin.wait_requests(5, key_id=a["id"])
    admin.wait_requests(1, key_id=b["id"])
    by_model = admin.usage(key_id=a["id"], group_by="model")
    rows = {r["model"]: r for r in by_model["data"]}
    assert rows["echo/echo"]["requests"] == 3 and rows["slow/echo"]["requests"] == 2
    assert rows["echo/echo"]["cost_micro_usd"] == 3 * 15  # 5 x $1 + 5 x $2 per million
    assert rows["slow/echo"]["cost_micro_usd"] == 2 * 10
    total = by_model["total"]
    assert total["requests"] == 5 and total["cost_micro_usd"] == 65
    assert total["cost_usd"] == 65 / 1_000_000
    assert total == admin.usage(key_id=a["id"])["total"]
    both = admin.usage(group_by="key,day", since="2000-01-01")
    ids = {r["key"] for r in both["data"]}
    assert {a["id"], b["id"]} <= ids
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert all(r["day"] == today for r in both["data"])
    assert admin.usage(key_id=a["id"], until="2000-01-01")["total"]["requests"] == 0
    assert admin.usage(key_id=b["id"], model="slow/echo")["total"]["requests"] == 0


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"group_by": "week"}, "group_by"),
        ({"group_by": "key,key"}, "group_by"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_usage_queries_get_400(admin: Admin, query: dict[str, str], param: str) -> None:
    response = admin.client.get("/admin/usage", params=query)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_no_plaintext_key_in_the_database(url: str, admin: Admin, served: Any) -> None:
    created = admin.create(name="secret", rpm=10)
    chat(url, created["key"])
    admin.wait_requests(1, key_id=created["id"])
    db_path = served[1]
    blob = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
    assert created["key"].encode() not in blob
    assert created["key"][10:-4].encode() not in blob  # not even the secret's middle


def test_workers_without_redis_say_limits_are_per_process(tmp_path: Path) -> None:
    port = free_port()
    with spawn(
        [GATEWAY, "--workers", "2", "--port", str(port)],
        env={"GATEWAY_ADMIN_KEY": ADMIN_KEY, "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path}/g.db"},
        ready_url=f"http://127.0.0.1:{port}/health",
        cwd=tmp_path,
        timeout=40,
    ) as server:
        key = Admin(server.base_url).create(name="workers", rpm=10)["key"]
        chat(server.base_url, key)  # either worker: the key is in the shared file
        assert "counted per worker process" in server.output()
        assert "GATEWAY_REDIS_URL" in server.output()


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({"database_url": "mysql://db/x"}, "GATEWAY_DATABASE_URL"),
        ({"redis_url": "http://127.0.0.1:1"}, "GATEWAY_REDIS_URL"),
        ({"redis_url": "redis://127.0.0.1:1/zero"}, "GATEWAY_REDIS_URL"),
    ],
)
def test_bad_urls_stop_the_start_in_one_line(values: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        create_app(settings(admin_key=ADMIN_KEY, **values))
    assert variable in str(caught.value)
    assert "zero" not in str(caught.value)  # the URL is not echoed


def test_a_database_down_at_the_start_fails_no_static_request() -> None:
    down = f"postgresql://gateway@127.0.0.1:{free_port()}/gateway"  # nothing listens there
    app = create_app(settings(api_keys=[STATIC_KEY], admin_key=ADMIN_KEY, database_url=down))
    with serve_in_thread(app) as url:
        assert chat(url, STATIC_KEY).parse().choices[0].message.content
        with pytest.raises(openai.InternalServerError) as caught:
            chat(url, "sk-gw-" + "B" * 43)
        assert caught.value.status_code == 503
        assert caught.value.code == "key_store_unavailable"
        response = httpx.post(
            url + "/admin/keys",
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
            json={"name": "later"},
        )
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "database_unavailable"


def test_embeddings_and_a_full_minute_under_tpm(url: str, admin: Admin) -> None:
    key = admin.create(name="tpm-embed", tpm=40)["key"]
    # Embeddings produce no output: the input bound alone is reserved (3 + 3 tokens).
    reply = sdk(url, key).embeddings.with_raw_response.create(model="echo/echo", input="abc")
    assert int(reply.headers["x-ratelimit-remaining-tokens"]) == 40 - 6
    # A chat whose input alone fills the minute leaves no room to answer: 400, not 429.
    with pytest.raises(openai.BadRequestError) as caught:
        chat(url, key, messages=[{"role": "user", "content": "x" * 29}])  # 4 + 29 + 7 = 40
    assert caught.value.code == "tokens_exceed_limit"
