"""Training digits rendered the way users' files come: as scans, in thick marker, at low
resolution, on forms, printed, drawn on the web page's canvas (the last three: ``form_render``).

``worker train --scan-augment SHARE`` replaces that share of the training images by one of these
renderings sent through the real preprocessing, so the model learns what it will be served.

The renderings are drawn apart from the hard sets in ``tests/factories.py`` (those measure, on
*test* digits): other ranges, and blur, smudges and rotations those sets lack, so a gain on the
hard sets is not a model learning one generator by heart.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np

from worker.errors import InputError
from worker.preprocess import Profile, normalize, normalize_many
from worker.training.form_render import canvas, on_form, printed, printed_glyph


def scanned(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A scan of a small piece of paper: grain, a light gradient, pen or pencil, a slight turn,
    maybe ruled lines and a blur, JPEG-compressed (grey uint8)."""
    side = int(rng.integers(48, 200))
    height, width = (int(side * rng.uniform(1.4, 2.6)) for _ in range(2))
    page = np.full((height, width), float(rng.uniform(160, 245)), np.float32)
    page += np.linspace(-1, 1, width, dtype=np.float32)[None, :] * float(rng.uniform(0, 50))
    page += np.linspace(-1, 1, height, dtype=np.float32)[:, None] * float(rng.uniform(0, 30))
    if rng.random() < 0.5:
        step = int(rng.integers(side // 3, side)) + 2
        page[int(rng.integers(0, step)) :: step, :] -= float(rng.uniform(15, 50))
    glyph = _turned(cv2.resize(digit, (side, side), interpolation=cv2.INTER_CUBIC), rng, 8)
    top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
    ink = float(rng.uniform(100, 160)) if rng.random() < 0.35 else float(rng.uniform(0, 70))
    region = page[top : top + side, left : left + side]
    region -= glyph.astype(np.float32) / 255 * np.maximum(region - ink, 0)
    page += rng.normal(0, rng.uniform(2, 20), page.shape).astype(np.float32)
    if rng.random() < 0.4:
        page = cv2.GaussianBlur(page, (0, 0), float(rng.uniform(0.5, 1.8)))
    page = np.clip(page, 0, 255).astype(np.uint8)
    return cv2.imdecode(cv2.imencode(".jpg", page, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 90))])[1],
                        cv2.IMREAD_GRAYSCALE)


