"""The ink's shape in a model input: measures that tell digits from what is not one whatever
the network thinks of it.

The network's features say how far an input is from the training data as the network sees it;
some inputs it sees as surely a digit are plainly not: a letter with a dot, a ring of many holes,
a long straight line (a form's rule still attached to the digit). Measured on the 28x28 input
(ink bright on black) as the model is given it, a batch at a time:

- ``pieces``: separate blobs of ink (a digit is one stroke, or two where the pen lifted);
- ``holes``: closed loops (an 8 has two);
- ``wide``: the ink's width over its height (digits are upright);
- ``fill``: the share of the ink's box that is ink (a stroke, not a blot);
- ``thick``: the widest stroke's half width, in pixels (the distance from its middle to paper);
- ``edges``: how many of the four sides of the ink's box are ink nearly all along (a box's
  sides, a line under the digit; a 7's bar or a 2's base is one, a 1 too thin to count).

Each is fitted as a threshold at a quantile of the training split (``fit``) and kept in the
card; an input past any of them is unlike every digit the model was trained on.
"""

from __future__ import annotations

import cv2
import numpy as np

SIZE = 28
INK = 0.35  # an input pixel at least this bright is ink (the preprocessing stretches ink to 1)
SPECK = 3  # blobs and holes smaller than this many pixels are grain, not shape
CELL = SIZE + 2  # each input is laid out with a margin of paper, so no blob or hole spans two
CHUNK = 4096  # inputs on one sheet at most

MEASURES = ("pieces", "holes", "wide", "fill", "thick", "edges")
BAND = 2  # an edge is ink along the outer two rows or columns of the ink's box (a skewed rule)
ALONG = 0.85  # ... along this share of its length
NARROW = 8  # sides of ink narrower than this (pixels) are a stroke, not an edge: a 1's both sides


def measure(inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Each measure for each input of a batch (N, 28, 28[, 1]), as float32 arrays of N; a
    training split a CHUNK at a time (one sheet of all 55,000 takes hundreds of megabytes)."""
    if len(inputs) > CHUNK:
        parts = [measure(inputs[i : i + CHUNK]) for i in range(0, len(inputs), CHUNK)]
        return {name: np.concatenate([part[name] for part in parts]) for name in MEASURES}
    ink = np.asarray(inputs, np.float32).reshape(len(inputs), SIZE, SIZE) > INK
    sheet, columns = _sheet(ink)
    return {
        "pieces": _count_blobs(sheet, columns, len(ink), paper=False),
        "holes": _count_blobs(sheet, columns, len(ink), paper=True),
        **_extent(ink),
        "thick": _thickest(sheet, columns, len(ink)),
    }


def _sheet(ink: np.ndarray) -> tuple[np.ndarray, int]:
    """The batch laid out as one image of CELL x CELL cells (uint8), and how many cells a row:
    one call of OpenCV's labelling for the batch, not one an input."""
    count = len(ink)
    columns = max(1, int(np.ceil(np.sqrt(count))))
    rows = -(-count // columns)
    cells = np.zeros((rows * columns, CELL, CELL), np.uint8)
    cells[:count, 1:-1, 1:-1] = ink
    sheet = cells.reshape(rows, columns, CELL, CELL).transpose(0, 2, 1, 3)
    return sheet.reshape(rows * CELL, columns * CELL), columns


def _count_blobs(sheet: np.ndarray, columns: int, count: int, *, paper: bool) -> np.ndarray:
    """Blobs of ink (8-connected), or holes (paper, 4-connected, not the paper around the ink:
    that is one blob joined through every cell's margin), of SPECK pixels or more, per input."""
    image = (1 - sheet) if paper else sheet
    _, _, stats, _ = cv2.connectedComponentsWithStats(image, connectivity=4 if paper else 8)
    stats = stats[1:]  # label 0 is the background of the image labelled
    if paper:
        stats = stats[stats[:, cv2.CC_STAT_WIDTH] < CELL]  # the margins' blob spans every cell
    stats = stats[stats[:, cv2.CC_STAT_AREA] >= SPECK]
    which = (stats[:, cv2.CC_STAT_TOP] // CELL) * columns + stats[:, cv2.CC_STAT_LEFT] // CELL
    return np.bincount(which, minlength=count)[:count].astype(np.float32)


def _thickest(sheet: np.ndarray, columns: int, count: int) -> np.ndarray:
    distance = cv2.distanceTransform(sheet, cv2.DIST_L2, 3)
    rows = distance.shape[0] // CELL
    per_cell = distance.reshape(rows, CELL, columns, CELL).max(axis=(1, 3)).reshape(-1)
    return per_cell[:count].astype(np.float32)


def _extent(ink: np.ndarray) -> dict[str, np.ndarray]:
    """``wide``, ``fill`` and ``edges``, from the ink's box."""
    first_column, width = _span(ink.any(axis=1))
    first_row, height = _span(ink.any(axis=2))
    some = width > 0
    width_, height_ = np.maximum(width, 1).astype(np.float32), np.maximum(height, 1).astype(np.float32)
    return {
        "wide": np.where(some, width_ / height_, 0).astype(np.float32),
        "fill": np.where(some, ink.sum(axis=(1, 2)) / (width_ * height_), 0).astype(np.float32),
        "edges": (_edges(ink, first_row, height, first_column, width)  # top and bottom
                  + _edges(ink.transpose(0, 2, 1), first_column, width, first_row, height)  # the sides
                  ).astype(np.float32),
    }


def _span(occupied: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each row's Trues start and how far they reach, first to last (0 where none)."""
    first = occupied.argmax(axis=1)
    last = occupied.shape[1] - 1 - occupied[:, ::-1].argmax(axis=1)
    return first, np.where(occupied.any(axis=1), last - first + 1, 0)


def _edges(ink: np.ndarray, first_row: np.ndarray, height: np.ndarray, first_column: np.ndarray,
           width: np.ndarray) -> np.ndarray:
    """How many of the top and bottom edges of each input's ink box are ink along ALONG of their
    width (only where the ink is NARROW or more high: else the two are one stroke)."""
    rows = np.arange(ink.shape[1])[None, :]
    columns = np.arange(ink.shape[2])[None, :]
    inside = (columns >= first_column[:, None]) & (columns < (first_column + width)[:, None])
    count = np.zeros(len(ink), np.int16)
    for start in (first_row, first_row + height - BAND):
        band = (rows >= start[:, None]) & (rows < (start + BAND)[:, None])
        covered = (ink & band[:, :, None]).any(axis=1) & inside
        count += (covered.sum(axis=1) >= ALONG * width) & (height >= NARROW)
    return count
