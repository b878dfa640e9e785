"""``worker serve``'s page as a person uses it (issue 27): at 1366x768 and on a 390x844 phone,
with the digit model and the clothing model, in Playwright driving Debian's Chromium. Upload
into the inbox with a real daemon, review by button and by keyboard with undo, and what the
page must never do: log a console error, fail a request, scroll sideways."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from datetime import datetime, timezone

import pytest
from browsing import DESKTOP, PHONE, SIZES, Troubles, no_sideways_scroll
from factories import digit_stroke, wait_for, write

from worker import defaults
from worker.daemon.claim import new_id
from worker.outbox.records import Row
from worker.outbox.reviews import read_decisions
from worker.outbox.writer import Outbox

pytestmark = pytest.mark.slow

DIGITS = defaults.MODELS_DIR / "mnist.keras"
CLOTHING = defaults.MODELS_DIR / "fashion-mnist.keras"
MODELS = [pytest.param(DIGITS, id="digits"), pytest.param(CLOTHING, id="clothing")]
SAMPLES = defaults.REPO_ROOT / "samples"


@pytest.fixture(params=MODELS)
def model_path(request):
    return request.param


@pytest.fixture(params=SIZES)
def viewport(request):
    return request.param


@pytest.fixture
def served(tmp_path, model_path):
    """The app of ``worker serve`` with ``model_path`` (see ``serving``)."""
    from worker.model.classifier import Classifier

    with serving(tmp_path, Classifier(model_path, threads=1)) as found:
        yield found


@contextmanager
def serving(tmp_path, classifier):
    """The app of ``worker serve`` on uvicorn (a thread) with ``classifier``, decisions recorded
    as ``ana``; yields (base URL, inbox, outbox, class names)."""
    import threading

    import uvicorn
    from services import free_port

    from worker.web.app import ServeSettings, create_app

    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    port = free_port()
    app = create_app(ServeSettings(inbox=inbox, outbox=outbox, reviewer="ana"), classifier)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, 20)
    try:
        yield f"http://127.0.0.1:{port}", inbox, outbox, list(classifier.class_names)
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def opened(browser, served, viewport):
    """The page at ``viewport`` (a phone with touch), its troubles recorded; yields (page,
    troubles, served)."""
    phone = viewport == PHONE
    context = browser.new_context(viewport=viewport, has_touch=phone, is_mobile=phone)
    page = context.new_page()
    troubles = Troubles(page)
    yield page, troubles, served
    context.close()


def _rows(classes: list[str], count: int) -> list[Row]:
    """``count`` rows of these classes, least sure first (each says the i-th class)."""
    at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    rows = []
    for i in range(count):
        label, confidence = classes[i % len(classes)], 0.4 + 0.5 * i / count
        rest = (1 - confidence) / (len(classes) - 1)
        probabilities = {c: confidence if c == label else rest for c in classes}
        rows.append(Row(id=new_id(), file=f"scan-{i:02d}.png", label=label, confidence=confidence,
                        class_index=classes.index(label), sha256="ab" * 32, model="m", processed_at=at,
                        probabilities=probabilities, model_version="v1",
                        review="low-confidence low-margin" if i % 2 == 0 else "", review_score=1.5))
    return rows


def _record(outbox, classes, rows) -> None:
    box = Outbox(outbox, classes)
    box.record(rows)
    box.close()


def _open(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#model:has-text('version')")


def _queue(page) -> list[str]:
    """The files of the review queue's cards, in order."""
    return page.locator("#queue figure").evaluate_all("cards => cards.map(c => c.dataset.file)")


