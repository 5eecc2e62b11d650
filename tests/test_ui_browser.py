"""The chat UI in a real browser: Debian's chromium driven by the playwright package.

One visit: a reply streams in (the README's screenshot, docs/ui-streaming.png, is taken then),
a second one is stopped mid-stream and a third is cut short by closing the tab; both must reach
the upstream within a second.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.support.fault_upstream import FaultUpstream
from tests.test_ui import gateway_with_ui, words

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "ui-streaming.png"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)

INPUT = "#chat textarea[data-testid=textbox]"
BOT = "#chat [data-testid=bot]"
STOP = "#chat [data-testid=stop-button]"


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 760})
        finally:
            browser.close()


def send(page: Page, message: str) -> None:
    page.fill(INPUT, message)
    page.press(INPUT, "Enter")


def test_reply_streams_in_and_stop_ends_it_upstream(
    page: Page, fault_upstream: tuple[str, FaultUpstream], upstream: FaultUpstream
) -> None:
    page.set_default_timeout(15_000)
    providers = {
        "echo": {"type": "echo", "chunk_delay_ms": 60},
        "fault": {
            "type": "openai",
            "base_url": fault_upstream[0],
            "api_key": "sk-upstream",
            "models": ["slow:200"],
            "max_retries": 0,
        },
    }
    with gateway_with_ui(providers=providers) as url:
        page.goto(f"{url}/ui/")
        model = page.locator("#model input")
        expect(model).to_have_value("echo/echo")  # filled from GET /v1/models

        first = "Streaming through the gateway, word by word: " + words(40)
        send(page, first)
        reply = page.locator(BOT).first
        expect(reply).to_contain_text("w3 ")
        assert "w39" not in reply.inner_text(), "the reply came in one piece, not streamed"
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
        expect(page.locator(BOT).filter(has_text="tok/s")).to_have_count(1)
        expect(reply).to_have_text(first)

        model.fill("fault/slow:200")
        model.press("Enter")
        send(page, words(30, tag="s"))
        expect(page.locator(BOT).nth(2)).to_contain_text("s2")
        pressed_at = time.monotonic()
        page.click(STOP)
        seen_at = upstream.wait_for_disconnect(timeout=5)
        assert seen_at is not None, "Stop did not reach the upstream"
        assert seen_at - pressed_at < 1.0
        expect(page.locator(BOT).filter(has_text="⚠ stopped")).to_have_count(1)
        expect(page.locator(STOP)).to_be_hidden()
        assert "s29" not in page.locator(BOT).nth(2).inner_text()

        [request] = [r for r in upstream.requests if r.model == "slow:200"]
        # The browser sends history as lists of text blocks; the gateway got plain strings.
        assert request.body["messages"][:2] == [
            {"role": "user", "content": first},
            {"role": "assistant", "content": first},
        ]

        upstream.reset()
        send(page, words(30, tag="t"))
        expect(page.locator(BOT).nth(4)).to_contain_text("t2")
        closed_at = time.monotonic()
        page.close()
        seen_at = upstream.wait_for_disconnect(timeout=5)
        assert seen_at is not None, "closing the tab did not reach the upstream"
        assert seen_at - closed_at < 1.0
