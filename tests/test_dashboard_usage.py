"""The dashboard's usage table (webui/dashboard_usage.py), built from a real gateway's admin API:
virtual keys made through it, requests made with them through the openai SDK, and the ledger's
sums read back over HTTP as the page reads them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.responses import PlainTextResponse

from gateway.app import create_app
from tests.conftest import settings
from tests.support.clients import sdk
from tests.support.servers import free_port, serve_in_thread
from tests.support.services import ADMIN_KEY, Admin
from webui.dashboard import scrape
from webui.dashboard_usage import (
    BAD_ANSWER,
    HEADERS,
    REFUSED,
    TEAMS_OFF,
    Usage,
    admin_headers,
    fetch,
    key_name,
    notes,
    table,
    usd,
    view,
)

STATIC_KEY = "static-client-key-for-the-dashboard-0123"
# $1 and $2 per million tokens: one micro-USD per input token, two per output token, so the
# expected cost follows from the token counts alone.
PRICES = {"echo/echo": {"input": 1.0, "output": 2.0}}
MESSAGE = [{"role": "user", "content": "one two three four five"}]


@pytest.fixture(scope="module")
def teams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A gateway with teams on, and known traffic in its ledger: alice 3 requests, bob 1 (then
    revoked), carol none, the static key 1 to a model without a price."""
    db = tmp_path_factory.mktemp("dashboard-usage") / "gateway.db"
    gateway = settings(
        api_keys=[STATIC_KEY],
        admin_key=ADMIN_KEY,
        database_url=f"sqlite:///{db}",
        prices=PRICES,
        providers={"echo": {"type": "echo"}, "free": {"type": "echo", "models": ["echo"]}},
    )
    with serve_in_thread(create_app(gateway)) as url:
        admin = Admin(url)
        keys = {name: admin.create(name=name) for name in ("alice", "bob", "carol")}
        for name, model, count in (("alice", "echo/echo", 3), ("bob", "echo/echo", 1)):
            client = sdk(url, keys[name]["key"])
            for _ in range(count):
                client.chat.completions.create(model=model, messages=MESSAGE)  # type: ignore[arg-type]
        sdk(url, STATIC_KEY).chat.completions.create(model="free/echo", messages=MESSAGE)  # type: ignore[arg-type]
        assert admin.client.delete(f"/admin/keys/{keys['bob']['id']}").status_code == 200
        assert admin.wait_requests(5)["total"]["requests"] == 5
        yield {"url": url, "admin": admin, "keys": keys}


def read(url: str, key: str = ADMIN_KEY, **extra: Any) -> Usage | str:
    async def go() -> Usage | str:
        async with httpx.AsyncClient(timeout=10) as client:
            options: dict[str, Any] = {"seconds": 3_600.0, "now": time.time(), **extra}
            return await fetch(client, url, key, **options)

    return asyncio.run(go())


def test_the_table_has_a_row_per_key_and_model_with_exact_costs_and_totals(
    teams: dict[str, Any],
) -> None:
    usage = read(teams["url"])
    assert isinstance(usage, Usage), usage
    frame = table(usage)
    assert list(frame.columns) == HEADERS
    rows = [dict(zip(HEADERS, row, strict=True)) for row in frame.values.tolist()]
    alice, bob = teams["keys"]["alice"]["id"], teams["keys"]["bob"]["id"]
    assert [(r["key"], r["key id"], r["model"], r["requests"]) for r in rows] == [
        ("alice", alice, "echo/echo", 3),  # the costliest first
        ("bob (revoked)", bob, "echo/echo", 1),
        ("static key #0", "static-0", "free/echo", 1),  # unpriced: cost 0, last
        ("Total", "", "", 5),
    ]
    by_key = {
        row["key"]: row
        for row in teams["admin"].usage(group_by="key")["data"]  # the ledger, read otherwise
    }
    for row, key_id in zip(rows[:3], (alice, bob, "static-0"), strict=True):
        sums = by_key[key_id]
        assert row["input tokens"] == sums["prompt_tokens"] > 0
        assert row["output tokens"] == sums["completion_tokens"] > 0
        assert row["cached tokens"] == row["reasoning tokens"] == 0
    for row in rows[:2]:  # one micro-USD an input token, two an output token
        micro = row["input tokens"] + 2 * row["output tokens"]
        assert row["cost (USD)"] == f"{micro / 1_000_000:.6f}"
    assert rows[2]["cost (USD)"] == "0.000000"
    total = rows[3]
    assert total["input tokens"] == sum(r["input tokens"] for r in rows[:3])
    assert total["output tokens"] == sum(r["output tokens"] for r in rows[:3])
    cost = sum(r["input tokens"] + 2 * r["output tokens"] for r in rows[:2])
    assert total["cost (USD)"] == f"{cost / 1_000_000:.6f}"
    # the static key's model has no price: the figures say so
    assert "1 request(s) were of models without a price" in notes(usage)


