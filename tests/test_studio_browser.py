"""The Studio page in a real browser, against a real gateway and real upstreams over loopback.

The reasoning reply comes from :mod:`tests.support.thinking_upstream`, which holds its stream
after the reasoning until the test lets it answer, so the open thinking block is looked at
while the model is still thinking, with no sleep. Stop and images go to the fault upstream,
which records what it was sent and when its client went away.

With ``LLM_GATEWAY_UPDATE_SCREENSHOTS=1`` the first test regenerates ``docs/ui-studio.png``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Browser, Locator, Page, expect

from tests.conftest import fault_provider
from tests.support.browser import (
    DISCONNECT_WITHIN_S,
    WAIT_MS,
    assert_screenshot,
    check_after_the_test,
    chromium,
    needs_chromium,
    screenshot_path,
    watched_page,
)
from tests.support.fault_upstream import FaultUpstream
from tests.support.thinking_upstream import ThinkingUpstream, serve_thinking_upstream
from tests.test_ui import gateway_with_ui, words

pytestmark = needs_chromium

INPUT = "#studio-input textarea"
CHATBOT = "#studio-chatbot"
MODEL = "#studio-settings #model input"
STOP = (
    "#studio-input button[class*=loading-button]"  # the send button turns into Stop while streaming
)


@pytest.fixture(scope="module")
def thinking() -> Iterator[tuple[str, ThinkingUpstream]]:
    with serve_thinking_upstream() as served:
        yield served


def providers(
    fault_url: str, think_url: str, *, echo_delay_ms: int, fault_models: list[str]
) -> dict[str, Any]:
    """The echo provider, the fault upstream serving ``fault_models``, and the thinking one."""
    return {
        "echo": {"type": "echo", "chunk_delay_ms": echo_delay_ms},
        "fault": fault_provider(fault_url, models=fault_models, max_retries=0),
        "think": {
            "type": "openai",
            "base_url": think_url,
            "api_key": "sk-upstream",
            "models": ["think"],
            "max_retries": 0,
        },
    }


@pytest.fixture(scope="module")
def studio_url(
    fault_upstream: tuple[str, FaultUpstream], thinking: tuple[str, ThinkingUpstream]
) -> Iterator[str]:
    served = providers(
        fault_upstream[0], thinking[0], echo_delay_ms=10, fault_models=["ok", "slow:200"]
    )
    with gateway_with_ui(providers=served) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page (its own storage); the test fails on a console error or a request off host."""
    with watched_page(browser) as (page, watch):
        check_after_the_test(request, watch)
        yield page


def open_studio(page: Page, url: str, model: str) -> None:
    page.goto(f"{url}/ui/studio")
    field = page.locator(MODEL)
    expect(field).to_have_value("echo/echo", timeout=WAIT_MS)  # filled from GET /v1/models
    if model != "echo/echo":
        field.fill(model)
        field.press("Enter")
        expect(field).to_have_value(model)


def send(page: Page, text: str) -> None:
    page.fill(INPUT, text)
    page.press(INPUT, "Enter")


def test_welcome_prompt_then_thinking_block_then_answer(
    page: Page,
    studio_url: str,
    thinking: tuple[str, ThinkingUpstream],
    tmp_path: Path,
) -> None:
    upstream = thinking[1]
    upstream.hold()
    open_studio(page, studio_url, "think/think")
    chat = page.locator(CHATBOT)
    expect(chat.get_by_text("LLM Gateway Studio")).to_be_visible()
    card = chat.get_by_text("Explain how a transformer model works")
    expect(chat.get_by_text("Code", exact=True)).to_be_visible()  # prompts come in groups
    card.click()
    expect(page.locator(INPUT)).to_have_value("Explain how a transformer model works")
    page.press(INPUT, "Enter")

    # While the model reasons: the thinking block is open and says so; no answer yet.
    expect(chat.get_by_text("Thinking…")).to_be_visible(timeout=WAIT_MS)
    reasoning = chat.get_by_text("step by step before answering", exact=False)
    expect(reasoning).to_be_visible(timeout=WAIT_MS)
    expect(chat.get_by_text("Here is the")).to_have_count(0)

    upstream.answer()
    # Then it collapses to "Thought for N ms" and the answer renders as markdown.
    expect(chat.get_by_text("Thought for")).to_be_visible(timeout=WAIT_MS)
    expect(reasoning).to_be_hidden(timeout=WAIT_MS)
    expect(chat.locator("strong", has_text="answer")).to_be_visible()
    expect(chat.locator("table td", has_text="4").first).to_be_visible()
    expect(chat.locator("pre code", has_text="print(4)")).to_be_visible()
    # header names the model; footer tells how the stream went
    expect(chat.get_by_text("think/think", exact=True)).to_be_visible()
    footer = chat.get_by_text("7+30 tokens")
    expect(footer).to_be_visible(timeout=WAIT_MS)
    text = footer.inner_text()
    assert "TTFT" in text and "tok/s" in text and "finished" in text, text
    shot = screenshot_path("ui-studio.png", tmp_path)
    page.screenshot(path=str(shot))
    assert_screenshot(shot)
    [request] = [r for r in upstream.requests if r.path.endswith("/chat/completions")]
    assert request.body["messages"] == [
        {"role": "user", "content": "Explain how a transformer model works"}
    ]


