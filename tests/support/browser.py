"""A real headless Chromium for the tests that open pages: Debian's ``/usr/bin/chromium``
(``make install`` installs it), driven by Playwright. Playwright's own browser builds are
never downloaded; it is pointed at that executable.

:class:`PageWatch` records what a page does besides what the test asks: every request it
sends (with its answer's status), its console errors, its uncaught exceptions and every
Content-Security-Policy violation it reports.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, ConsoleMessage, Page, Request, Response, async_playwright

CHROMIUM = Path("/usr/bin/chromium")

# Runs before the page's own scripts and, being injected by the browser's debugging
# protocol, is not subject to the page's CSP (which would refuse it as an inline script).
_RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(
    `${e.violatedDirective} refused ${e.blockedURI} (${e.sourceFile}:${e.lineNumber})`
  );
});
"""


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Headless Chromium, closed on exit; fails (not skips) where it is not installed."""
    installed = os.access(CHROMIUM, os.X_OK)
    assert installed, f"{CHROMIUM} is missing: `make install` installs Debian's chromium"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Sent:
    """One request the page sent."""

    method: str
    url: str
    body: str | None
    status: int | None = None
    """Its answer's status (``None``: no answer, e.g. refused by the browser)."""


@dataclass
class PageWatch:
    """What a page did on its own: requests, console errors, exceptions."""

    sent: list[Sent] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    _by_request: dict[Request, Sent] = field(default_factory=dict)

    @classmethod
    async def on(cls, page: Page) -> PageWatch:
        """Start watching ``page`` (before it loads anything)."""
        watch = cls()
        page.on("request", watch._request)
        page.on("response", watch._response)
        page.on("console", watch._console)
        page.on("pageerror", lambda error: watch.exceptions.append(str(error)))
        await page.add_init_script(_RECORD_VIOLATIONS)
        return watch

    def _request(self, request: Request) -> None:
        sent = Sent(request.method, request.url, request.post_data)
        self.sent.append(sent)
        self._by_request[request] = sent

    def _response(self, response: Response) -> None:
        sent = self._by_request.get(response.request)
        if sent is not None:
            sent.status = response.status

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    @staticmethod
    async def violations(page: Page) -> list[str]:
        """The CSP violations ``page`` reported since it loaded."""
        found: Any = await page.evaluate("window.__cspViolations")
        return [str(v) for v in found]
