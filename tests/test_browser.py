"""The HTML report in a real browser: Playwright driving Debian's Chromium (installed by
./scripts/test), the page opened from disk as a user would open a mailed report."""

from __future__ import annotations

import shutil

import pytest
from factories import digit_stroke, write
from test_report import outbox_with, row
from typer.testing import CliRunner

from worker.cli import app

CHROMIUM = "/usr/bin/chromium"
# As root, and with no network: no sandbox, and none of Chromium's own background connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (./scripts/test installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_a_confusion_cell_leads_to_the_pictures_of_its_mistakes(browser, tmp_path):
    rows = [row("3/a.png", "3", 0.95), row("3/b.png", "5", 0.91, second="3", second_p=0.08),
            row("5/c.png", "5", 0.99), row("5/d.png", "5", 0.6)]
    outbox = outbox_with(tmp_path, rows, failures=[("bad.png", "corrupt")])
    for r in rows:
        write(outbox / "processed" / r.file, 255 - digit_stroke(200))
    html = tmp_path / "report.html"
    command = ["report", "--outbox", str(outbox), "--truth", "folders", "--html", str(html)]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output

    page = browser.new_page()
    page.goto(html.as_uri())
    assert "75.00 %\naccuracy on 4 known" in page.inner_text("header")
    page.click("table.confusion a")  # the one mistake: a 3 taken for a 5
    assert page.url.endswith("#mistakes-0-1")
    cell = page.locator("section.cell:target")
    assert "3 taken for 5: 1" in cell.inner_text()
    figure = cell.locator('figure[data-file="3/b.png"]')
    assert figure.is_visible()
    widths = figure.locator("img").evaluate_all("images => images.map(i => i.naturalWidth)")
    assert len(widths) == 2 and all(w > 0 for w in widths), "both pictures decode"
    review = page.locator("#review ~ .gallery figure").first
    assert review.get_attribute("data-file") == "5/d.png", "least sure first"
    page.close()
