"""Pages in a real browser: Playwright driving Debian's Chromium (installed by ./scripts/test),
shared by the tests of the report's HTML and of ``worker serve``'s page (the ``browser``
fixture is conftest's)."""

from __future__ import annotations

import pytest

CHROMIUM = "/usr/bin/chromium"
# As root, and with no network: no sandbox, and none of Chromium's own background connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
SIZES = [pytest.param(DESKTOP, id="desktop"), pytest.param(PHONE, id="phone")]


class Troubles:
    """What a page said went wrong: console errors, uncaught exceptions, failed requests and
    answers of 400 or more."""

    def __init__(self, page) -> None:
        self.seen: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.seen.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.seen.append(f"exception: {e}"))
        page.on("requestfailed", lambda r: self.seen.append(f"failed: {r.url}"))
        page.on("response", lambda r: r.status >= 400 and self.seen.append(f"{r.status}: {r.url}"))


def no_sideways_scroll(page) -> None:
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page is {width[0]} px wide in a {width[1]} px window"
