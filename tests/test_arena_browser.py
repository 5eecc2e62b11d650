"""The Arena page in a real browser: one prompt, three models streaming side by side, each
with its stats, then a vote whose tally survives a reload.

The models are the echo provider and two behaviours of the fault upstream behind an openai
provider (a plain answer, and one that reasons first). With
``LLM_GATEWAY_UPDATE_SCREENSHOTS=1`` the test regenerates ``docs/ui-arena.png``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import (
    CHROMIUM,
    WAIT_MS,
    assert_screenshot,
    chromium,
    screenshot_path,
    watched_page,
)
from tests.support.fault_upstream import FaultUpstream
from tests.test_ui import gateway_with_ui

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)

PROMPT = "Name three primary colours"


@pytest.fixture(scope="module")
def arena_url(fault_upstream: tuple[str, FaultUpstream]) -> Iterator[str]:
    providers = {
        "echo": {"type": "echo", "chunk_delay_ms": 20},
        "fault": {
            "type": "openai",
            "base_url": fault_upstream[0],
            "api_key": "sk-upstream",
            "models": ["ok", "reasoning"],
            "max_retries": 0,
        },
    }
    with gateway_with_ui(providers=providers) as url:
        yield url


def pick(page: Page, field: str, model: str) -> None:
    box = page.locator(f"{field} input")
    box.fill(model)
    box.press("Enter")
    expect(box).to_have_value(model)


def test_three_models_answer_side_by_side_and_the_vote_is_kept(
    arena_url: str, upstream: FaultUpstream, tmp_path: Path
) -> None:
    with chromium() as browser, watched_page(browser) as (page, watch):
        run_arena(page, arena_url, upstream, tmp_path)
    assert watch.errors == [] and watch.external == [], (watch.errors, watch.external)


def run_arena(page: Page, url: str, upstream: FaultUpstream, tmp_path: Path) -> None:
    page.goto(f"{url}/ui/arena")
    # the first two pickers start on the gateway's first two models
    expect(page.locator("#model input")).to_have_value("echo/echo", timeout=WAIT_MS)
    expect(page.locator("#arena-model-2 input")).to_have_value("fault/ok", timeout=WAIT_MS)
    pick(page, "#arena-model-3", "fault/reasoning")
    page.fill("#arena-prompt textarea", PROMPT)
    page.click("#arena-send")

    for n, model in enumerate(["echo/echo", "fault/ok", "fault/reasoning"]):
        expect(page.locator(f"#arena-head-{n}")).to_contain_text(model, timeout=WAIT_MS)
        stats = page.locator(f"#arena-stats-{n}")
        expect(stats).to_contain_text("finished", timeout=WAIT_MS)
        expect(stats).to_contain_text("TTFT")
        expect(stats).to_contain_text("tok/s")
        expect(stats).to_contain_text("tokens")
        # every model here echoes the prompt back
        expect(page.locator(f"#arena-answer-{n}")).to_contain_text(PROMPT)
    expect(page.locator("#arena-head-3")).to_be_hidden()  # no fourth model picked
    requests = {r.model: r for r in upstream.requests}
    assert requests.keys() == {"ok", "reasoning"}
    for request in requests.values():
        assert request.body["messages"] == [{"role": "user", "content": PROMPT}]

    shot = screenshot_path("ui-arena.png", tmp_path)
    page.screenshot(path=str(shot))
    assert_screenshot(shot)

    page.click("#arena-vote-1")  # fault/ok is better
    tally = page.locator("#arena-tally")
    expect(tally).to_contain_text("fault/ok", timeout=WAIT_MS)
    expect(tally).to_contain_text("1 rounds voted")
    expect(page.locator("#arena-vote-0")).to_be_disabled()  # one vote per round

    page.reload()
    expect(page.locator("#arena-tally")).to_contain_text("1 rounds voted", timeout=WAIT_MS)
    expect(page.locator("#arena-tally")).to_contain_text("fault/ok")
