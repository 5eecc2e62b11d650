"""Every page of the UI in a real browser: it loads, shows what it is for, logs no console
error and fetches nothing from outside the machine (the gateway must work offline).

The browser blocks and records any request to a host other than 127.0.0.1, so a script, font,
icon or avatar from a CDN fails this test as it would fail an offline visitor.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from tests.support.browser import WAIT_MS, chromium, needs_chromium, watched_page
from tests.test_ui import KEY, gateway_with_ui

pytestmark = needs_chromium

# page path -> an element that only shows once the page works (filled from the gateway)
PAGES = {
    "/ui/": "#chat",
    "/ui/studio": "#studio-chatbot",
    "/ui/arena": "#arena-prompt",
    "/ui/dashboard": "#dashboard-status",
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def ui_url() -> Iterator[str]:
    with gateway_with_ui(providers={"echo": {"type": "echo"}}) as url:
        yield url


@pytest.mark.parametrize("path", list(PAGES))
def test_page_loads_offline_without_console_errors(
    browser: Browser, ui_url: str, path: str
) -> None:
    with watched_page(browser) as (page, watch):
        page.goto(f"{ui_url}{path}")
        expect(page.locator(PAGES[path]).first).to_be_visible(timeout=WAIT_MS)
        # the navigation bar names every page
        for name in ("Chat", "Studio", "Arena", "Dashboard"):
            expect(page.get_by_role("link", name=name, exact=True).first).to_be_visible()
        if path != "/ui/dashboard":
            # the model list came from the gateway's /v1/models, over HTTP
            expect(page.locator("#model input").first).to_have_value("echo/echo", timeout=WAIT_MS)
    assert watch.external == [], f"{path} fetched from outside: {watch.external}"
    assert watch.errors == [], f"{path} logged errors: {watch.errors}"


@pytest.fixture(scope="module")
def keyed_ui_url() -> Iterator[str]:
    """GATEWAY_API_KEYS set: every page asks the visitor for a key (no server key exists)."""
    providers = {"echo": {"type": "echo"}}
    with gateway_with_ui(require_key=True, api_keys=[KEY], providers=providers) as url:
        yield url


def test_studio_and_arena_use_the_key_the_visitor_types(
    browser: Browser, keyed_ui_url: str
) -> None:
    with watched_page(browser) as (page, _):
        page.goto(f"{keyed_ui_url}/ui/studio")
        model = page.locator("#studio-settings #model input")
        key = page.locator("#studio-settings .api-key input")
        expect(key).to_be_visible(timeout=WAIT_MS)
        expect(model).to_have_value("")  # no key, no model list
        key.fill(KEY)
        key.press("Enter")
        expect(model).to_have_value("echo/echo", timeout=WAIT_MS)
        page.fill("#studio-input textarea", "keyed hello")
        page.press("#studio-input textarea", "Enter")
        expect(page.locator("#studio-chatbot").get_by_text("finished")).to_be_visible(
            timeout=WAIT_MS
        )

        page.goto(f"{keyed_ui_url}/ui/arena")
        key = page.locator(".api-key input").first
        expect(key).to_be_visible(timeout=WAIT_MS)
        key.fill("sk-wrong")
        page.fill("#arena-prompt textarea", "anyone there")
        page.locator("#model input").fill("echo/echo")
        page.locator("#arena-model-2 input").fill("echo/echo")
        page.locator("#arena-model-2 input").press("Enter")
        page.click("#arena-send")
        expect(page.locator("#arena-stats-0")).to_contain_text("refused the key", timeout=WAIT_MS)
