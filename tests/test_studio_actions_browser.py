"""The Studio's per-message actions in a real browser: edit, retry, delete, like and copy.

Each action that loses something asks first (antd's popconfirm); the tests press Cancel once
and check that nothing changed, then confirm. What must outlive a reload (an edit, a deletion,
a like) is checked after one; before reloading, a test waits until the browser has stored the
new conversation, so the reload cannot race the save. The gateway, its upstreams and the page
fixtures are those of :mod:`tests.test_studio_browser`.
"""

from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect

from tests.support.browser import WAIT_MS, needs_chromium
from tests.support.fault_upstream import FaultUpstream
from tests.support.page_waits import wait_until
from tests.support.thinking_upstream import ANSWER, REASONING, ThinkingUpstream
from tests.test_studio_browser import CHATBOT, STOP, open_studio, send
from tests.test_studio_browser import browser as browser  # pytest finds fixtures by name
from tests.test_studio_browser import page as page
from tests.test_studio_browser import studio_url as studio_url
from tests.test_studio_browser import thinking as thinking
from webui.studio import STORAGE_KEY

pytestmark = needs_chromium

MESSAGES = f"{CHATBOT} .ms-gr-pro-chatbot-message"
CONFIRMATION = ".ms-gr-ant-popconfirm:visible"  # the one open now
# a pressed like/dislike button is drawn in the primary colour
LIKED = re.compile(r"\bms-gr-ant-btn-color-primary\b")


def messages(page: Page) -> Locator:
    return page.locator(MESSAGES)


def action(message: Locator, icon: str) -> Locator:
    """A message's action button, by its icon: copy, edit, delete, like, dislike, sync (retry)."""
    message.hover()  # the actions show on hover
    if icon == "copy":  # antd's copyable text: its icon turns into a check once copied
        return message.locator(".ms-gr-ant-typography-copy")
    return message.locator(f"button:has(.anticon-{icon})")


def popconfirm(page: Page, name: str) -> Locator:
    """A button of the confirmation open now (antd keeps closed ones in the page, hidden)."""
    return page.locator(CONFIRMATION).get_by_role("button", name=name)


def cancel(page: Page, button: Locator, asking: str) -> None:
    """Press ``button``, see its confirmation ask ``asking``, and cancel it."""
    button.click()
    expect(page.locator(CONFIRMATION)).to_contain_text(asking)
    popconfirm(page, "Cancel").click()
    expect(page.locator(CONFIRMATION)).to_have_count(0)


def stored(page: Page) -> str | None:
    """The Studio's conversations as the browser keeps them (encrypted: compared, not read)."""
    value = page.evaluate("key => window.localStorage.getItem(key)", STORAGE_KEY)
    return value if isinstance(value, str) else None


def wait_stored_change(page: Page, before: str | None) -> None:
    """Wait until the browser has saved a new state: a reload before that would lose it."""
    page.wait_for_function(
        "([key, before]) => window.localStorage.getItem(key) !== before",
        arg=[STORAGE_KEY, before],
        timeout=WAIT_MS,
    )


def reload(page: Page, url: str, model: str) -> None:
    """Load the page afresh; the model picker starts on its default again, so pick ``model``."""
    open_studio(page, url, model)
    expect(messages(page).first).to_be_visible(timeout=WAIT_MS)


def answered(page: Page, count: int) -> None:
    """Wait for ``count`` messages, the last one a finished reply."""
    expect(messages(page)).to_have_count(count, timeout=WAIT_MS)
    expect(messages(page).last).to_contain_text("finished", timeout=WAIT_MS)
    expect(page.locator(STOP)).to_have_count(0, timeout=WAIT_MS)  # the page is unlocked


def ask(page: Page, url: str, model: str, text: str) -> None:
    """Open the Studio on ``model``, send ``text`` and wait for the finished reply."""
    open_studio(page, url, model)
    send(page, text)
    answered(page, 2)