def test_an_image_shows_in_the_message_and_reaches_the_upstream(
    page: Page, studio_url: str, upstream: FaultUpstream, tmp_path: Path
) -> None:
    picture = tmp_path / "red.png"
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buffer, format="PNG")
    picture.write_bytes(buffer.getvalue())
    open_studio(page, studio_url, "fault/ok")
    page.locator("#studio-input .anticon-link").click()  # opens the attachments panel
    page.locator("#studio-input input[type=file]").first.set_input_files(str(picture))
    expect(page.locator("#studio-input img").first).to_be_visible(timeout=WAIT_MS)
    send(page, "what colour is this?")
    chat = page.locator(CHATBOT)
    expect(chat.locator("img").first).to_be_visible(timeout=WAIT_MS)  # in the user's bubble
    expect(chat.get_by_text("finished")).to_be_visible(timeout=WAIT_MS)
    [request] = [r for r in upstream.requests if r.model == "ok"]
    [message] = request.body["messages"]
    text_part, image_part = sorted(message["content"], key=lambda p: p["type"] != "text")
    assert text_part == {"type": "text", "text": "what colour is this?"}
    assert image_part["type"] == "image_url"
    assert image_part["image_url"]["url"].startswith("data:image/png;base64,")


def conversation_action(page: Page, label: str, action: str) -> None:
    item = page.locator("#studio-conversations li", has_text=label)
    item.hover()
    item.locator(".anticon-ellipsis").click()
    page.get_by_role("menuitem", name=action).click()


def modal_button(page: Page, name: str) -> Locator:
    """A button of the dialog open now (antd keeps closed dialogs in the page, hidden)."""
    return page.locator(".ms-gr-ant-modal-footer:visible").get_by_role("button", name=name)


def test_renamed_and_deleted_conversations_stay_so_after_a_reload(
    page: Page, studio_url: str
) -> None:
    open_studio(page, studio_url, "echo/echo")
    chat = page.locator(CHATBOT)
    send(page, "alpha one")
    expect(chat.get_by_text("finished")).to_be_visible(timeout=WAIT_MS)
    page.locator("#studio-new").click()
    expect(chat.get_by_text("LLM Gateway Studio")).to_be_visible()
    send(page, "beta two")
    expect(chat.get_by_text("finished")).to_be_visible(timeout=WAIT_MS)
    items = page.locator("#studio-conversations li")
    expect(items).to_have_count(2)

    conversation_action(page, "alpha one", "Rename")
    field = page.locator("#studio-rename-input")
    expect(field).to_be_visible()
    field.fill("Renamed alpha")
    modal_button(page, "OK").click()
    expect(items.filter(has_text="Renamed alpha")).to_have_count(1)

    conversation_action(page, "beta two", "Delete")
    modal_button(page, "Delete").click()
    expect(items).to_have_count(1)

    page.reload()
    expect(page.locator(MODEL)).to_have_value("echo/echo", timeout=WAIT_MS)
    expect(items).to_have_count(1, timeout=WAIT_MS)
    expect(items.first).to_have_text("Renamed alpha")
    items.first.click()
    expect(chat.get_by_text("alpha one").first).to_be_visible(timeout=WAIT_MS)
    expect(chat.get_by_text("beta two")).to_have_count(0)


def test_stop_reaches_the_upstream_and_stays_stopped(
    page: Page, studio_url: str, upstream: FaultUpstream
) -> None:
    open_studio(page, studio_url, "fault/slow:200")
    chat = page.locator(CHATBOT)
    send(page, words(30, tag="s"))
    # the reply's paragraph: it starts as the question does, but is not all of it yet
    reply = chat.locator("p", has_text="s0").filter(has_not_text="s29")
    expect(reply).to_contain_text("s2", timeout=WAIT_MS)
    pressed_at = time.monotonic()
    page.locator(STOP).click()
    seen_at = upstream.wait_for_disconnect(timeout=10)
    assert seen_at is not None, "Stop did not reach the upstream"
    assert 0 <= seen_at - pressed_at < DISCONNECT_WITHIN_S, seen_at - pressed_at
    [gone] = upstream.disconnects
    stopped = chat.get_by_text("stopped", exact=False)
    expect(stopped).to_be_visible(timeout=WAIT_MS)
    expect(page.locator(STOP)).to_have_count(0, timeout=WAIT_MS)  # the send button is back
    # the reply is what the upstream sent before it saw the disconnect, and stays stopped
    shown = reply.inner_text().split()
    assert 3 <= len(shown) <= gone.events_sent < 30, (shown, gone.events_sent)
    assert shown == words(30, tag="s").split()[: len(shown)]
    expect(stopped).to_be_visible()