def test_the_window_bounds_the_figures(teams: dict[str, Any]) -> None:
    # an hour's window that starts after every request: nothing, totals of zero
    later = read(teams["url"], now=time.time() + 7_200)
    assert isinstance(later, Usage), later
    assert [row[0] for row in table(later).values.tolist()] == ["Total"]
    assert table(later).values.tolist()[0][3:] == [0, 0, 0, 0, 0, "0.000000"]
    assert notes(later) == ""


def test_key_names_are_read_page_by_page(teams: dict[str, Any]) -> None:
    usage = read(teams["url"], page_size=1)  # three keys: three pages
    assert isinstance(usage, Usage), usage
    assert usage.names[teams["keys"]["alice"]["id"]] == "alice"
    assert usage.names[teams["keys"]["bob"]["id"]] == "bob (revoked)"


def test_a_missing_or_wrong_admin_key_is_reported_never_shown(teams: dict[str, Any]) -> None:
    assert read(teams["url"], key="") == (
        "🔑 Usage per key needs the gateway's admin key: enter it above."
    )
    wrong = "wrong-admin-key-0123456789"
    assert read(teams["url"], key=wrong) == REFUSED == "🔑 The admin key was refused."
    # a client key is no admin key either (and, like any key, is not echoed back)
    assert read(teams["url"], key=STATIC_KEY) == REFUSED
    assert read(teams["url"], key=teams["keys"]["alice"]["key"]) == REFUSED


def test_a_key_no_header_can_carry_is_refused_without_being_sent(teams: dict[str, Any]) -> None:
    # (httpx would raise UnicodeEncodeError on such a header: an exception in the page)
    for typed in ("clé-admin", "ключ"):
        assert read(teams["url"], key=typed) == REFUSED

        async def metrics(typed: str = typed) -> tuple[str | None, str]:
            async with httpx.AsyncClient(timeout=10) as client:
                return await scrape(client, f"{teams['url']}/metrics", typed)

        assert asyncio.run(metrics()) == (None, REFUSED)
    assert admin_headers("  ") == {}
    assert admin_headers(f" {ADMIN_KEY} ") == {"authorization": f"Bearer {ADMIN_KEY}"}


def test_an_answer_that_is_not_the_admin_apis_json_is_reported() -> None:
    """A proxy or another program on the gateway's address: a line in the section, never an
    exception in the page."""
    odd = FastAPI()
    answers: list[Any] = [
        {"data": [{"key": "key_a", "model": "m"}], "total": {}},  # sums missing
        {"data": "none"},
        ["a", "list"],
        PlainTextResponse("not json"),
    ]

    @odd.get("/admin/usage")
    async def usage() -> Any:
        return answers[0]

    @odd.get("/admin/keys")
    async def keys() -> Any:
        return {"data": [], "has_more": False, "last_id": None}

    with serve_in_thread(odd) as url:
        first = read(url)
        assert isinstance(first, Usage)  # it read; the table cannot be built
        assert view(first, "Last hour", time.time())[0] == BAD_ANSWER
        for answer in answers[1:]:
            answers[0] = answer
            assert read(url) == BAD_ANSWER


def test_without_an_admin_key_the_section_says_teams_are_off() -> None:
    with serve_in_thread(create_app(settings())) as url:
        assert httpx.get(f"{url}/admin/usage").status_code == 404
        assert read(url, key="") == TEAMS_OFF
        assert read(url, key="anything") == TEAMS_OFF
    assert "GATEWAY_ADMIN_KEY" in TEAMS_OFF


def test_an_unreachable_gateway_is_reported() -> None:
    problem = read(f"http://127.0.0.1:{free_port()}")
    assert isinstance(problem, str)
    assert problem.startswith("⚠ cannot reach the gateway")


def test_money_and_names() -> None:
    assert usd(0) == "0.000000"
    assert usd(1) == "0.000001"
    assert usd(1_234_567_890) == "1,234.567890"
    assert usd(10**17 + 1) == "100,000,000,000.000001"  # exact past a float's 2**53
    assert key_name("key_abc", {"key_abc": "alice"}) == "alice"
    assert key_name("static-2", {}) == "static key #2"
    assert key_name("key_gone", {}) == "(unknown key)"
    assert key_name(None, {}) == "(no key)"
