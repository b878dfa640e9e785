"""Accuracy on hard sets: harsh scans, thick-marker digits, low-resolution digits, digits on
forms (a line under the digit, a box or comb field around it, a printed caption beside it) and
drawn on the web page's canvas, made from MNIST *test* digits, and digits printed in fonts kept
out of training, by tests/factories.py: one preprocessing profile against another, same model,
same images.

    .venv/bin/python bench/hard_sets.py [--count 500] [--model models/mnist.keras]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from factories import HARD_SETS, LABELLED_SETS  # noqa: E402

from worker import defaults  # noqa: E402
from worker.errors import InputError  # noqa: E402
from worker.model.classifier import Classifier  # noqa: E402
from worker.preprocess import DIGITS, PROFILES, normalize  # noqa: E402
from worker.training import datasets  # noqa: E402


def hard_set(name: str, count: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """``count`` images of the named set (grey pages) and their true digits; the same each run."""
    data = datasets.load("mnist")
    rng = np.random.default_rng(seed)
    labels = data.test_labels[:count].astype(int)
    if name in LABELLED_SETS:
        return [LABELLED_SETS[name](int(label), rng) for label in labels], labels
    make = HARD_SETS[name]
    return [make(data.test_images[i], rng) for i in range(count)], labels


def taken(pages, profile=DIGITS) -> tuple[np.ndarray | None, list[int]]:
    """Model inputs of the pages the preprocessing takes, and which pages those are (a page
    refused, no ink found, gets an error record in the daemon, never a row)."""
    inputs, known = [], []
    for i, page in enumerate(pages):
        try:
            inputs.append(normalize(page, profile))
            known.append(i)
        except InputError:
            continue
    return (np.stack(inputs) if inputs else None), known


def accuracy(classifier: Classifier, pages: list[np.ndarray], labels: np.ndarray, profile) -> float:
    """Share of pages read right; a page refused (no ink found) counts as wrong."""
    inputs, known = taken(pages, profile)
    predicted = classifier.predict_proba(inputs).argmax(axis=1) if inputs is not None else []
    return float(np.sum(np.asarray(predicted) == labels[known])) / len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--model", type=Path, default=defaults.MODEL)
    parser.add_argument("--profiles", default="digits-v4,digits-v5", help="profiles to compare, by name")
    args = parser.parse_args()
    classifier = Classifier(args.model)
    names = args.profiles.split(",")
    print(f"{'set':<26}" + "".join(f"{n:>12}" for n in names))
    for name in [*HARD_SETS, *LABELLED_SETS]:
        pages, labels = hard_set(name, args.count)
        scores = [accuracy(classifier, pages, labels, PROFILES[n]) for n in names]
        print(f"{name:<26}" + "".join(f"{100 * s:>11.1f}%" for s in scores))


if __name__ == "__main__":
    main()
