"""Classify files in batches: load each (big ones on a small thread pool), one model call per
batch, one ``Outcome`` per file.

The flow is one way: ``load_batch`` gives a ``LoadedBatch`` that knows its model input;
whoever runs the model (here ``classify_batch``, in the daemon its model thread) hands the
probabilities back to ``LoadedBatch.outcomes``. A file that cannot be read or decoded gives an
``Outcome`` with an ``InputError``; it never fails the batch. Shared by ``worker predict`` and
the daemon.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from worker.errors import InputError
from worker.model.classifier import Classifier, Prediction, Scored
from worker.preprocess import DEFAULT_LIMITS, Limits, LoadedInput, load_many

# Inputs averaging more bytes than this are decoded on the thread pool: a page-sized JPEG
# takes milliseconds to decode (worth a thread); a 28x28 PNG takes microseconds (it is not).
POOL_MIN_AVERAGE_BYTES = 32 * 1024


@dataclass
class Outcome:
    path: Path
    prediction: Prediction | None = None  # a document's: that of its first page with ink
    error: InputError | None = None
    sha256: str | None = None
    pages: list[tuple[int, Prediction]] = field(default_factory=list)  # a document's, each page's

    @property
    def ok(self) -> bool:
        return self.error is None


class LoadedBatch:
    """Files read and preprocessed: the model's input for the good ones (a document's pages
    each), the error of each bad one. ``inputs`` is None when no file is good (nothing for the
    model to do)."""

    def __init__(self, paths: list[Path], loaded: list[LoadedInput | InputError], classifier: Classifier):
        self.paths = paths
        self.loaded = loaded
        self.classifier = classifier
        self.inputs = model_inputs(loaded)

    def predict(self) -> Scored | None:
        """Run the model on ``inputs`` (where the caller wants it run: any thread)."""
        return None if self.inputs is None else self.classifier.predict(self.inputs)

    def outcomes(self, scored: Scored | None) -> list[Outcome]:
        """One outcome per file, in order, from the model's output for ``inputs``."""
        return outcomes_of(self.paths, self.loaded, self.classifier, scored)


def model_inputs(loaded: list[LoadedInput | InputError]) -> np.ndarray | None:
    """The model's batch: the good files' inputs in order (a document's pages each), or None."""
    inputs = [pixels for item in loaded if not isinstance(item, InputError) for pixels in item.inputs]
    return np.stack(inputs) if inputs else None


def outcomes_of(paths: list[Path], loaded: list[LoadedInput | InputError], classifier: Classifier,
                scored: Scored | None) -> list[Outcome]:
    """One outcome per file, in order: its error, or its predictions from ``scored`` (the
    model's output for the good files' inputs, in order; a document has one a page)."""
    outcomes = [Outcome(path=path, error=item if isinstance(item, InputError) else None)
                for path, item in zip(paths, loaded, strict=True)]
    every = classifier.predictions(scored) if scored is not None else []
    start = 0
    for outcome, item in zip(outcomes, loaded, strict=True):
        if isinstance(item, InputError):
            continue
        count = len(item.inputs)
        predictions = every[start : start + count]
        start += count
        outcome.prediction, outcome.sha256 = predictions[0], item.sha256
        if item.pages:
            outcome.pages = [(n, p) for (n, _), p in zip(item.pages, predictions, strict=True)]
    return outcomes


def classify_batch(paths: list[Path], classifier: Classifier, **load_options) -> list[Outcome]:
    """One outcome per path, in order; one model call for all the readable ones.
    ``load_options`` are ``load_batch``'s (pool, limits, follow_symlinks, names)."""
    batch = load_batch(paths, classifier, **load_options)
    return batch.outcomes(batch.predict())


def load_batch(
    paths: list[Path],
    classifier: Classifier,
    *,
    pool: Executor | None = None,
    limits: Limits = DEFAULT_LIMITS,
    follow_symlinks: bool = True,
    names: list[str] | None = None,
    sizes: list[int] | None = None,
    defer_unbounded: bool = False,
) -> LoadedBatch:
    """Read, check and preprocess each file for ``classifier``. Big files are loaded one each
    on ``pool`` (OpenCV releases the GIL, so both cores work); small ones all together here
    (``load_many``). ``names`` are how error messages call the files (default: file names);
    ``sizes`` their bytes, if the caller knows them (else each is looked up);
    ``defer_unbounded`` is ``load_many``'s."""
    names = names or [p.name for p in paths]
    load = partial(load_many, profile=classifier.profile, limits=limits, follow_symlinks=follow_symlinks,
                   defer_unbounded=defer_unbounded)

    def load_one(path: Path, name: str) -> LoadedInput | InputError:
        return load([path], names=[name])[0]

    average = sum(sizes) / len(sizes) if sizes else _average_size(paths)
    if pool is not None and len(paths) > 1 and average >= POOL_MIN_AVERAGE_BYTES:
        loaded = list(pool.map(load_one, paths, names))
    else:
        loaded = load(paths, names=names)
    return LoadedBatch(paths, loaded, classifier)


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