def test_the_page_says_one_thing_for_its_model(opened, model_path):
    page, troubles, (url, _, outbox, classes) = opened
    _record(outbox, classes, _rows(classes, 30))
    _open(page, url)
    page.wait_for_selector("#queue figure")
    page.wait_for_selector("#latest figure")
    digits = model_path == DIGITS
    assert page.locator("#draw").is_visible() is digits
    assert page.locator("#draw-off").is_visible() is not digits, "no drawing pad: says so, once"
    assert page.get_by_text("Draw a digit").first.is_visible() is digits
    assert not page.locator("#seen").is_visible(), "no picture before a drawing: no broken image"
    no_sideways_scroll(page)
    # One line each, never broken inside a word (read at once: the live outbox is redrawn).
    heights = page.locator("#latest .flag .reason").evaluate_all(
        "reasons => reasons.map(r => [r.textContent, r.getBoundingClientRect().height])")
    assert heights and all(height < 20 for _, height in heights), heights
    if page.viewport_size == PHONE:
        height = page.evaluate("document.documentElement.scrollHeight")
        assert height < 5000, f"{height} px tall on a phone"
    assert troubles.seen == []


def test_review_by_button_and_by_keyboard_with_undo(opened):
    page, troubles, (url, _, outbox, classes) = opened
    rows = {row.file: row for row in _rows(classes, 6)}
    _record(outbox, classes, list(rows.values()))
    _open(page, url)
    phone = page.viewport_size == PHONE
    first = page.locator("#queue figure").first
    first.wait_for()
    queue = [rows[f] for f in _queue(page)]
    assert queue[0].file == "scan-00.png", "least sure first"
    assert first.locator(".choices button").count() == len(classes)
    # By button (a tap on the phone): the first card is corrected to the second class.
    button = first.locator(f".choices button[data-label='{classes[1]}']")
    button.tap() if phone else button.click()
    page.wait_for_selector(f"#review-said:has-text('corrected to {classes[1]}')")
    # By keyboard: the next card (now first) corrected by its key, then one confirmed by Enter.
    page.locator("#queue figure .pair").first.click()
    page.keyboard.press("3")
    page.wait_for_selector(f"#review-said:has-text('{queue[1].file}: corrected to {classes[3]}')")
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#review-said:has-text('{queue[2].file}: confirmed {queue[2].label}')")
    # Undo by keyboard, then by the button: both keyboard decisions taken back, in turn.
    page.keyboard.press("Control+z")
    page.wait_for_selector(f"#review-said:has-text('{queue[2].file}: undone')")
    undo = page.locator("#undo")
    assert undo.is_visible() and queue[1].file in undo.inner_text()
    undo.tap() if phone else undo.click()
    page.wait_for_selector(f"#review-said:has-text('{queue[1].file}: undone')")
    files = _queue(page)
    assert files[:2] == [queue[1].file, queue[2].file], "back in the queue where they were"
    decisions = read_decisions(outbox)
    assert {k: d.label for k, d in decisions.by_row.items()} == {queue[0].id: classes[1]}
    assert decisions.by_row[queue[0].id].reviewer == "ana" and decisions.bad == 0
    lines = [json.loads(line) for line in (outbox / "reviews.jsonl").read_text().splitlines()]
    assert [line.get("undone") for line in lines] == [None, None, None, queue[2].label, classes[3]]
    no_sideways_scroll(page)
    assert troubles.seen == []


def test_an_upload_is_taken_at_once_and_its_row_shown(opened, model_path, tmp_path):
    """The daemon runs with its ordinary quiet times (30 s for a file still open): the row is
    on the page within seconds of the click, and within 2 s of being written."""
    from watching import Watcher

    page, troubles, (url, inbox, outbox, classes) = opened
    digit = 255 - digit_stroke(200)
    image = SAMPLES / "sandal.png" if model_path == CLOTHING else write(tmp_path / "mine.png", digit)
    watcher = Watcher(inbox, outbox, "--model", str(model_path), "--settle", str(defaults.SETTLE_SECONDS))
    try:
        watcher.wait_ready()
        _open(page, url)
        page.set_input_files("#files", str(image))
        clicked = time.time()
        page.click("#to-inbox")
        page.wait_for_selector("#uploads li:has-text('row written')", timeout=15_000)
        shown = time.time()
    finally:
        watcher.stop()
    assert shown - clicked < 10, f"{shown - clicked:.1f} s from the click to the row"
    row = json.loads((outbox / "predictions.jsonl").read_text().splitlines()[-1])
    written = datetime.fromisoformat(row["processed_at"].replace("Z", "+00:00")).timestamp()
    assert shown - written < 2, f"{shown - written:.1f} s from the row to the page"
    assert page.inner_text("#uploads li").startswith(f"{image.name}: {row['label']} (")
    no_sideways_scroll(page)
    assert troubles.seen == []


