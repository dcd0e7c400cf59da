"""The test suite's one way to drive a real browser: Playwright for Python on Debian's chromium.

Browsers are not downloaded (no `playwright install`): the system chromium (`.ci/run` installs the
Debian package) is launched by path. A test takes the `browser_page` fixture:

    from browser import browser_page  # noqa: F401  (the fixture)

    def test_x(browser_page):
        page = browser_page.page
        page.goto(url)
        ...
        assert browser_page.problems(allowed=("http://127.0.0.1:",)) == []

It is skipped, with the reason, only when chromium is not installed or playwright cannot be imported.
`problems()` lists console errors and warnings, uncaught exceptions, failed requests, and every
request to anything but data: URLs and the allowed prefixes (Playwright's request events).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000  # a loaded 2-core machine: generous


def browser_missing() -> str | None:
    """Why no browser test can run here, or None when one can."""
    if CHROMIUM is None:
        return ("chromium is not installed (Debian package 'chromium'; .ci/run installs it): "
                "the browser tests need a real browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not importable (pip install playwright, from the 'test' extra)"
    return None


@dataclass
class BrowserPage:
    """A page in headless chromium, and what it did: console messages, page errors, requests."""

    page: Any
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def watch(self) -> None:
        self.page.on("console", lambda m: self.console.append(f"console.{m.type}: {m.text}")
                     if m.type in ("error", "warning", "assert") else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"exception: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("requestfailed", lambda r: self.failed.append(f"request failed: {r.url[:200]} ({r.failure})"))

    def problems(self, allowed: tuple[str, ...] = ("file:",)) -> list[str]:
        """Console errors/warnings, uncaught exceptions, failed requests, and requests other than
        data: URLs and URLs starting with one of `allowed`."""
        out = self.console + self.errors + self.failed
        out += [f"network request: {u[:200]}" for u in self.requests if not u.startswith(("data:",) + tuple(allowed))]
        return out


@pytest.fixture
def browser_page() -> Iterator[BrowserPage]:
    """A fresh headless chromium page (Playwright), closed after the test."""
    reason = browser_missing()
    if reason is not None:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 800})
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            watched = BrowserPage(page)
            watched.watch()
            yield watched
        finally:
            browser.close()
