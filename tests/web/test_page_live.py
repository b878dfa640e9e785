"""The page follows the outbox without a reload (issue 27, item 3), in Playwright driving
Debian's Chromium: told by the server's event stream, or by polling where none can be had."""

from __future__ import annotations

import shutil

import pytest
from browsing import PHONE, no_sideways_scroll
from test_page import (  # noqa: F401 - fixtures, imported
    CLOTHING,
    DIGITS,
    SAMPLES,
    _open,
    _record,
    _rows,
    model_path,
    opened,
    served,
    viewport,
)

from worker import defaults

pytestmark = pytest.mark.slow

# The chart's label (what a screen reader says of it) holds the text given.
CHART_SAYS = "(text) => document.getElementById('activity').getAttribute('aria-label').includes(text)"


@pytest.mark.parametrize("model_path", [DIGITS], indirect=True)
def test_a_file_dropped_into_the_inbox_shows_live_and_in_the_review_queue(opened):  # noqa: F811
    """A sandal copied into the inbox by hand (not through the page), read by the digit model:
    its row appears in the live list and, flagged, in the review queue, the page never reloaded
    and never polling."""
    from watching import Watcher

    page, troubles, (url, inbox, outbox, classes) = opened
    watcher = Watcher(inbox, outbox, "--model", str(DIGITS), "--settle", str(defaults.SETTLE_SECONDS))
    try:
        watcher.wait_ready()
        _open(page, url)
        page.wait_for_function("document.body.dataset.live === 'events'")
        page.evaluate("window.sameDocument = true")
        assert page.locator("#queue figure").count() == 0
        shutil.copy(SAMPLES / "sandal.png", inbox / ".sandal.tmp")
        (inbox / ".sandal.tmp").rename(inbox / "sandal.png")  # arrives whole, as cp + mv does
        page.wait_for_selector("#latest figure[data-file='sandal.png']", timeout=15_000)
        card = page.locator("#queue figure[data-file='sandal.png']")
        card.wait_for(timeout=5_000)
    finally:
        watcher.stop()
    assert "review:" in card.inner_text(), "in the queue because it is flagged"
    assert page.evaluate("window.sameDocument") is True, "no reload"
    assert page.evaluate("document.body.dataset.live") == "events"
    no_sideways_scroll(page)
    assert troubles.seen == []


@pytest.mark.parametrize("model_path", [CLOTHING], indirect=True)
@pytest.mark.parametrize("viewport", [PHONE], indirect=True)
def test_without_an_event_stream_the_page_polls(opened):  # noqa: F811 - the fixture, imported
    """The stream refused (as when too many tabs hold one, or the server is stopping: 503): the
    page polls, and rows written meanwhile still show, in the live list and the review queue;
    a minute later it asks for a stream again, and follows that."""
    page, troubles, (url, _, outbox, classes) = opened
    refuse = lambda route: route.fulfill(  # noqa: E731 - a handler to remove later
        status=503, content_type="application/json", body='{"detail": "too many streams"}')
    page.route("**/api/events", refuse)
    page.clock.install()  # time runs, and can be moved on
    _open(page, url)
    page.wait_for_function("document.body.dataset.live === 'polling'")
    rows = _rows(classes, 4)
    _record(outbox, classes, rows)
    flagged = rows[0].file
    page.wait_for_selector(f"#latest figure[data-file='{flagged}']")
    page.wait_for_selector(f"#queue figure[data-file='{flagged}']")
    page.unroute("**/api/events", refuse)
    page.clock.fast_forward(61_000)
    page.wait_for_function("document.body.dataset.live === 'events'")
    no_sideways_scroll(page)
    # The only troubles: the refused stream, as a response and as the console's line for it;
    # and, at times, as a failed request too: Chromium's EventSource drops a refused stream's
    # body, and whether it had all arrived by then is a race (net::ERR_ABORTED).
    aborted = f"failed: {url}/api/events"
    assert troubles.seen.count(aborted) <= 1, troubles.seen
    assert [trouble for trouble in troubles.seen if trouble != aborted] == [
        f"503: {url}/api/events",
        "console: Failed to load resource: the server responded with a status of 503 (Service Unavailable)"]


@pytest.mark.parametrize("model_path", [DIGITS], indirect=True)
def test_the_chart_follows_the_event_stream_not_a_timer(opened):  # noqa: F811 - the fixture, imported
    """The chart of rows per minute is drawn again when the stream says the outbox changed: an
    idle outbox's page asks nothing for five minutes of its clock (on a timer it asked every 15
    seconds); rows written, the chart shows them, the page never polling."""
    page, troubles, (url, _, outbox, classes) = opened
    asked = []
    page.on("request", lambda request: "/api/activity" in request.url and asked.append(request.url))
    page.clock.install()
    _open(page, url)
    page.wait_for_function("document.body.dataset.live === 'events'")
    page.wait_for_function(CHART_SAYS, arg=": 0 rows")
    drawn = len(asked)
    page.clock.run_for(5 * 60_000)
    # One more at most: the stream's first event after opening says "look again" (what changed
    # before it opened is unknown).
    assert len(asked) - drawn <= 1, asked
    _record(outbox, classes, _rows(classes, 4))
    page.wait_for_selector("#latest figure")
    page.clock.run_for(15_000)
    page.wait_for_function(CHART_SAYS, arg=": 4 rows, 2 flagged")
    assert page.evaluate("document.body.dataset.live") == "events"
    assert troubles.seen == []
