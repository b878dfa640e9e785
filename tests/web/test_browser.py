"""The HTML report in a real browser: Playwright driving Debian's Chromium (installed by
./scripts/test), the page opened from disk as a user would open a mailed report."""

from __future__ import annotations

import json

import pytest
from factories import digit_stroke, write
from outboxes import outbox_with, row
from typer.testing import CliRunner

from worker.cli import app


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


# --- the page of worker serve -------------------------------------------------------------------


@pytest.fixture
def served_page(tmp_path, real_model_path):
    """``worker serve``'s app on a free loopback port (uvicorn on a thread, the real model),
    over an inbox and outbox of its own; yields (base URL, inbox, outbox)."""
    import socket
    import threading

    import uvicorn
    from factories import wait_for

    from worker.model.classifier import Classifier
    from worker.web.app import ServeSettings, create_app

    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(ServeSettings(inbox=inbox, outbox=outbox), Classifier(real_model_path, threads=1))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, 20)
    yield f"http://127.0.0.1:{port}", inbox, outbox
    server.should_exit = True
    thread.join(10)


@pytest.mark.slow
def test_a_digit_drawn_with_the_mouse_is_read(browser, served_page):
    url, _, _ = served_page
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("#model:has-text('version')")
    box = page.locator("#canvas").bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + 50)
    page.mouse.down()
    for step in range(1, 19):  # a vertical stroke, top to bottom: a one
        page.mouse.move(x + step * 0.5, box["y"] + 50 + step * 10)
    page.mouse.up()
    page.wait_for_selector("#answer:has-text('Looks like')")
    assert page.inner_text("#answer").startswith("Looks like 1 ("), page.inner_text("#answer")
    assert page.locator("#answer").get_attribute("aria-live") == "polite"
    assert page.locator("#bars tr").count() == 10
    assert page.evaluate("document.getElementById('seen').naturalWidth") == 56
    page.close()


@pytest.mark.slow
def test_an_upload_dropped_into_the_inbox_is_followed_to_its_row(browser, served_page, tmp_path):
    import subprocess
    import sys

    url, inbox, outbox = served_page
    digit = write(tmp_path / "mine.png", 255 - digit_stroke(200))
    watch = [sys.executable, "-m", "worker", "watch", "--inbox", str(inbox), "--outbox", str(outbox),
             "--settle", "0.2"]
    daemon = subprocess.Popen(watch, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        page = browser.new_page()
        page.goto(url)
        page.set_input_files("#files", str(digit))
        page.click("#to-inbox")
        page.wait_for_selector("#uploads li:has-text('row written')", timeout=60_000)
        assert page.inner_text("#uploads li").startswith("mine.png: 1 (")
        stored = page.locator("#uploads li").get_attribute("data-name")
        assert stored.startswith("mine-") and stored.endswith(".png")
        page.wait_for_selector(f"#latest figure[data-file='{stored}']", timeout=10_000)
        page.close()
    finally:
        daemon.terminate()
        daemon.wait(30)


@pytest.mark.slow
def test_a_label_corrected_with_the_keyboard_lands_in_reviews(browser, served_page):
    url, _, outbox = served_page
    rows = [row("a.png", "7", 0.55, second="1", second_p=0.4), row("b.png", "3", 0.99)]
    from worker.outbox.writer import Outbox

    box = Outbox(outbox, [str(d) for d in range(10)])
    box.record(rows)
    box.close()
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("#queue figure")
    assert page.locator("#queue figure").first.get_attribute("data-file") == "a.png", "least sure first"
    page.locator("#queue figure").first.click()
    page.keyboard.press("1")
    page.wait_for_selector("#review-said:has-text('corrected to 1')")
    page.keyboard.press("Enter")  # the next, b.png, confirmed as the model said
    page.wait_for_selector("#review-said:has-text('confirmed 3')")
    decisions = [json.loads(line) for line in (outbox / "reviews.jsonl").read_text().splitlines()]
    said = [(d["id"], d["predicted"], d["label"]) for d in decisions]
    assert said == [(rows[0].id, "7", "1"), (rows[1].id, "3", "3")]
    page.close()
