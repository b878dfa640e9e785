"""Percentiles as ``np.percentile`` gives them (linear), by partition or from a histogram.

The preprocessing's steps read a few percentiles of an image's pixels (the widest stroke, the
strokes' peak, the paper's grain); a partition or a histogram's counts give the same numbers as
a full sort, for less.
"""

from __future__ import annotations

import numpy as np


def percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, 100 * q)`` (linear), by partition rather than a full sort."""
    position = q * (values.size - 1)
    low = int(position)
    high = min(low + 1, values.size - 1)
    part = np.partition(values, [low, high])
    a, b, t = float(part[low]), float(part[high]), position - low
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t)  # numpy's own lerp


def percentile_of_counts(counts: np.ndarray, q: float) -> np.ndarray:
    """``percentile`` of the values 0, 1, 2, ... given as how many times each occurs (the last
    axis of ``counts``; each row at least one value), without making the values."""
    if counts.ndim == 1:
        return np.float64(_percentile_of_one(counts, q))
    sizes = counts.sum(axis=-1)
    position = q * (sizes - 1)
    low = position.astype(np.int64)
    high = np.minimum(low + 1, sizes - 1)
    cumulative = np.cumsum(counts, axis=-1)
    a = (cumulative <= low[..., None]).sum(axis=-1).astype(np.float64)
    b = (cumulative <= high[..., None]).sum(axis=-1).astype(np.float64)
    t = position - low
    return np.where(t < 0.5, a + (b - a) * t, b - (b - a) * (1 - t))  # numpy's own lerp


def _percentile_of_one(counts: np.ndarray, q: float) -> float:
    """``percentile_of_counts`` of one row of counts, in the same float steps: a histogram's
    median is a few calls on 256 numbers, where the rows' way makes arrays of each step."""
    size = int(counts.sum())
    position = q * (size - 1)
    low = int(position)
    high = min(low + 1, size - 1)
    cumulative = np.cumsum(counts)
    a = float(np.searchsorted(cumulative, low, side="right"))  # how many cumulative counts <= low
    b = float(np.searchsorted(cumulative, high, side="right"))
    t = position - low
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t)  # numpy's own lerp
