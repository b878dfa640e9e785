"""Form furniture: the printed lines, boxes and captions a digit written on a form comes with.

Kept as ink, a line under the digit or the box around it joins the digit's crop: the digit
shrinks to fit a box with the line in it and reads as another digit, often surely. ``digits-v5``
takes them out before the ink is cropped:

- ``without_lines``: straight lines (a little skewed, broken, dashed or dotted) many times
  longer than the widest pen stroke is wide, and the thin sides of a box around the ink. A pen
  stroke is never that long (the bar of a 7 or a 4, a 1, are a few strokes long), and a box's
  sides are told from a 1 by being thinner than the pen and having the ink on their inner side.
  Where a stroke crosses a line, the line's pixels between the stroke's two sides are put back.
- ``near_the_digit``: which ink blobs belong to the digit: the largest and those beside it or big;
  a printed caption is small letters a little way off, and is left out of the crop.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# A line is at least this many of the widest pen strokes long (a pen stroke's length is a few of
# its widths: the bar of a 7 or a 4, the stem of a 1, the base of a 2 are below it).
LINE_STROKES = 9
# The shortest line looked for, in pixels, whatever the strokes (a 28x28-scale crop has 2-pixel
# strokes).
MIN_LINE = 24
# Lines may be skewed by this much (tan of about 3 degrees): a scan is rarely straighter.
SKEW = 0.055
# A box's side is thinner than this share of the widest pen stroke: printed rules are thinner
# than the pen, which keeps a 1 (as thick as the pen) from being taken for a side.
BORDER_SHARE = 0.4
# ... and at least this many of the widest pen strokes long (a cell is about a digit high).
BORDER_STROKES = 4
# Blobs further from the digit's largest blob than this share of its size are not the digit (a
# caption's letters, a cell's tick, a stamp), unless they are big: BIG_BLOB of its area and
# TALL_BLOB of its height (a caption's word may outweigh a thin digit, never outgrow it).
NEAR = 0.35
BIG_BLOB = 0.3
TALL_BLOB = 0.6


def without_lines(ink: np.ndarray) -> np.ndarray:
    """``ink`` (bright ink on black, uint8) without the lines of a form (see the module)."""
    mask = _mask(ink)
    if not mask.any():
        return ink
    stroke = _widest_stroke(mask)
    length = max(MIN_LINE, LINE_STROKES * stroke)
    long_lines = [_lines(mask, length, 2 * stroke + 2, horizontal) for horizontal in (True, False)]
    core = max(2, round(BORDER_SHARE * stroke))
    thin = cv2.subtract(mask, cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((core, core), np.uint8)))
    border = max(MIN_LINE // 2, BORDER_STROKES * stroke)
    out = ink
    for horizontal, long in zip((True, False), long_lines, strict=True):
        line = cv2.bitwise_or(long, _lines(thin, border, 2 * core, horizontal))
        if line.any():
            out = _taken_out(out, line, horizontal, _reach(length) * 2 + stroke + 2)
    return out


def _mask(ink: np.ndarray) -> np.ndarray:
    _, mask = cv2.threshold(cv2.GaussianBlur(ink, (3, 3), 0), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return mask


def _widest_stroke(mask: np.ndarray) -> int:
    """The full width of the widest strokes (twice the 99th percentile distance to paper)."""
    distances = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    inside = distances[distances > 0]
    if not inside.size:
        return 1
    return max(1, int(math.ceil(2 * float(np.partition(inside, int(0.99 * (inside.size - 1)))[
        int(0.99 * (inside.size - 1))]))))


def _reach(length: int) -> int:
    """How far (across the line) a line may drift over ``length`` pixels, either way."""
    return int(math.ceil(length * SKEW / 2))


def _lines(mask: np.ndarray, length: int, gap: int, horizontal: bool) -> np.ndarray:
    """The mask's pixels on straight runs at least ``length`` long, in one direction: gaps (of a
    dotted or broken line, or where a stroke crosses it) up to ``gap`` are bridged and the mask
    thickened across the line by its possible drift before the runs are looked for."""
    if length > (mask.shape[1] if horizontal else mask.shape[0]):
        return np.zeros_like(mask)  # no line that long fits
    def rect(along: int, across: int):
        return cv2.getStructuringElement(cv2.MORPH_RECT, (along, across) if horizontal else (across, along))

    joined = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, rect(gap, 1))
    thick = cv2.dilate(joined, rect(1, 2 * _reach(length) + 1))
    runs = cv2.morphologyEx(thick, cv2.MORPH_OPEN, rect(length, 1))
    return cv2.bitwise_and(runs, mask)


def _taken_out(ink: np.ndarray, line: np.ndarray, horizontal: bool, across: int) -> np.ndarray:
    """``ink`` without ``line``'s pixels, except where a stroke crosses it: there the ink on both
    sides of the line is joined again (a closing across the line, kept only on the line)."""
    out = ink.copy()
    out[line > 0] = 0  # a copy: the caller's image stays as it was
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (1, across) if horizontal else (across, 1))
    joined = cv2.morphologyEx(out, cv2.MORPH_CLOSE, kernel)
    np.copyto(out, joined, where=line > 0)
    return out


def near_the_digit(stats: np.ndarray) -> np.ndarray:
    """Which blobs (``connectedComponentsWithStats`` rows, the background's first) belong to the
    digit: the largest, the big and tall ones, and those within NEAR of the largest's size of
    its box."""
    blobs = stats[1:]
    areas = blobs[:, cv2.CC_STAT_AREA]
    x, y, w, h = (int(v) for v in blobs[int(areas.argmax()), :4])
    margin = NEAR * max(w, h)
    left, top = blobs[:, cv2.CC_STAT_LEFT], blobs[:, cv2.CC_STAT_TOP]
    right, bottom = left + blobs[:, cv2.CC_STAT_WIDTH], top + blobs[:, cv2.CC_STAT_HEIGHT]
    near = (right >= x - margin) & (left <= x + w + margin) & (bottom >= y - margin) & (top <= y + h + margin)
    big = (areas >= BIG_BLOB * areas.max()) & (blobs[:, cv2.CC_STAT_HEIGHT] >= TALL_BLOB * h)
    return near | big
