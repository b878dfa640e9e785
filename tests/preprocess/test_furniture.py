"""digits-v5 takes a form's furniture out before the crop: a line under the digit, a box or comb
cell around it, a printed caption beside it; a 1, a 7 and a 4 stay whole, printed thin too."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from worker.preprocess import DIGITS, DIGITS_V4, normalize

# Strokes of a digit on a 100x100 grid: a 1, a 7 (its bar), a 4 (its bar crossing the stem).
SHAPES = {
    "1": [[(52, 12), (48, 88)]],
    "7": [[(25, 14), (75, 14), (45, 88)]],
    "4": [[(55, 12), (22, 62), (80, 62)], [(62, 30), (62, 88)]],
}


# Inputs this alike (``_overlap``) read as the same digit.
SAME = 0.9


def _page(digit: str, *, height: int = 420, width: int = 640, at=(160, 120), side: int = 180,
          pen: int = 14) -> np.ndarray:
    """A light page with ``digit``'s strokes in dark pen, ``side`` pixels high at ``at`` (x, y)."""
    page = np.full((height, width), 228, np.uint8)
    for stroke in SHAPES[digit]:
        points = np.array([(at[0] + x * side // 100, at[1] + y * side // 100) for x, y in stroke], np.int32)
        cv2.polylines(page, [points], False, 30, pen, cv2.LINE_AA)
    return page


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """How alike two 28x28 inputs are: the cosine of their strokes, each blurred by a pixel and a
    half (a stroke a pixel off is still the same stroke). 1 for the same; a digit shrunk to fit a
    line beside it barely overlaps its own."""
    a, b = (cv2.GaussianBlur(x[:, :, 0], (0, 0), 1.5).ravel() for x in (a, b))
    return float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b) or 1)


def _bottom(digit: str, at=(160, 120), side: int = 180) -> int:
    return at[1] + max(y for stroke in SHAPES[digit] for _, y in stroke) * side // 100


@pytest.mark.parametrize("digit", sorted(SHAPES))
def test_a_clean_1_7_and_4_are_left_as_they_were(digit):
    """No furniture, nothing taken: the bar of a 7 or a 4 is a pen stroke, not a line, and a 1
    is not a box's side. v5 gives exactly what v4 gives."""
    page = _page(digit)
    assert np.array_equal(normalize(page, DIGITS), normalize(page, DIGITS_V4))


@pytest.mark.parametrize("digit", sorted(SHAPES))
@pytest.mark.parametrize("side", [30, 40])
def test_a_small_light_printed_digit_keeps_its_thin_strokes(digit, side):
    """A digit printed small in a light face (strokes a pixel wide, grain and JPEG, as a label
    or a receipt gives it): its pen is too thin for a box's side to be thinner, so its straight
    strokes (the stem of a 4, the bar and stem of a 7) are not taken for one. v5 gives exactly
    what v4 gives."""
    rng = np.random.default_rng(side)
    page = _page(digit, height=side * 3, width=side * 3, at=(side, side), side=side, pen=1).astype(np.float32)
    page = np.clip(page + rng.normal(0, 4, page.shape), 0, 255).astype(np.uint8)
    page = cv2.imdecode(cv2.imencode(".jpg", page, [cv2.IMWRITE_JPEG_QUALITY, 75])[1], cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(normalize(page, DIGITS), normalize(page, DIGITS_V4))


@pytest.mark.parametrize("digit", sorted(SHAPES))
@pytest.mark.parametrize("style", ["solid", "skewed", "dashed", "dotted", "part"])
def test_a_line_under_the_digit_is_taken_out(digit, style):
    """A line under the digit (across the page, a field's width, a little skewed, dashed or
    dotted) touching its lowest stroke: v5 reads the page as it reads it without the line; v4
    does not (the line is ink to it)."""
    clean = _page(digit)
    page = clean.copy()
    y = _bottom(digit) + 4
    x0, x1 = (80, 520) if style == "part" else (0, page.shape[1] - 1)
    drop = 14 if style == "skewed" else 0  # about 2 degrees over the page
    if style in ("dashed", "dotted"):
        step, dash = (24, 14) if style == "dashed" else (9, 2)
        for x in range(x0, x1, step):
            cv2.line(page, (x, y), (x + dash, y), 40, 3)
    else:
        cv2.line(page, (x0, y - drop // 2), (x1, y + drop // 2), 40, 3, cv2.LINE_AA)
    expected = normalize(clean, DIGITS)
    assert _overlap(normalize(page, DIGITS), expected) > SAME
    if style not in ("dashed", "dotted"):  # v4 drops short dashes as specks
        assert _overlap(normalize(page, DIGITS_V4), expected) < SAME, "the page must be hard for v4"


def test_a_line_crossing_the_strokes_leaves_them_joined():
    """A line through the lower part of a 4 and a 1: the stems below it stay in the crop,
    joined to the rest (the digit keeps its height)."""
    for digit in ("1", "4"):
        clean = _page(digit)
        page = clean.copy()
        cv2.line(page, (0, _bottom(digit) - 30), (page.shape[1] - 1, _bottom(digit) - 30), 40, 3)
        assert _overlap(normalize(page, DIGITS), normalize(clean, DIGITS)) > SAME, digit


def _boxed(page: np.ndarray, kind: str) -> np.ndarray:
    """``page`` with a thin printed box around the digit (or the box without its top, or a comb
    of three cells, the digit in the second)."""
    page = page.copy()
    left, top, right, bottom = 140, 100, 370, 330
    if kind == "comb":
        cells = [left - 230, left, right, right + 230]
        cv2.line(page, (cells[0], top), (cells[-1], top), 50, 3)
        cv2.line(page, (cells[0], bottom), (cells[-1], bottom), 50, 3)
        for x in cells:
            cv2.line(page, (x, top), (x, bottom), 50, 3)
        return page
    sides = [((left, top), (right, top)), ((left, bottom), (right, bottom)),
             ((left, top), (left, bottom)), ((right, top), (right, bottom))]
    for start, end in sides[1:] if kind == "open box" else sides:
        cv2.line(page, start, end, 50, 2)
    return page


@pytest.mark.parametrize("digit", sorted(SHAPES))
@pytest.mark.parametrize("kind", ["box", "open box"])
def test_a_box_around_the_digit_is_taken_out(digit, kind):
    """A thin printed box (or one with its top missing) around the digit: read as without it,
    where v4 reads the box."""
    clean = _page(digit)
    page = _boxed(clean, kind)
    expected = normalize(clean, DIGITS)
    assert _overlap(normalize(page, DIGITS), expected) > SAME
    assert _overlap(normalize(page, DIGITS_V4), expected) < SAME, "the page must be hard for v4"


@pytest.mark.parametrize("digit", ["1", "4", "7"])
def test_a_comb_field_around_the_digit_is_taken_out(digit):
    """A comb of three cells, the digit in the middle one: read as without it. The comb sets the
    locate step's crop and scale, where its dividers are half as thick as a 1's stroke and no
    side to the thin rule; they are no part of the digit either (as tall as a 1 but far
    narrower than it is long), so the 1 alone is looked at closer."""
    clean = _page(digit)
    page = _boxed(clean, "comb")
    expected = normalize(clean, DIGITS)
    assert _overlap(normalize(page, DIGITS), expected) > SAME
    assert _overlap(normalize(page, DIGITS_V4), expected) < SAME, "the page must be hard for v4"


@pytest.mark.parametrize("where", ["left", "above"])
def test_a_printed_caption_beside_the_field_is_left_out(where):
    """"Qty:" a third of the digit's height, half a digit away: left out of the crop."""
    clean = _page("7", height=520, width=760, at=(420, 220))
    page = clean.copy()
    origin = (160, 380) if where == "left" else (420, 150)
    cv2.putText(page, "Qty:", origin, cv2.FONT_HERSHEY_SIMPLEX, 1.6, 30, 4, cv2.LINE_AA)
    expected = normalize(clean, DIGITS)
    assert _overlap(normalize(page, DIGITS), expected) > SAME
    assert _overlap(normalize(page, DIGITS_V4), expected) < SAME, "the page must be hard for v4"


def test_pieces_of_one_digit_are_all_kept():
    """A 4 written in two strokes that do not meet: both pieces are the digit, not a caption."""
    page = np.full((420, 640), 228, np.uint8)
    cv2.polylines(page, [np.array([(250, 120), (190, 230), (330, 230)], np.int32)], False, 30, 14)
    cv2.line(page, (300, 150), (300, 300), 30, 14)  # the stem, a gap of a stroke above the bar
    cv2.rectangle(page, (286, 215), (314, 245), 228, -1)
    assert np.array_equal(normalize(page, DIGITS), normalize(page, DIGITS_V4))


# --- with the shipped model and MNIST -------------------------------------------------------------


def _classifier_and_sets(real_model_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from hard_sets import accuracy, hard_set

    from worker.model.classifier import Classifier

    return Classifier(real_model_path), accuracy, hard_set


@pytest.mark.slow
@pytest.mark.parametrize(("name", "floor_v5", "ceiling_v4"), [
    ("underlined", 0.93, 0.60), ("boxes and combs", 0.78, 0.60), ("captions", 0.93, 0.60),
])
def test_the_form_sets_are_read(real_model_path, name, floor_v5, ceiling_v4):
    """100 of each form set (fixed seed; tests/factories.py), the shipped model: v5 above its
    floor (a little below what it measures: 97, 82, 97 %), v4 far below (it measures 44, 37,
    41 %: the sets are hard for what came before)."""
    from worker.preprocess import DIGITS_V4

    classifier, accuracy, hard_set = _classifier_and_sets(real_model_path)
    pages, labels = hard_set(name, 100)
    v4, v5 = (accuracy(classifier, pages, labels, profile) for profile in (DIGITS_V4, DIGITS))
    assert v5 >= floor_v5 and v4 <= ceiling_v4, (v4, v5)


@pytest.mark.slow
def test_mnist_1s_7s_and_4s_read_the_same_with_and_without_the_step(real_model_path):
    """20 MNIST test digits each of 1, 7 and 4 as clean scanned pages (scan_page): v5 gives
    each the label v4 gives it, from inputs that barely differ."""
    from factories import scan_page

    from worker.training import datasets

    classifier, _, _ = _classifier_and_sets(real_model_path)
    data = datasets.load("mnist")
    rng = np.random.default_rng(25)
    for digit in (1, 7, 4):
        chosen = np.flatnonzero(data.test_labels == digit)[:20]
        pages = [scan_page(data.test_images[i], rng) for i in chosen]
        v4 = np.stack([normalize(p, DIGITS_V4) for p in pages])
        v5 = np.stack([normalize(p, DIGITS) for p in pages])
        assert np.abs(v5 - v4).mean() < 0.005, digit
        labels4 = classifier.predict_proba(v4).argmax(axis=1)
        labels5 = classifier.predict_proba(v5).argmax(axis=1)
        assert np.array_equal(labels5, labels4) and np.mean(labels5 == digit) >= 0.95, (digit, labels5)
