"""A real browser for the UI tests: Debian's chromium driven by the playwright package.

Never ``playwright install``: the tests drive the system chromium (tests/setup-browser.sh
installs it). :class:`Watch` records what a page did wrong: console errors, uncaught
exceptions, and any request to a host other than the loopback one (which it blocks, so a
page that needs the internet fails here as it would on an offline gateway).
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, ViewportSize, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"
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
WAIT_MS = 20_000  # generous: a busy 2-core CI machine, with chromium on it
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
DISCONNECT_WITHIN_S = 1.0  # what the UI promises for Stop; the measured delay is milliseconds

# every browser test module's ``pytestmark``: without the system chromium there is nothing to drive
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watch:
    """What went wrong on a page: console errors, page errors, requests that left the host."""

    errors: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)

    def check(self) -> None:
        assert not self.errors, f"errors in the page: {self.errors}"
        assert not self.external, f"requests off this host: {self.external}"

    def attach(self, page: Page) -> Page:
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.route("**/*", self._route)
        return page

    def _route(self, route: Route) -> None:
        url = route.request.url
        scheme = urlsplit(url).scheme
        if scheme in ("http", "https", "ws", "wss") and urlsplit(url).hostname not in LOCAL_HOSTS:
            self.external.append(url)
            route.abort()
        else:
            route.continue_()


# Where a page fixture leaves its Watch, for tests/conftest.py to check right after the test.
PAGE_WATCH = pytest.StashKey[Watch]()


def check_after_the_test(request: pytest.FixtureRequest, watch: Watch) -> None:
    """Fail the test itself, not its teardown, if the page logs an error or leaves the host:
    the conftest's ``pytest_runtest_call`` checks ``watch`` once the test's body passed."""
    request.node.stash[PAGE_WATCH] = watch


@contextlib.contextmanager
def watched_page(browser: Browser) -> Iterator[tuple[Page, Watch]]:
    """A fresh page (its own storage) that records what goes wrong on it."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        watch = Watch()
        watch.attach(page)
        yield page, watch
    finally:
        context.close()


def screenshot_path(name: str, tmp_path: Path) -> Path:
    """Where to save a screenshot: the README's image only when asked to update it."""
    if os.environ.get(UPDATE_SCREENSHOTS) == "1":
        DOCS.mkdir(exist_ok=True)
        return DOCS / name
    return tmp_path / name


def assert_screenshot(path: Path, *, min_bytes: int = 20_000) -> None:
    """A PNG of the whole viewport, with more in it than an empty page."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (VIEWPORT["width"], VIEWPORT["height"])
    # an empty page of this size compresses to a few KB
    assert len(data) > min_bytes, f"{path} is only {len(data)} bytes: a blank page?"
