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

import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, ViewportSize, expect, sync_playwright

from tests.support.fault_upstream import FaultUpstream
from tests.test_ui import gateway_with_ui, words

CHROMIUM = Path("/usr/bin/chromium")
README_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "ui-streaming.png"
UPDATE_SCREENSHOTS = "LLM_GATEWAY_UPDATE_SCREENSHOTS"
VIEWPORT: ViewportSize = {"width": 1280, "height": 760}
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 15_000  # generous: a busy 2-core CI machine, with chromium on it
DISCONNECT_WITHIN_S = 1.0  # what the UI promises; the measured delay is milliseconds

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)

INPUT = "#chat textarea[data-testid=textbox]"
BOT = "#chat [data-testid=bot]"
STOP = "#chat button.stop-button"  # the multimodal textbox has no test id on it


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(WAIT_MS)
            yield page
        finally:
            browser.close()


@pytest.fixture
def screenshot_path(tmp_path: Path) -> Path:
    """Where to save the screenshot: the README's image only when asked to update it."""
    if os.environ.get(UPDATE_SCREENSHOTS) == "1":
        README_SCREENSHOT.parent.mkdir(exist_ok=True)
        return README_SCREENSHOT
    return tmp_path / README_SCREENSHOT.name


def assert_screenshot(path: Path) -> None:
    """A PNG of the whole viewport, with more in it than an empty page."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (VIEWPORT["width"], VIEWPORT["height"])
    # an empty page of this size compresses to a few KB; the streaming chat is ~60 KB
    assert len(data) > 20_000, f"{path} is only {len(data)} bytes: a blank page?"


def send(page: Page, message: str) -> None:
    page.fill(INPUT, message)
    page.press(INPUT, "Enter")


def test_reply_streams_in_and_stop_ends_it_upstream(
    page: Page,
    fault_upstream: tuple[str, FaultUpstream],
    upstream: FaultUpstream,
    screenshot_path: Path,
) -> None:
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
        expect(model).to_have_value("echo/echo", timeout=WAIT_MS)  # filled from GET /v1/models

        # 1. A reply streams in: 40 words at 60 ms each, so seen in part before it is whole.
        first = "Streaming through the gateway, word by word: " + words(40)
        send(page, first)
        reply = page.locator(BOT).first
        expect(reply).to_contain_text("w3 ", timeout=WAIT_MS)
        assert "w39" not in reply.inner_text(), "the reply came in one piece, not streamed"
        page.screenshot(path=str(screenshot_path))
        assert_screenshot(screenshot_path)
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
