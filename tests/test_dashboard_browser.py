"""The Dashboard page in a real browser (Debian's chromium, driven by playwright).

The page is the one ``webui.dashboard.build`` makes, in a Gradio app of its own, reading a real
gateway's ``/metrics`` and admin API over HTTP. Known traffic goes through the gateway; the page
must show it: the deployments and their breakers (one tripped open on purpose), the request and
error rates, the admin key asked for when the gateway wants one, and with teams on, a virtual
key's requests and cost per model from the usage ledger (without them, how to turn them on).

Synchronisation is by condition: playwright's ``expect`` polls the page until the next scrape
(every two seconds) shows what is expected, up to :data:`WAIT_MS`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import pytest
from fastapi import FastAPI
from playwright.sync_api import Page, expect

import ui
from gateway.app import create_app
from tests.conftest import fault_provider, settings
from tests.support.browser import (
    WAIT_MS,
    check_after_the_test,
    chromium,
    needs_chromium,
    watched_page,
)
from tests.support.clients import sdk
from tests.support.fault_upstream import FaultUpstream
from tests.support.servers import free_port, serve_in_thread
from tests.support.services import Admin
from webui import dashboard

ADMIN_KEY = "admin-key-for-the-dashboard-0123456789"
MESSAGE = [{"role": "user", "content": "one two three four"}]

pytestmark = needs_chromium


@pytest.fixture
def page(request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page that must end with no console error and no request off this host."""
    with chromium() as browser, watched_page(browser) as (page, watch):
        expect.set_options(timeout=WAIT_MS)
        check_after_the_test(request, watch)
        yield page


@contextlib.contextmanager
def gateway_and_dashboard(**values: Any) -> Iterator[tuple[str, str]]:
    """A gateway, and a Gradio app with the dashboard pointed at it: their base URLs."""
    with serve_in_thread(create_app(settings(**values))) as gateway_url:
        with gr.Blocks() as demo:
            dashboard.build(gateway_url)
        host = gr.mount_gradio_app(FastAPI(), demo, path="/ui")
        with serve_in_thread(host) as ui_url:
            yield gateway_url, ui_url


def chat(gateway_url: str, model: str, *, stream: bool = True, **headers: str) -> int:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "one two three four"}],
        "stream": stream,
    }
    with httpx.stream(
        "POST", f"{gateway_url}/v1/chat/completions", json=body, headers=headers, timeout=10
    ) as response:
        response.read()
        return response.status_code


def test_dashboard_shows_deployments_breakers_rates_and_errors(
    page: Page, fault_upstream: tuple[str, FaultUpstream], upstream: FaultUpstream
) -> None:
    providers = {
        "fault": fault_provider(
            fault_upstream[0], models=["ok", "status:500"], max_retries=0, breaker_threshold=2
        )
    }
    with gateway_and_dashboard(providers=providers) as (gateway, ui):
        page.goto(f"{ui}/ui/")
        status = page.locator("#dashboard-status")
        expect(status).to_contain_text("Updated")
        table = page.locator("#dashboard-deployments")
        expect(table).to_contain_text("fault/ok")
        expect(table).to_contain_text("fault/status:500")
        expect(table).not_to_contain_text("open")

        for _ in range(6):
            assert chat(gateway, "fault/ok") == 200
        # two failures open the breaker; the third is refused by it, with its own code
        assert [chat(gateway, "fault/status:500") for _ in range(3)] == [502, 502, 503]

        # requests and errors show in the line of rates, the opened breaker in the table
        expect(status).to_contain_text(re.compile(r"[1-9][0-9.]* requests/s|0\.[1-9]\d requests/s"))
        expect(status).to_contain_text(
            re.compile(r"0\.[0-9]*[1-9][0-9]* errors/s|[1-9][0-9.]* errors/s")
        )
        expect(status).to_contain_text(re.compile(r"TTFT p50 / p95 \d+ / \d+ ms"))
        # (row by row as the visible table reads; Gradio keeps a hidden copy for sizing)
        expect(table).to_contain_text(re.compile(r"fault/status:500\s+open\s"))
        expect(table).to_contain_text(re.compile(r"fault/ok\s+closed\s"))
        expect(page.locator("#dashboard-pools")).to_contain_text("fault")
        # the charts drew points (each one labelled for screen readers with its values)
        for chart, series in (
            ("requests", "requests/s"),
            ("tokens", "tokens/s"),
            ("ttft", "p95"),
            ("errors", "upstream_error"),
        ):
            point = page.locator(f"#dashboard-{chart} [aria-label*='series: {series}']")
            expect(point.first).to_be_attached()
        # and the requests/s line rose above zero (polled: the chart redraws after the text)
        page.wait_for_function(
            """() => [...document.querySelectorAll("#dashboard-requests [aria-label]")]
                .some(n => /series: requests\\/s/.test(n.getAttribute("aria-label"))
                        && /rate: (0\\.\\d*[1-9]|[1-9])/.test(n.getAttribute("aria-label")))""",
            timeout=WAIT_MS,
        )


