"""Classify files in batches: decode each (in a small thread pool), one model call per batch.

Shared by ``worker predict`` and the daemon. A file that cannot be read or decoded gives an
``Outcome`` with an ``InputError``; it never fails the batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from worker import defaults
from worker.errors import InputError
from worker.model import Classifier, Prediction
from worker.preprocess import LoadedInput, load_many

# Inputs averaging more bytes than this are decoded on the thread pool: a page-sized JPEG
# takes milliseconds to decode (worth a thread); a 28x28 PNG takes microseconds (it is not).
POOL_MIN_AVERAGE_BYTES = 32 * 1024


@dataclass(frozen=True)
class Limits:
    """Per-file limits, checked before decoding."""

    max_bytes: int = defaults.MAX_FILE_BYTES
    max_pixels: int = defaults.MAX_PIXELS


@dataclass
class Outcome:
    path: Path
    prediction: Prediction | None = None
    error: InputError | None = None
    sha256: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def classify_batch(paths: list[Path], classifier: Classifier, **load_options) -> list[Outcome]:
    """One outcome per path, in order; one model call for all the readable ones.
    ``load_options`` are ``load_batch``'s (pool, limits, follow_symlinks, names)."""
    return predict_loaded(paths, load_batch(paths, classifier, **load_options), classifier)


def load_batch(
    paths: list[Path],
    classifier: Classifier,
    *,
    pool: Executor | None = None,
    limits: Limits = Limits(),
    follow_symlinks: bool = True,
    names: list[str] | None = None,
) -> list[LoadedInput | InputError]:
    """Read, check and preprocess each file: its model input, or why it cannot be classified.
    Big files are loaded one each on ``pool`` (OpenCV releases the GIL, so both cores work);
    small ones all together here (``load_many``). ``names`` are how error messages call the
    files (default: their file names)."""
    names = names or [p.name for p in paths]
    load = partial(
        load_many, profile=classifier.profile, max_bytes=limits.max_bytes,
        max_pixels=limits.max_pixels, follow_symlinks=follow_symlinks,
    )

    def load_one(path: Path, name: str) -> LoadedInput | InputError:
        return load([path], names=[name])[0]

    if pool is not None and len(paths) > 1 and _average_size(paths) >= POOL_MIN_AVERAGE_BYTES:
        return list(pool.map(load_one, paths, names))
    return load(paths, names=names)


def model_input(loaded: list[LoadedInput | InputError]) -> np.ndarray | None:
    """The good inputs stacked into one batch for the model, in order; None if none is good."""
    pixels = [item.pixels for item in loaded if not isinstance(item, InputError)]
    return np.stack(pixels) if pixels else None


def predict_loaded(
    paths: list[Path],
    loaded: list[LoadedInput | InputError],
    classifier: Classifier,
    probabilities: np.ndarray | None = None,
) -> list[Outcome]:
    """Outcomes for ``load_batch``'s results. ``probabilities`` are the model's output for
    ``model_input(loaded)`` if the caller ran it already; otherwise one model call here."""
    outcomes = [Outcome(path=p) for p in paths]
    good = [i for i, item in enumerate(loaded) if not isinstance(item, InputError)]
    for i, item in enumerate(loaded):
        if isinstance(item, InputError):
            outcomes[i].error = item
    if not good:
        return outcomes
    if probabilities is None:
        probabilities = classifier.predict_proba(model_input(loaded))
    for i, probs in zip(good, probabilities, strict=True):
        outcomes[i].prediction = classifier.to_prediction(probs)
        outcomes[i].sha256 = loaded[i].sha256
    return outcomes


def _average_size(paths: list[Path]) -> float:
    total = 0
    for path in paths:
        try:
            total += os.lstat(path).st_size
        except OSError:
            pass
    return total / len(paths)


def chunked(items: Iterable[Path], size: int) -> Iterator[list[Path]]:
    chunk: list[Path] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def expand_paths(paths: Iterable[Path]) -> Iterator[Path]:
    """Files as given, folders walked recursively in sorted order (hidden entries skipped)."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                parts = child.relative_to(path).parts
                if child.is_dir() or any(part.startswith(".") for part in parts):
                    continue
                yield child
        else:
            yield path
