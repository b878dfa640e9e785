"""Searching the outbox on ``worker serve``'s page (issue 27, item 7) as a person does it, at
1366x768 and on a 390x844 phone, with the digit model, in Playwright driving Debian's Chromium:
filter and search, open a row, download the view as CSV, the chart of rows per minute; no
console error, no sideways scroll, no serious accessibility violation (axe-core)."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone

import pytest
from accessibility import violations
from browsing import PHONE, SIZES, Troubles, no_sideways_scroll
from factories import digit_stroke, write
from test_page import CLOTHING, DIGITS, _open, serving
from test_page import _rows as clothing_rows

from worker.daemon.claim import new_id
from worker.errors import InputError
from worker.outbox.records import Row, error_record
from worker.outbox.reviews import append_review
from worker.outbox.writer import Outbox

pytestmark = pytest.mark.slow


@pytest.fixture(params=SIZES)
def viewport(request):
    return request.param


def _rows(count: int) -> list[Row]:
    """Rows written now: folders a/ and b/ in turn, digits 0-9 in turn, every third flagged."""
    at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    digits = [str(d) for d in range(10)]
    rows = []
    for i in range(count):
        label = digits[i % 10]
        probabilities = {d: 0.91 if d == label else 0.01 for d in digits}
        rows.append(Row(id=new_id(), file=f"{'ab'[i % 2]}/scan-{i:02d}.png", label=label, confidence=0.91,
                        class_index=i % 10, sha256="ab" * 32, model="mnist", processed_at=at,
                        probabilities=probabilities, model_version="v1",
                        review="low-margin" if i % 3 == 0 else "", review_score=1.0))
    return rows


def _fail(outbox, file: str, kind: str) -> None:
    """An error record as the daemon writes it beside a quarantined input."""
    record = error_record(InputError(kind, f"{file} cannot be read"), claim_id=new_id(), file=file,
                          time=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                          model="mnist", model_version="v1")
    path = outbox / "failed" / f"{file}.error.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


@pytest.fixture
def searched(browser, tmp_path, viewport):
    """The page over an outbox of 30 rows (the inputs of the newest 10 archived, a decision on
    the newest) and a failure: yields (page, troubles, outbox, rows)."""
    from worker.model.classifier import Classifier

    with serving(tmp_path, Classifier(DIGITS, threads=1)) as (url, _, outbox, classes):
        rows = _rows(30)
        box = Outbox(outbox, classes)
        box.record(rows)
        box.close()
        for r in rows[-10:]:
            write(outbox / "processed" / r.file, 255 - digit_stroke(200))
        _fail(outbox, "b/broken.png", "corrupt")
        newest = rows[-1]
        append_review(outbox, row_id=newest.id, file=newest.file, predicted=newest.label, label="7",
                      at=datetime.now(timezone.utc).timestamp(), reviewer="ana")
        phone = viewport == PHONE
        context = browser.new_context(viewport=viewport, has_touch=phone, is_mobile=phone,
                                      accept_downloads=True)
        page = context.new_page()
        troubles = Troubles(page)
        _open(page, url)
        page.wait_for_selector("#results tbody tr")
        yield page, troubles, outbox, rows
        context.close()


def _found(page) -> list[list[str]]:
    return page.locator("#results tbody tr").evaluate_all(
        "lines => lines.map(l => Array.from(l.cells).map(c => c.textContent))")


def test_filter_and_search(searched):
    page, troubles, _, rows = searched
    phone = page.viewport_size == PHONE
    first = [r.file for r in reversed(rows)]
    assert [line[0] for line in _found(page)] == first[: 10 if phone else 30], "at first: the newest"
    if phone:  # a short page, and More for the next ones
        page.click("#more")
        page.wait_for_function("document.querySelectorAll('#results tbody tr').length === 20")
        assert [line[0] for line in _found(page)] == first[:20]
    page.select_option("#f-label", "3")
    page.select_option("#f-flagged", "true")
    page.click("#search-form button[type=submit]")
    page.wait_for_function("document.getElementById('search-said').textContent.includes('whole outbox')")
    expected = [r.file for r in reversed(rows) if r.label == "3" and r.review]
    assert [line[0] for line in _found(page)] == expected and expected
    page.select_option("#f-label", "")
    page.select_option("#f-flagged", "")
    page.fill("#f-folder", "b")
    page.fill("#f-name", "SCAN-1")
    page.press("#f-name", "Enter")
    page.wait_for_function("document.querySelectorAll('#results tbody tr').length === 5")
    assert [line[0] for line in _found(page)] == [f"b/scan-{i}.png" for i in (19, 17, 15, 13, 11)]
    no_sideways_scroll(page)
    assert violations(page) == []
    assert troubles.seen == []


def test_failures_by_kind(searched):
    page, troubles, _, _ = searched
    page.select_option("#f-show", "failures")
    assert page.locator("#f-label").is_disabled() and not page.locator("#f-kind").is_disabled()
    page.fill("#f-kind", "corrupt")
    page.click("#search-form button[type=submit]")
    page.wait_for_selector("#results thead th:has-text('kind')")
    page.wait_for_function("document.querySelectorAll('#results tbody tr').length === 1")
    assert _found(page)[0][:2] == ["b/broken.png", "corrupt"]
    page.fill("#f-kind", "too-big")
    page.click("#search-form button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#results tbody tr').length === 0")
    assert troubles.seen == []


def test_open_a_row_to_see_its_pictures_probabilities_and_history(searched):
    page, troubles, _, rows = searched
    first = rows[-1]  # the newest: on the first page, even a phone's
    button = page.locator(f"#results tr[data-id='{first.id}'] td.file button")
    button.tap() if page.viewport_size == PHONE else button.click()
    dialog = page.locator("#row-dialog")
    dialog.wait_for(state="visible")
    assert page.inner_text("#row-title") == first.file
    widths = dialog.locator("#row-pictures img").evaluate_all("images => images.map(i => i.naturalWidth)")
    assert len(widths) == 2 and all(w > 0 for w in widths), "the input as archived and the 28x28"
    assert dialog.locator("#row-bars tr").count() == 10
    assert "ana: said 7" in page.inner_text("#row-history")
    box = dialog.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= page.viewport_size["width"], box
    assert violations(page) == []
    page.click("#row-close")
    dialog.wait_for(state="hidden")
    assert troubles.seen == []


def test_the_view_downloads_as_csv(searched, tmp_path):
    page, troubles, _, rows = searched
    page.fill("#f-folder", "a")
    page.click("#search-form button[type=submit]")
    shown = 10 if page.viewport_size == PHONE else 15  # the CSV: the whole view, not one page of it
    page.wait_for_function(f"document.querySelectorAll('#results tbody tr').length === {shown}")
    with page.expect_download() as download:
        page.click("#csv")
    saved = tmp_path / "view.csv"
    download.value.save_as(saved)
    with open(saved, newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0][:3] == ["file", "label", "confidence"] and table[0][-10:] == [str(d) for d in range(10)]
    assert [line[0] for line in table[1:]] == [r.file for r in reversed(rows) if r.file.startswith("a/")]
    assert troubles.seen == []


def test_the_chart_shows_the_rows_of_this_minute(searched):
    page, troubles, _, _ = searched
    page.wait_for_selector("#activity .minute .flagged")
    columns = page.locator("#activity .minute")
    assert columns.count() == 60
    label = page.get_attribute("#activity", "aria-label")
    assert "30 rows, 10 flagged" in label, label
    assert troubles.seen == []


@pytest.mark.parametrize("viewport", SIZES, indirect=True)
def test_the_page_of_the_clothing_model_has_no_serious_accessibility_violation(browser, tmp_path, viewport):
    """axe-core over the whole page (upload, live outbox, search, review cards with the
    class names as buttons) with the clothing model."""
    from worker.model.classifier import Classifier

    with serving(tmp_path, Classifier(CLOTHING, threads=1)) as (url, _, outbox, classes):
        box = Outbox(outbox, classes)
        box.record(clothing_rows(classes, 6))
        box.close()
        context = browser.new_context(viewport=viewport)
        page = context.new_page()
        troubles = Troubles(page)
        _open(page, url)
        page.wait_for_selector("#queue figure")
        page.wait_for_selector("#results tbody tr")
        found = violations(page)
        context.close()
    assert found == []
    assert troubles.seen == []


@pytest.mark.parametrize("viewport", SIZES, indirect=True)
def test_the_clothing_models_rows_filter_by_their_class_names_and_open(browser, tmp_path, viewport):
    """Class names that are not digits, one with a slash ("T-shirt/top"): the label filter finds
    their rows, and a row found opens with a bar for each of the ten classes."""
    from worker.model.classifier import Classifier

    with serving(tmp_path, Classifier(CLOTHING, threads=1)) as (url, _, outbox, classes):
        rows = clothing_rows(classes, 12)
        box = Outbox(outbox, classes)
        box.record(rows)
        box.close()
        phone = viewport == PHONE
        context = browser.new_context(viewport=viewport, has_touch=phone, is_mobile=phone)
        page = context.new_page()
        troubles = Troubles(page)
        _open(page, url)
        page.wait_for_selector("#results tbody tr")
        page.select_option("#f-label", "T-shirt/top")
        page.click("#search-form button[type=submit]")
        page.wait_for_function("document.getElementById('search-said').textContent.includes('whole outbox')")
        expected = [r for r in reversed(rows) if r.label == "T-shirt/top"]
        assert [line[0] for line in _found(page)] == [r.file for r in expected] and len(expected) == 2
        button = page.locator(f"#results tr[data-id='{expected[0].id}'] td.file button")
        button.tap() if phone else button.click()
        page.locator("#row-dialog").wait_for(state="visible")
        assert page.inner_text("#row-title") == expected[0].file
        assert page.locator("#row-bars tr").count() == 10
        no_sideways_scroll(page)
        context.close()
    assert troubles.seen == []
