"""Whether an opening by a long straight line can find anything, told before it is run.

An opening by a line ``length`` pixels long keeps only what lies on straight runs that long, and
on most pages there are none: a page without ruled lines or form furniture has no run of ink
near the page's width. Telling that from a box sum of the ink (one pass, whatever the length)
lets the caller skip the opening and everything it feeds, with the result the opening would
have given. The test never says "nothing" where the opening would find something.
"""

from __future__ import annotations

import cv2
import numpy as np


def may_hold_run(binary: np.ndarray, run: int, horizontal: bool) -> bool:
    """Whether ``binary`` (uint8, 0 or 1) may hold ``run`` set pixels in a row (``horizontal``)
    or a column: False only if it surely does not. The box sum past the image's edge counts
    mirrored pixels, which can only say "may" where there is no such run, never the reverse."""
    if run <= 1:
        return bool(binary.any())
    most = cv2.reduce(binary, 1 if horizontal else 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).max()
    if most < run:  # no row (column) holds that many at all: most pages, told in one pass
        return False
    size = (run, 1) if horizontal else (1, run)
    sums = cv2.boxFilter(binary, cv2.CV_16U if run < 1 << 16 else cv2.CV_32S, size, normalize=False)
    return int(sums.max()) >= run


def shortest_window(length: int, side: int) -> int:
    """The fewest of the image's pixels an erosion by a line ``length`` long (OpenCV's anchor,
    the middle) sees at any position along a side ``side`` long: past the image's edge the
    erosion takes the border as ink, so the windows there are cut short."""
    anchor = length // 2
    return max(1, min(length - anchor, anchor + 1, side))


def opening_finds_above(ink: np.ndarray, level: int, length: int, horizontal: bool) -> bool:
    """Whether opening ``ink`` by a straight line ``length`` long may leave a pixel above
    ``level``: False only if it surely leaves none. A pixel above ``level`` after the opening
    lies on a window of the erosion all above ``level``, at least ``shortest_window`` long."""
    side = ink.shape[1] if horizontal else ink.shape[0]
    above = cv2.threshold(ink, level, 1, cv2.THRESH_BINARY)[1]
    return may_hold_run(above, shortest_window(length, side), horizontal)
