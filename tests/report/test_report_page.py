"""The HTML report as a person reads it (issue 27, item 6): at 1366x768 and on a 390x844 phone,
in the reader's time zone, checked by axe-core; Playwright driving Debian's Chromium."""

from __future__ import annotations

import pytest
from accessibility import violations
from browsing import SIZES, Troubles, no_sideways_scroll
from factories import digit_stroke, write
from outboxes import outbox_with, row
from typer.testing import CliRunner

from worker.cli import app

# Kolkata is UTC+5:30 all year: a time shown there is no UTC time by a whole hour's accident.
ZONE = "Asia/Kolkata"


@pytest.fixture(params=SIZES)
def viewport(request):
    return request.param


@pytest.fixture
def five_minute_report(tmp_path):
    """The report of a five-minute run (a row every 5 s from 05:00 UTC), against its folders,
    with long names and a failure: the things that made the page wider than a phone."""
    rows = []
    for i in range(60):
        label = str(i % 10)
        said = label if i % 7 else str((i + 1) % 10)
        rows.append(row(f"{label}/a-folder-with-a-rather-long-name-2026-12-03/scan-{i:03d}.png", said,
                        0.5 + (i % 5) / 10, at=f"2026-12-03T05:{i * 5 // 60:02d}:{i * 5 % 60:02d}.000Z",
                        review=("low-confidence",) if i % 3 == 0 else ()))
    failure = ("a-file-whose-name-goes-on-and-on-and-on.png", "corrupt")
    outbox = outbox_with(tmp_path, rows, failures=[failure])
    for r in rows[:12]:
        write(outbox / "processed" / r.file, 255 - digit_stroke(200))
    html = tmp_path / "report.html"
    command = ["report", "--outbox", str(outbox), "--truth", "folders", "--html", str(html)]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    return html


@pytest.fixture
def report_page(browser, five_minute_report, viewport):
    context = browser.new_context(viewport=viewport, timezone_id=ZONE, locale="en-GB")
    page = context.new_page()
    troubles = Troubles(page)
    page.goto(five_minute_report.as_uri())
    yield page, troubles
    context.close()


def test_a_short_runs_chart_has_columns_with_distinct_labels(report_page):
    page, troubles = report_page
    assert page.inner_text("h2:has-text('Throughput')") == "Throughput per 10 seconds"
    columns = page.locator("h2:has-text('Throughput') + .columns > div")
    assert columns.count() == 30
    labels = page.locator("h2:has-text('Throughput') ~ .axis").first.locator("time").all_inner_texts()
    assert len(labels) == 3 and len(set(labels)) == 3, labels
    assert troubles.seen == []


def test_times_are_the_readers_with_utc_in_the_title(report_page):
    page, troubles = report_page
    first = page.locator("header time").first
    assert first.get_attribute("title") == "2026-12-03 05:00:00 UTC"
    shown = first.inner_text()
    assert "10:30:00" in shown and "GMT+5:30" in shown, shown  # 05:00 UTC in Kolkata
    axis = page.locator(".axis time").first
    assert "10:30:00" in axis.inner_text() and axis.get_attribute("title") == "2026-12-03 05:00:00 UTC"
    assert troubles.seen == []


def test_no_sideways_scroll_and_no_serious_accessibility_violation(report_page):
    page, troubles = report_page
    no_sideways_scroll(page)
    confusion = page.locator("table.confusion").bounding_box()
    assert confusion["width"] > 0, "the confusion matrix is there (in its own scrolling box)"
    assert violations(page) == []
    assert troubles.seen == []