def test_dashboard_with_an_admin_key_shows_metrics_and_usage_per_key_behind_it(
    page: Page, tmp_path: Path
) -> None:
    # an admin key puts /metrics behind it by default (GATEWAY_METRICS_AUTH unset), and turns
    # teams on: a virtual key made through the admin API, used with the openai SDK
    teams = {
        "admin_key": ADMIN_KEY,
        "database_url": f"sqlite:///{tmp_path / 'gateway.db'}",
        "prices": {"echo/echo": {"input": 1.0, "output": 2.0}},
    }
    with gateway_and_dashboard(**teams) as (gateway, ui):
        assert httpx.get(f"{gateway}/metrics").status_code == 401
        alice = Admin(gateway, key=ADMIN_KEY).create(name="alice-dashboard")
        client = sdk(gateway, alice["key"])
        for _ in range(3):
            client.chat.completions.create(model="echo/echo", messages=MESSAGE)  # type: ignore[arg-type]
        ledger = Admin(gateway, key=ADMIN_KEY).wait_requests(3, group_by="key,model")
        assert [(g["key"], g["model"], g["requests"]) for g in ledger["data"]] == [
            (alice["id"], "echo/echo", 3)
        ]
        cost = ledger["data"][0]["cost_micro_usd"]
        assert cost > 0

        page.goto(f"{ui}/ui/")
        status = page.locator("#dashboard-status")
        usage_status = page.locator("#dashboard-usage-status")
        usage = page.locator("#dashboard-usage")
        expect(status).to_contain_text("need the admin key")
        expect(usage_status).to_contain_text("needs the gateway's admin key")
        expect(page.locator("#dashboard-deployments")).not_to_contain_text("echo/echo")

        key = page.locator("#dashboard-admin-key input, #dashboard-admin-key textarea").first
        wrong = "not-the-admin-key-0123"
        key.fill(wrong)
        key.press("Enter")
        expect(status).to_contain_text("refused")
        expect(usage_status).to_contain_text("The admin key was refused")
        for shown in (status, usage_status, usage):
            expect(shown).not_to_contain_text(wrong)
        expect(usage).not_to_contain_text("alice-dashboard")

        key.fill(ADMIN_KEY)
        key.press("Enter")
        expect(status).to_contain_text("Updated")
        expect(page.locator("#dashboard-deployments")).to_contain_text("echo/echo")
        # the key's name and id, its model, 3 requests, their tokens and their cost
        row = re.compile(
            rf"alice-dashboard\s+{re.escape(alice['id'])}\s+echo/echo\s+3\s+\d+\s+\d+\s+0\s+0\s+"
            + re.escape(f"{cost / 1_000_000:.6f}")
        )
        expect(usage).to_contain_text(row)
        expect(usage).to_contain_text(re.compile(r"Total\s+3\s"))
        expect(usage_status).to_contain_text("Last day, updated")
        page.get_by_label("Last hour").check()
        expect(usage_status).to_contain_text("Last hour, updated")
        expect(usage).to_contain_text(row)
        for shown in (status, usage_status, usage):
            expect(shown).not_to_contain_text(ADMIN_KEY)
            expect(shown).not_to_contain_text(alice["key"])


def test_dashboard_page_of_the_mounted_ui(page: Page) -> None:
    """The page as ``llm-gateway`` serves it: /ui/dashboard, next to the other pages."""
    port = free_port()
    app = create_app(settings(), open_prefixes=("/ui",))
    ui.mount(app, gateway_url=f"http://127.0.0.1:{port}", api_key=None, require_key=False)
    with serve_in_thread(app, port=port) as url:
        assert chat(url, "echo/echo") == 200
        page.goto(f"{url}/ui/dashboard")
        expect(page.locator("#dashboard-status")).to_contain_text("Updated")
        expect(page.locator("#dashboard-deployments")).to_contain_text(
            re.compile(r"echo/echo\s+closed\s")
        )
        # no admin key: no admin API, and the usage section says how to turn teams on
        expect(page.locator("#dashboard-usage-status")).to_contain_text(
            "Teams are off on this gateway"
        )
        expect(page.locator("#dashboard-usage-status")).to_contain_text("GATEWAY_ADMIN_KEY")