@pytest.mark.parametrize("model_path", [DIGITS], indirect=True)
def test_classify_now_shows_the_review_flag(opened):
    """A sandal read by the digit model: its answer says to review it, as the CLI does."""
    page, troubles, (url, _, _, _) = opened
    _open(page, url)
    page.set_input_files("#files", str(SAMPLES / "sandal.png"))
    page.click("#classify-now")
    item = page.locator("#uploads li").first
    item.locator(".flag").wait_for()
    assert "review:" in item.inner_text()
    assert troubles.seen == []


@pytest.mark.parametrize("model_path", [DIGITS], indirect=True)
def test_the_answer_to_a_drawing_is_in_view(opened):
    page, troubles, (url, _, _, _) = opened
    _open(page, url)
    box = page.locator("#canvas").bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + 50)
    page.mouse.down()
    for step in range(1, 19):  # a vertical stroke: a one
        page.mouse.move(x + step * 0.5, box["y"] + 50 + step * 10)
    page.mouse.up()
    page.wait_for_selector("#answer:has-text('Looks like')")
    answer = page.locator("#answer").bounding_box()
    assert 0 <= answer["y"] and answer["y"] + answer["height"] <= page.viewport_size["height"], answer
    assert page.locator("#seen").is_visible()
    assert page.evaluate("document.getElementById('seen').naturalWidth") > 0
    no_sideways_scroll(page)
    assert troubles.seen == []


@pytest.mark.parametrize("model_path", [CLOTHING], indirect=True)
@pytest.mark.parametrize("viewport", [DESKTOP], indirect=True)
def test_the_api_reference_reads_offline(opened):
    """/docs is made from /openapi.json by a script of the package: the browser may fetch
    nothing from anywhere but the server."""
    page, troubles, (url, _, _, _) = opened
    elsewhere = []
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url)
               else (elsewhere.append(route.request.url), route.abort()))
    page.goto(f"{url}/docs")
    page.wait_for_selector("article.operation")
    assert "POST /api/reviews/undo" in page.inner_text("#operations")
    assert elsewhere == [] and troubles.seen == []


@pytest.mark.parametrize("viewport", [PHONE], indirect=True)
def test_many_classes_are_chosen_from_a_list(browser, fake_classifier, tmp_path, viewport):
    """Past a dozen classes a card offers a list and a button, not a button a class."""
    fake_classifier.class_names = [f"class {chr(97 + i)}" for i in range(15)]
    fake_classifier.card = {"dataset": "letters"}
    with serving(tmp_path, fake_classifier) as (url, _, outbox, classes):
        _record(outbox, classes, _rows(classes, 3))
        context = browser.new_context(viewport=viewport, has_touch=True, is_mobile=True)
        page = context.new_page()
        troubles = Troubles(page)
        _open(page, url)
        card = page.locator("#queue figure").first
        card.locator("select").select_option("class n")
        card.locator("button", has_text="Record").tap()
        page.wait_for_selector("#review-said:has-text('corrected to class n')")
        no_sideways_scroll(page)
        context.close()
    assert [d.label for d in read_decisions(outbox).by_row.values()] == ["class n"]
    assert troubles.seen == []


@pytest.mark.parametrize("model_path", [DIGITS], indirect=True)
@pytest.mark.parametrize("viewport", [DESKTOP], indirect=True)
def test_a_key_decides_for_the_card_whose_button_has_focus(opened):
    """Tabbing through the cards' buttons: a key then applies to the card the focus is in."""
    page, troubles, (url, _, outbox, classes) = opened
    _record(outbox, classes, _rows(classes, 4))
    _open(page, url)
    page.locator("#queue figure").first.wait_for()
    second = _queue(page)[1]
    page.locator("#queue figure").nth(1).locator("button").first.focus()
    page.keyboard.press("5")
    page.wait_for_selector(f"#review-said:has-text('{second}: corrected to 5')")
    assert troubles.seen == []
