"""Waiting for something outside the page (an upstream's records) while the page stays alive.

A :class:`tests.support.browser.Watch` routes every request of the page through a handler that
playwright runs in the test's own thread, and only while the test is inside a playwright call.
So a test that blocks (``Recorder.wait_for_requests``, ``time.sleep``) holds back the very
request it waits for: a retry's second step, or Stop's follow-up. :func:`wait_until` looks
at the condition between short ``wait_for_timeout`` calls, which let the handler run.
"""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Page

from tests.support.browser import WAIT_MS

POLL_MS = 50


def wait_until(page: Page, condition: Callable[[], bool], what: str) -> None:
    """Return once ``condition()`` holds; fail, saying ``what`` was awaited, after WAIT_MS."""
    for _ in range(WAIT_MS // POLL_MS):
        if condition():
            return
        page.wait_for_timeout(POLL_MS)
    if not condition():
        raise AssertionError(f"gave up waiting for {what}")
