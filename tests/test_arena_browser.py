"""The Arena page in a real browser: one prompt, three models streaming side by side, each
with its stats, then a vote whose tally survives a reload; Stop, which must reach every
upstream within a second of the click and leave every column "stopped" (the fault upstream's
``slow:MS`` models stream slowly enough to be stopped halfway, and note when their client goes);
and a reasoning model's thought, open while the thinking upstream holds its stream after the
reasoning, collapsed once the answer comes.

The models are the echo provider and two behaviours of the fault upstream behind an openai
provider (a plain answer, and one that reasons first). With
``LLM_GATEWAY_UPDATE_SCREENSHOTS=1`` the test regenerates ``docs/ui-arena.png``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import (
    DISCONNECT_WITHIN_S,
    WAIT_MS,
    assert_screenshot,
    needs_chromium,
    screenshot_path,
)
from tests.support.fault_upstream import FaultUpstream
from tests.support.page_waits import wait_until
from tests.support.sse_frames import REASONING as REASONING_PIECES
from tests.support.thinking_upstream import REASONING as THOUGHT
from tests.support.thinking_upstream import ThinkingUpstream
from tests.test_studio_browser import browser as browser  # the module's one chromium
from tests.test_studio_browser import page as page
from tests.test_studio_browser import providers
from tests.test_studio_browser import thinking as thinking
from tests.test_ui import gateway_with_ui, words

pytestmark = needs_chromium

PROMPT = "Name three primary colours"
REASONING = "".join(REASONING_PIECES)
SLOW = ["slow:200", "slow:250", "slow:300"]  # ms between chunks: three paces, one prompt


@pytest.fixture(scope="module")
def arena_url(
    fault_upstream: tuple[str, FaultUpstream], thinking: tuple[str, ThinkingUpstream]
) -> Iterator[str]:
    served = providers(
        fault_upstream[0], thinking[0], echo_delay_ms=20, fault_models=["ok", "reasoning", *SLOW]
    )
    with gateway_with_ui(providers=served) as url:
        yield url


def pick(page: Page, field: str, model: str) -> None:
    box = page.locator(f"{field} input")
    box.fill(model)
    box.press("Enter")
    expect(box).to_have_value(model)


def test_three_models_answer_side_by_side_and_the_vote_is_kept(
    page: Page, arena_url: str, upstream: FaultUpstream, tmp_path: Path
) -> None:
    page.goto(f"{arena_url}/ui/arena")
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
    # the reasoning model's thought sits above its answer, collapsed once the answer came
    thought = page.locator("#arena-answer-2 details")
    expect(thought.locator("summary")).to_contain_text("Thought for")
    expect(thought).not_to_have_attribute("open", "")
    expect(thought.get_by_text(REASONING)).to_be_hidden()
    thought.locator("summary").click()
    expect(thought.get_by_text(REASONING)).to_be_visible()
    expect(page.locator("#arena-answer-0 details")).to_have_count(0)  # echo does not reason
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


def test_stop_reaches_every_upstream_and_every_column_stays_stopped(
    page: Page, arena_url: str, upstream: FaultUpstream
) -> None:
    prompt = words(30, tag="a")
    page.goto(f"{arena_url}/ui/arena")
    expect(page.locator("#arena-model-2 input")).to_have_value("fault/ok", timeout=WAIT_MS)
    for n, model in enumerate(SLOW, start=1):
        pick(page, "#model" if n == 1 else f"#arena-model-{n}", f"fault/{model}")
    page.fill("#arena-prompt textarea", prompt)
    page.click("#arena-send")
    answers = [page.locator(f"#arena-answer-{n}") for n in range(len(SLOW))]
    for answer in answers:  # every column is streaming, none has finished
        expect(answer).to_contain_text("a2", timeout=WAIT_MS)
    pressed_at = time.monotonic()
    page.click("#arena-stop")
    wait_until(page, lambda: len(upstream.disconnects) >= len(SLOW), "every upstream's disconnect")
    gone = {d.model: d for d in upstream.disconnects}
    assert gone.keys() == set(SLOW), gone
    for d in gone.values():
        assert 0 <= d.at - pressed_at < DISCONNECT_WITHIN_S, (d.model, d.at - pressed_at)

    for n in range(len(SLOW)):
        stats = page.locator(f"#arena-stats-{n}")
        expect(stats).to_contain_text("stopped", timeout=WAIT_MS)
        expect(stats).to_contain_text("TTFT")
    expect(page.locator("#arena-tie")).to_be_enabled(timeout=WAIT_MS)  # the round is over
    for n, model in enumerate(SLOW):
        # each column shows what its upstream sent before it saw the disconnect, and no
        # late chunk has replaced "stopped" since
        shown = answers[n].inner_text().split()
        assert 3 <= len(shown) <= gone[model].events_sent < 30, (model, shown)
        assert shown == prompt.split()[: len(shown)]
        expect(page.locator(f"#arena-stats-{n}")).to_contain_text("stopped")
        expect(page.locator(f"#arena-stats-{n}")).not_to_contain_text("finished")
    assert len(upstream.requests) == len(SLOW)


def test_a_column_shows_its_thought_open_while_the_model_thinks_then_collapsed(
    page: Page, arena_url: str, thinking: tuple[str, ThinkingUpstream]
) -> None:
    upstream = thinking[1]
    upstream.hold()  # the stream stops after its reasoning until the test lets it answer
    page.goto(f"{arena_url}/ui/arena")
    expect(page.locator("#arena-model-2 input")).not_to_have_value("", timeout=WAIT_MS)
    pick(page, "#arena-model-2", "think/think")
    page.fill("#arena-prompt textarea", "Is 2 + 2 four?")
    page.click("#arena-send")
    thought = page.locator("#arena-answer-1 details")
    expect(thought.locator("summary")).to_have_text("Thinking…", timeout=WAIT_MS)
    expect(thought).to_have_attribute("open", "")
    expect(thought).to_contain_text(THOUGHT, timeout=WAIT_MS)
    expect(page.locator("#arena-stats-1")).not_to_contain_text("finished")

    upstream.answer()
    expect(page.locator("#arena-stats-1")).to_contain_text("finished", timeout=WAIT_MS)
    expect(thought.locator("summary")).to_contain_text("Thought for")
    expect(thought.get_by_text(THOUGHT)).to_be_hidden()
    answer = page.locator("#arena-answer-1")
    expect(answer.locator("strong", has_text="answer")).to_be_visible()  # markdown, below
    expect(answer.locator("pre code", has_text="print(4)")).to_be_visible()
