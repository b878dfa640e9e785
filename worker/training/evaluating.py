"""The trained model run over the splits as the daemon serves it: the test split's accuracy,
the review flag fitted on the training and validation splits, a model's raw outputs in batches.
"""

from __future__ import annotations

import logging

import numpy as np

from worker.model import review_flag
from worker.model.classifier import Classifier
from worker.training.fonts import FONT_FOLDERS
from worker.training.splits import Splits

log = logging.getLogger(__name__)
NOT_DIGITS = 12_000  # printed at the most: plenty for a score of a few hundred weights


def evaluate(classifier: Classifier, x: np.ndarray, y: np.ndarray) -> dict:
    probs = np.concatenate([classifier.predict_proba(x[i : i + 1000]) for i in range(0, len(x), 1000)])
    pred = probs.argmax(axis=1)
    n = len(classifier.class_names)
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (y.astype(int), pred), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "test_accuracy": round(float((pred == y).mean()), 5),
        "per_class_test_accuracy": {
            name: round(float(acc), 5) for name, acc in zip(classifier.class_names, per_class, strict=True)
        },
        "confusion_matrix": confusion.tolist(),
    }


def fit_review(classifier: Classifier, splits: Splits) -> dict:
    val_probabilities, val_features = raw_outputs(classifier, splits.x_val)
    train_probabilities, train_features = raw_outputs(classifier, splits.x_train)
    review = review_flag.fit(val_probabilities, splits.y_val.astype(int), val_features,
                             train_features, splits.y_train.astype(int), splits.x_val, splits.x_train)
    log.info("review flag: temperature %.3f (validation ECE %.4f -> %.4f)", review["temperature"],
             *review["expected_calibration_error"].values())
    x_not = _not_digits(classifier, len(splits.x_train)) if val_features is not None else None
    if x_not is not None and len(x_not):
        review["not_digit"] = review_flag.fit_not_digit(
            (train_probabilities, train_features, splits.x_train),
            (*raw_outputs(classifier, x_not), x_not), (val_probabilities, val_features, splits.x_val))
    return review


def _not_digits(classifier: Classifier, train_size: int) -> np.ndarray | None:
    """Printed letters and symbols for a digit model's ``not-a-digit``, as many as a fifth of its
    training split up to ``NOT_DIGITS`` (None for a model of other classes)."""
    if tuple(classifier.class_names) != tuple("0123456789"):
        return None
    from worker.training.scan_render import render_not_digits

    count = min(NOT_DIGITS, max(200, train_size // 5))
    log.info("printing %d letters and symbols for the review flag's not-a-digit", count)
    printed = render_not_digits(count, classifier.profile, seed=0)
    if not len(printed):
        log.warning("no fonts to print letters in (%s): the review flag has no not-a-digit; install "
                    "the font packages scripts/test names", ", ".join(map(str, FONT_FOLDERS)))
    return printed


def raw_outputs(classifier: Classifier, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    parts = [classifier.raw(x[i : i + 1000]) for i in range(0, len(x), 1000)]
    features = None if parts[0][1] is None else np.concatenate([f for _, f in parts])
    return np.concatenate([p for p, _ in parts]), features
