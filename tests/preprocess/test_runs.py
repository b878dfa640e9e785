"""The early exit before an opening by a long line never says "nothing" where OpenCV's opening
finds something: on images of every size, with runs of every length, at the image's edges too."""

from __future__ import annotations

import cv2
import numpy as np

from worker.preprocess.runs import opening_finds_above, shortest_window

LEVEL = 10


def _opened_above(ink: np.ndarray, length: int, horizontal: bool) -> bool:
    size = (length, 1) if horizontal else (1, length)
    opened = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, size))
    return bool((opened > LEVEL).any())


def _image(rng: np.random.Generator) -> np.ndarray:
    """Grain below and above LEVEL, and a few straight runs of ink, some touching an edge."""
    height, width = (int(v) for v in rng.integers(1, 90, 2))
    ink = rng.integers(0, LEVEL + 6, (height, width)).astype(np.uint8)
    for _ in range(int(rng.integers(0, 4))):
        y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
        run = int(rng.integers(1, 100))
        if rng.random() < 0.5:
            ink[y, max(0, x - run) : x + 1] = 200
        else:
            ink[max(0, y - run) : y + 1, x] = 200
    return ink


def test_it_says_nothing_only_where_the_opening_finds_nothing():
    rng = np.random.default_rng(7)
    said_nothing = found = 0
    for _ in range(4000):
        ink = _image(rng)
        horizontal = bool(rng.random() < 0.5)
        length = int(rng.integers(1, 2 * max(ink.shape) + 2))
        finds = _opened_above(ink, length, horizontal)
        if not opening_finds_above(ink, LEVEL, length, horizontal):
            said_nothing += 1
            assert not finds, (ink.shape, length, horizontal)
        found += finds
    assert said_nothing > 1000 and found > 500  # both answers were put to the test


def test_a_line_at_the_edge_is_found_where_the_erosion_window_is_cut_short():
    """Past the edge OpenCV's erosion takes the border as ink: a run from the edge half the
    kernel long survives the opening, and the check must see it."""
    ink = np.zeros((20, 100), np.uint8)
    ink[5, : shortest_window(81, 100)] = 200
    assert _opened_above(ink, 81, True)
    assert opening_finds_above(ink, LEVEL, 81, True)
    ink[5, 0] = 0  # one short of the shortest window: nothing survives, and it says so
    assert not _opened_above(ink, 81, True)
    assert not opening_finds_above(ink, LEVEL, 81, True)