def test_retry_asks_first_then_sends_the_same_conversation_again(
    page: Page,
    studio_url: str,
    upstream: FaultUpstream,
) -> None:
    ask(page, studio_url, "fault/ok", "tell me again")
    reply = messages(page).nth(1)

    cancel(page, action(reply, "sync"), "Regenerate the reply")
    answered(page, 2)  # cancelled: the reply is still there, finished

    action(reply, "sync").click()
    popconfirm(page, "OK").click()
    wait_until(page, lambda: len(upstream.requests) >= 2, "the retry's request")
    answered(page, 2)  # the new reply replaced the old one, not added to it
    expect(reply).to_contain_text("tell me again")
    first, again = upstream.requests  # the cancelled retry sent nothing
    assert first.body["messages"] == [{"role": "user", "content": "tell me again"}]
    assert again.body["messages"] == first.body["messages"]


def test_an_edited_message_survives_a_reload_and_a_retry_sends_it(
    page: Page,
    studio_url: str,
    upstream: FaultUpstream,
) -> None:
    ask(page, studio_url, "fault/ok", "first draft")
    question = messages(page).first

    before = stored(page)
    action(question, "edit").click()
    field = question.locator("textarea")
    expect(field).to_have_value("first draft")
    field.fill("second draft")
    question.locator("button:has(.anticon-check)").click()
    expect(field).to_have_count(0)
    expect(question).to_contain_text("second draft")
    wait_stored_change(page, before)

    reload(page, studio_url, "fault/ok")
    question = messages(page).first
    expect(question).to_contain_text("second draft", timeout=WAIT_MS)
    expect(question).not_to_contain_text("first draft")

    action(messages(page).nth(1), "sync").click()
    popconfirm(page, "OK").click()
    wait_until(page, lambda: len(upstream.requests) >= 2, "the retry's request")
    answered(page, 2)
    expect(messages(page).nth(1)).to_contain_text("second draft")  # the echo of the edit
    _, resent = upstream.requests
    assert resent.body["messages"] == [{"role": "user", "content": "second draft"}]


def test_a_deleted_message_and_a_like_stay_so_after_a_reload(
    page: Page,
    studio_url: str,
    upstream: FaultUpstream,
) -> None:
    ask(page, studio_url, "fault/ok", "short lived")
    question, reply = messages(page).first, messages(page).nth(1)

    before = stored(page)
    action(reply, "like").click()
    expect(action(reply, "like")).to_have_class(LIKED)
    expect(action(reply, "dislike")).not_to_have_class(LIKED)
    wait_stored_change(page, before)

    cancel(page, action(question, "delete"), "Delete the message")
    expect(messages(page)).to_have_count(2)  # cancelled: nothing lost

    before = stored(page)
    action(question, "delete").click()
    popconfirm(page, "OK").click()
    expect(messages(page)).to_have_count(1, timeout=WAIT_MS)
    wait_stored_change(page, before)

    reload(page, studio_url, "fault/ok")
    expect(messages(page)).to_have_count(1, timeout=WAIT_MS)
    [left] = messages(page).all()
    expect(action(left, "like")).to_have_class(LIKED)  # the reply, still liked
    expect(left).to_contain_text("finished")
    assert len(upstream.requests) == 1  # neither the like nor the deletion asked the model


def test_copy_puts_the_answer_on_the_clipboard(
    page: Page,
    studio_url: str,
    thinking: tuple[str, ThinkingUpstream],
) -> None:
    thinking[1].answer()  # no hold: this test looks at the answer only
    # headless chromium grants clipboard access when asked; the page then reads it back
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    ask(page, studio_url, "think/think", "something to copy")
    question, reply = messages(page).first, messages(page).nth(1)

    copy = action(reply, "copy")
    copy.click()
    expect(copy.locator(".anticon-check")).to_be_visible()  # antd's "copied" feedback
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert copied == ANSWER, copied  # the markdown, without the reasoning or the footer
    assert REASONING not in copied

    action(question, "copy").click()
    expect(action(question, "copy").locator(".anticon-check")).to_be_visible()
    assert page.evaluate("() => navigator.clipboard.readText()") == "something to copy"
