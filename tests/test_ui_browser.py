"""The chat UI in a real browser: Debian's chromium driven by the playwright package.

One visit: a reply streams in (a screenshot is taken then), a second one is stopped mid-stream
and a third is cut short by closing the tab; both must reach the upstream within a second.

The screenshot goes to pytest's ``tmp_path``, so a test run changes no tracked file. To
regenerate the README's ``docs/ui-streaming.png`` from it, run with
``LLM_GATEWAY_UPDATE_SCREENSHOTS=1``.

Synchronisation is by condition, never by sleeping: playwright's ``expect`` polls the page
(up to :data:`WAIT_MS`), and the upstream's disconnects are waited for on its condition
variable. The only timing bounds are the two "within a second" ones, measured on the
monotonic clock from just before the action to the upstream seeing the disconnect.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import fault_provider
from tests.support.browser import (
    DISCONNECT_WITHIN_S,
    VIEWPORT,
    assert_screenshot,
    chromium,
    needs_chromium,
    screenshot_path,
)
from tests.support.fault_upstream import FaultUpstream
from tests.test_ui import gateway_with_ui, words

WAIT_MS = 15_000  # generous: a busy 2-core CI machine, with chromium on it

pytestmark = needs_chromium

INPUT = "#chat textarea[data-testid=textbox]"
BOT = "#chat [data-testid=bot]"
STOP = "#chat button.stop-button"  # the multimodal textbox has no test id on it


@pytest.fixture
def page() -> Iterator[Page]:
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(WAIT_MS)
        yield page


def send(page: Page, message: str) -> None:
    page.fill(INPUT, message)
    page.press(INPUT, "Enter")


def test_reply_streams_in_and_stop_ends_it_upstream(
    page: Page,
    fault_upstream: tuple[str, FaultUpstream],
    upstream: FaultUpstream,
    tmp_path: Path,
) -> None:
    providers = {
        "echo": {"type": "echo", "chunk_delay_ms": 60},
        "fault": fault_provider(fault_upstream[0], models=["slow:200"], max_retries=0),
    }
    shot = screenshot_path("ui-streaming.png", tmp_path)
    with gateway_with_ui(providers=providers) as url:
        page.goto(f"{url}/ui/")
        model = page.locator("#model input")
        expect(model).to_have_value("echo/echo", timeout=WAIT_MS)  # filled from GET /v1/models

        # 1. A reply streams in: 40 words at 60 ms each, so seen in part before it is whole.
        first = "Streaming through the gateway, word by word: " + words(40)
        send(page, first)
        reply = page.locator(BOT).first
        expect(reply).to_contain_text("w3 ", timeout=WAIT_MS)
        assert "w39" not in reply.inner_text(), "the reply came in one piece, not streamed"
        page.screenshot(path=str(shot))
        assert_screenshot(shot)  # the streaming chat is ~60 KB
        expect(page.locator(BOT).filter(has_text="tok/s")).to_have_count(1, timeout=WAIT_MS)
        expect(reply).to_have_text(first, timeout=WAIT_MS)

        # 2. Stop, mid-stream (30 words at 200 ms each), reaches the upstream at once.
        model.fill("fault/slow:200")
        model.press("Enter")
        expect(model).to_have_value("fault/slow:200", timeout=WAIT_MS)
        second = words(30, tag="s")
        send(page, second)
        stopped = page.locator(BOT).nth(2)
        expect(stopped).to_contain_text("s2", timeout=WAIT_MS)
        pressed_at = time.monotonic()
        page.click(STOP)
        seen_at = upstream.wait_for_disconnect(timeout=10)
        assert seen_at is not None, "Stop did not reach the upstream"
        assert 0 <= seen_at - pressed_at < DISCONNECT_WITHIN_S, seen_at - pressed_at
        [gone] = upstream.disconnects
        assert gone.model == "slow:200"
        expect(page.locator(BOT).filter(has_text="⚠ stopped")).to_have_count(1, timeout=WAIT_MS)
        expect(page.locator(STOP)).to_be_hidden(timeout=WAIT_MS)
        # what is shown is what the upstream sent before it saw the disconnect, and no more
        shown = stopped.inner_text().split()
        assert shown == second.split()[: len(shown)], shown
        assert 3 <= len(shown) <= gone.events_sent < 30

        [request] = [r for r in upstream.requests if r.model == "slow:200"]
        # The browser sends history as lists of text blocks; the gateway got plain strings.
        assert request.body["messages"][:2] == [
            {"role": "user", "content": first},
            {"role": "assistant", "content": first},
        ]

        # 3. Closing the tab mid-stream reaches the upstream at once too.
        upstream.reset()
        send(page, words(30, tag="t"))
        expect(page.locator(BOT).nth(4)).to_contain_text("t2", timeout=WAIT_MS)
        closed_at = time.monotonic()
        page.close()
        seen_at = upstream.wait_for_disconnect(timeout=10)
        assert seen_at is not None, "closing the tab did not reach the upstream"
        assert 0 <= seen_at - closed_at < DISCONNECT_WITHIN_S, seen_at - closed_at
        [gone] = upstream.disconnects
        [request] = upstream.requests
        assert gone.model == request.model == "slow:200"
        assert request.body["messages"][-1] == {"role": "user", "content": words(30, tag="t")}
