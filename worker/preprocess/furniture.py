"""Form furniture: the printed lines, boxes and captions a digit written on a form comes with.

Kept as ink, a line under the digit or the box around it joins the digit's crop: the digit
shrinks to fit a box with the line in it and reads as another digit, often surely. ``digits-v5``
takes them out before the ink is cropped:

- ``without_lines``: straight lines (a little skewed, broken, dashed or dotted) many times
  longer than the widest pen stroke is wide, and the thin sides of a box around the ink. A pen
  stroke is never that long (the bar of a 7 or a 4, a 1, are a few strokes long), and a box's
  sides are told from a 1 by being thinner than the pen and having the ink on their inner side.
  Where the pen is too thin for that (a small or light printed digit, strokes a pixel or two
  wide), the digit's own strokes are as thin as a side: only thin lines apart from it go.
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
# ... and this many times as long as the rest of the ink is high.
LONGER = 1.3
# The shortest line looked for, in pixels, whatever the strokes (a 28x28-scale crop has 2-pixel
# strokes).
MIN_LINE = 24
# Lines may be skewed by this much (tan of about 3 degrees): a scan is rarely straighter.
SKEW = 0.055
# A box's side is thinner than this share of the widest pen stroke: printed rules are thinner
# than the pen, which keeps a 1 (as thick as the pen) from being taken for a side.
BORDER_SHARE = 0.5
# ... and than this share of the ink's height: a filled blob (a low-resolution 9's head) makes the
# widest stroke wide, not the digit's other strokes thin (its one-cell stem is no box side).
BORDER_HEIGHT = 0.07
# ... and at least this many of the widest pen strokes long (a cell is about a digit high).
BORDER_STROKES = 4
# The narrowest opening that tells a side from a pen stroke (a one-pixel line is thin to any
# opening, so a pen whose half is below it leaves no side thinner than half of it).
MIN_CORE = 2
# Blobs further from the digit's largest blob than this share of its size are not the digit (a
# caption's letters, a cell's tick, a stamp), unless they are big: BIG_BLOB of its area and
# TALL_BLOB of its height (a caption's word may outweigh a thin digit, never outgrow it).
NEAR = 0.35
BIG_BLOB = 0.3
TALL_BLOB = 0.6
# ... and this share of its longer side wide: not a thin line (a comb's divider, a table's rule;
# a share of its width alone lets a divider through beside a 1, itself narrow).
WIDE_BLOB = 0.25


def without_lines(ink: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``ink`` (bright ink on black, uint8) without the lines of a form (see the module);
    ``mask``: where the ink is (255), split from the paper's grain."""
    if not mask.any():
        return ink
    stroke = _widest_stroke(mask)
    length = max(MIN_LINE, LINE_STROKES * stroke)
    long = _longer_than_the_rest(_lines(mask, length, 2 * stroke + 2, True), mask)
    # widths at half each stroke's own height: a faint pencil stroke is as wide as it is, not
    # as wide as the part of it above a threshold that a dark printed line sets
    halves = _at_half_height(ink, mask, stroke)
    pen = _widest_stroke(halves)
    rows = np.nonzero(mask.any(axis=1))[0]
    core = max(MIN_CORE, round(min(BORDER_SHARE * pen, BORDER_HEIGHT * (rows[-1] - rows[0] + 1))))
    # thin: not within a pixel of a pen stroke's core (a stroke's own edges are not a line)
    thick = cv2.morphologyEx(halves, cv2.MORPH_OPEN, np.ones((core, core), np.uint8))
    thick = cv2.dilate(thick, np.ones((3, 3), np.uint8))
    thin = cv2.subtract(halves, thick)
    if BORDER_SHARE * pen < MIN_CORE:
        thin = _off_the_largest(thin, mask)
    border = max(MIN_LINE // 2, BORDER_STROKES * pen)
    if cv2.countNonZero(thin) < border // 2:  # not pixels enough for a side (most clean digits)
        across, down = long, np.zeros_like(long)
    else:
        across = cv2.bitwise_or(_lines(thin, border, 2 * stroke + 2, True), long)
        down = _lines(thin, border, 2 * stroke + 2, False)
    if not (across.any() or down.any()):
        return ink
    return _taken_out(ink, _cores(across), _cores(down.T).T, _reach(length) * 2 + stroke + 2)


def _off_the_largest(thin: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``thin`` less its pixels on the mask's largest blob: for a pen so thin that half of it is
    below MIN_CORE, a side cannot be told from its strokes by width (the stem of a light printed
    1, the sides of a 0, are a pixel wide at half height and as long as a cell's side), so
    the digit, the largest blob, keeps its strokes; a thin ring or box apart from it (a stamp
    beside the digit) is still taken out."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        return thin
    largest = 1 + int(stats[1:, cv2.CC_STAT_AREA].argmax())
    return np.where(labels == largest, 0, thin).astype(np.uint8)


def _longer_than_the_rest(lines: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The horizontal ``lines`` at least LONGER times as long as the rest of the ink is high (the
    rows holding all but 1 % of it at either end), or running out of the image both ways and as
    long as the rest is high (the crop around a digit cuts the line): a line under a digit is;
    the bar of a 7 or a 4, the base of a 2, never are. Lines across, not down: a 1 is a
    straight line down, as long as a digit is high; a box's sides are thin, and go by
    ``without_lines``' other rule."""
    if not lines.any():
        return lines
    rows = np.nonzero(cv2.subtract(mask, lines))[0]
    if rows.size == 0:
        return np.zeros_like(lines)  # nothing but lines: nothing to tell them from
    low, high = np.percentile(rows, [1, 99])
    count, labels, stats, _ = cv2.connectedComponentsWithStats(lines, connectivity=8)
    widths = stats[1:, cv2.CC_STAT_WIDTH]
    across = (stats[1:, cv2.CC_STAT_LEFT] == 0) & (widths == lines.shape[1])  # leaves a crop both ways
    long = (widths >= LONGER * (high - low + 1)) | (across & (widths >= high - low + 1))
    return np.take(np.where(np.append(False, long), 255, 0).astype(np.uint8), labels)


def _at_half_height(ink: np.ndarray, mask: np.ndarray, stroke: int) -> np.ndarray:
    """Where the ink (near ``mask``) is at least half as bright as the brightest ink around it
    (within a stroke or two): each stroke at its own half height, whatever its contrast."""
    size = 2 * stroke + 1
    peak = cv2.dilate(ink, np.ones((size, size), np.uint8))
    # twice the ink, saturated at 255, is at least the peak (never above 255) exactly where the
    # unsaturated double is
    halves = cv2.compare(cv2.add(ink, ink), peak, cv2.CMP_GE)
    return cv2.bitwise_and(halves, cv2.dilate(mask, np.ones((3, 3), np.uint8)))


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
    inked = np.flatnonzero(mask.any(axis=0 if horizontal else 1))
    side = mask.shape[1] if horizontal else mask.shape[0]
    if not inked.size or min(side - 1, inked[-1] + gap) - max(0, inked[0] - gap) + 1 < length:
        return np.zeros_like(mask)  # no line that long fits (a closing reaches at most ``gap`` out)
    def rect(along: int, across: int):
        return cv2.getStructuringElement(cv2.MORPH_RECT, (along, across) if horizontal else (across, along))

    joined = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, rect(gap, 1))
    thick = cv2.dilate(joined, rect(1, 2 * _reach(length) + 1))
    runs = cv2.morphologyEx(thick, cv2.MORPH_OPEN, rect(length, 1))
    return cv2.bitwise_and(runs, mask)


def _taken_out(ink: np.ndarray, across: np.ndarray, down: np.ndarray, reach: int) -> np.ndarray:
    """``ink`` without the lines' pixels (``across``, ``down``), except where a pen stroke
    crosses a line: there the ink on both sides of it (within ``reach``) is joined again, by a
    closing across the line kept only on the line, and never where two lines meet (a box's
    corner is no stroke)."""
    out = ink.copy()  # the caller's image stays as it was
    out[(across > 0) | (down > 0)] = 0
    joined = out.copy()
    for line, other, size in ((across, down, (1, reach)), (down, across, (reach, 1))):
        closed = cv2.morphologyEx(out, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, size))
        np.copyto(joined, closed, where=(line > 0) & (other == 0))
    return joined


def _cores(line: np.ndarray) -> np.ndarray:
    """Each horizontal line of ``line`` (its pieces within MIN_LINE of each other are one line)
    narrowed to its own rows: a straight fit through its pixels, as thick as most of its columns
    are, with a pixel and a half of faint fringe either side. The search took the pen's pixels
    within the line's possible drift with it; those go back to the digit."""
    count, labels = cv2.connectedComponents(cv2.dilate(line, np.ones((1, MIN_LINE), np.uint8)))
    ys, xs = np.nonzero(line)
    ids = labels[ys, xs]
    out = np.zeros_like(line)
    rows = np.arange(line.shape[0])[:, None]
    for i in range(1, count):
        x, y = xs[ids == i], ys[ids == i]
        if x.size < 2 or x.min() == x.max():
            continue
        slope, offset = np.polyfit(x, y, 1)
        near = np.abs(y - (slope * x + offset)) <= 2 * max(1.0, _thickness(x))  # pen pixels out
        if near.sum() >= 2 and np.ptp(x[near]) > 0:
            x, y = x[near], y[near]
            slope, offset = np.polyfit(x, y, 1)
        columns = np.arange(x.min(), x.max() + 1)
        centre = slope * columns + offset
        half = _thickness(x) / 2 + 1.5
        out[:, columns] |= ((rows >= centre - half) & (rows <= centre + half)).astype(np.uint8) * 255
    return out


def _thickness(x: np.ndarray) -> float:
    """A line's thickness: how many of its pixels most of its columns hold (``x``: columns)."""
    counts = np.bincount(x - x.min())
    return float(np.median(counts[counts > 0]))


def near_the_digit(stats: np.ndarray) -> np.ndarray:
    """Which blobs (``connectedComponentsWithStats`` rows, the background's first) belong to the
    digit: the largest, the big and tall ones, and those within NEAR of the largest's size of
    its box. A big one is as wide as a share of the largest's longer side, not of its width: a
    comb's divider far from a 1 is as tall as the 1 and, at the locate step's scale, not much
    narrower."""
    blobs = stats[1:]
    areas = blobs[:, cv2.CC_STAT_AREA]
    x, y, w, h = (int(v) for v in blobs[int(areas.argmax()), :4])
    margin = NEAR * max(w, h)
    left, top = blobs[:, cv2.CC_STAT_LEFT], blobs[:, cv2.CC_STAT_TOP]
    right, bottom = left + blobs[:, cv2.CC_STAT_WIDTH], top + blobs[:, cv2.CC_STAT_HEIGHT]
    near = (right >= x - margin) & (left <= x + w + margin) & (bottom >= y - margin) & (top <= y + h + margin)
    big = ((areas >= BIG_BLOB * areas.max()) & (blobs[:, cv2.CC_STAT_HEIGHT] >= TALL_BLOB * h)
           & (blobs[:, cv2.CC_STAT_WIDTH] >= WIDE_BLOB * max(w, h)))
    return near | big
