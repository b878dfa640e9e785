"""Classify files in batches: load each (see ``loading``), one model call per batch.

Shared by ``worker predict`` and the daemon. A file that cannot be read or decoded gives an
``Outcome`` with an ``InputError``; it never fails the batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.errors import InputError
from worker.loading import Loaded, Loaders
from worker.model import Classifier, Prediction


@dataclass
class Outcome:
    path: Path
    prediction: Prediction | None = None
    error: InputError | None = None
    sha256: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def classify_batch(paths: list[Path], classifier: Classifier, loaders: Loaders) -> list[Outcome]:
    """One outcome per path, in order; one model call for all the readable ones."""
    return predict_loaded(paths, loaders.load(paths), classifier)


def predict_loaded(paths: list[Path], loaded: list[Loaded], classifier: Classifier) -> list[Outcome]:
    """Outcomes for loaded inputs: one model call for all the good ones."""
    outcomes = [Outcome(path=p) for p in paths]
    good = [i for i, item in enumerate(loaded) if not isinstance(item, InputError)]
    for i, item in enumerate(loaded):
        if isinstance(item, InputError):
            outcomes[i].error = item
    if good:
        probabilities = classifier.predict_proba(np.stack([loaded[i].pixels for i in good]))
        for i, probs in zip(good, probabilities, strict=True):
            outcomes[i].prediction = classifier.to_prediction(probs)
            outcomes[i].sha256 = loaded[i].sha256
    return outcomes


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