def marker(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Drawn with a thick marker on a card, maybe smudged (grey uint8)."""
    side = int(rng.integers(64, 260))
    glyph = cv2.resize(digit, (side, side), interpolation=cv2.INTER_CUBIC)
    width = max(3, int(side * rng.uniform(0.05, 0.17))) | 1
    glyph = cv2.dilate(glyph, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width)))
    glyph = _turned(glyph, rng, 6)
    if rng.random() < 0.5:
        glyph = cv2.GaussianBlur(glyph, (0, 0), width / 4)
    margin = int(side * rng.uniform(0.15, 0.5))
    paper = float(rng.uniform(180, 250))
    card = np.full((side + 2 * margin, side + 2 * margin), paper, np.float32)
    card[margin : margin + side, margin : margin + side] -= glyph.astype(np.float32) / 255 * (paper - 15)
    card += rng.normal(0, rng.uniform(1, 8), card.shape).astype(np.float32)
    return np.clip(card, 0, 255).astype(np.uint8)


def coarse(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Drawn on a coarse grid (6 to 14 cells) and blown up to a bitmap, as forms and faxes give
    digits; sometimes not black and white but grey levels (grey uint8)."""
    cells = int(rng.integers(6, 15))
    small = cv2.resize(digit, (cells, cells), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.7:
        small = np.where(small > rng.integers(40, 110), 255, 0).astype(np.uint8)
    side = int(rng.integers(40, 240))
    big = cv2.resize(small, (side, side), interpolation=cv2.INTER_NEAREST)
    return 255 - np.pad(big, int(side * rng.uniform(0.1, 0.5)))


def _rendered(digit: np.ndarray, label: int, rng: np.random.Generator) -> np.ndarray:
    kind = KINDS[int(rng.integers(len(KINDS)))]
    if kind == "printed":
        page = printed(label, rng) if label >= 0 else None
        return page if page is not None else scanned(digit, rng)
    return kind(digit, rng)


def _turned(glyph: np.ndarray, rng: np.random.Generator, degrees: float) -> np.ndarray:
    side = glyph.shape[0]
    turn = cv2.getRotationMatrix2D((side / 2, side / 2), float(rng.uniform(-degrees, degrees)), 1.0)
    return cv2.warpAffine(glyph, turn, (side, side))


# Scans are what most users drop; then forms, print and the web page's canvas (``form_render``).
# Coarse grids keep about the quarter they had before forms came in: with one share in eleven,
# the low-resolution hard set fell two points.
KINDS = (scanned, scanned, scanned, marker, coarse, coarse, coarse,
         on_form, on_form, on_form, "printed", "printed", canvas)


_CHUNKS = max(1, os.cpu_count() or 1) * 4


def render_many(digits: np.ndarray, profile: Profile, seed: int,
                labels: np.ndarray | None = None) -> np.ndarray:
    """Each digit (uint8 28x28, white on black) rendered as one of ``KINDS`` and normalized with
    ``profile``: float32 (N, 28, 28, 1). "printed" draws the digit's label (0-9) in a font
    instead; without ``labels``, or fonts, it is a scan. A rendering the preprocessing refuses
    (its ink lost in the grain) keeps the original digit. Spread over the cores."""
    chunks = np.array_split(np.arange(len(digits)), _CHUNKS)
    labels = np.full(len(digits), -1) if labels is None else labels
    jobs = [(digits[c], labels[c], profile, seed + i) for i, c in enumerate(chunks) if len(c)]
    return _spread(_render_chunk, jobs)


def render_not_digits(count: int, profile: Profile, seed: int) -> np.ndarray:
    """``count`` letters and symbols that are no digit, printed (``form_render.printed_glyph``)
    and normalized with ``profile``, as the review flag's ``not-a-digit`` is fitted on: float32
    (count, 28, 28, 1); none if this system has no fonts to print them in. Spread over the cores."""
    sizes = [len(chunk) for chunk in np.array_split(np.arange(count), _CHUNKS)]
    jobs = [(size, profile, seed + i) for i, size in enumerate(sizes) if size]
    return _spread(_glyph_chunk, jobs)


def _spread(work, jobs: list[tuple]) -> np.ndarray:
    # spawn, not fork: training has TensorFlow's threads running by now
    with ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = [part for part in pool.map(work, *zip(*jobs, strict=True)) if len(part)]
    return np.concatenate(parts) if parts else np.zeros((0, 28, 28, 1), np.float32)


def _render_chunk(digits: np.ndarray, labels: np.ndarray, profile: Profile, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for digit, label in zip(digits, labels, strict=True):
        page = _rendered(digit, int(label), rng)
        try:
            out.append(normalize(page, profile))
        except InputError:
            out.append(normalize_many(digit[None], profile)[0])
    return np.stack(out).astype(np.float32)


def _glyph_chunk(count: int, profile: Profile, seed: int) -> np.ndarray:
    """``count`` glyphs, drawn again where the font drawn lacks one or the preprocessing refuses
    the page, in five times as many draws at the most (none at all on a system without fonts)."""
    rng, out = np.random.default_rng(seed), []
    for _ in range(count * 5):
        if len(out) == count:
            break
        page = printed_glyph(rng)
        if page is None:
            continue
        try:
            out.append(normalize(page, profile))
        except InputError:
            continue
    return np.stack(out).astype(np.float32) if out else np.zeros((0, 28, 28, 1), np.float32)
