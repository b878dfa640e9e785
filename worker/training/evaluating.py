"""The trained model run over the splits as the daemon serves it: the test split's accuracy,
the review flag fitted on the training and validation splits, a model's raw outputs in batches.
"""

from __future__ import annotations

import logging

import numpy as np

from worker.model import review_flag
from worker.model.classifier import Classifier
from worker.training.splits import Splits

log = logging.getLogger(__name__)


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
    _, train_features = raw_outputs(classifier, splits.x_train)
    review = review_flag.fit(val_probabilities, splits.y_val.astype(int), val_features,
                             train_features, splits.y_train.astype(int), splits.x_val, splits.x_train)
    log.info("review flag: temperature %.3f (validation ECE %.4f -> %.4f)", review["temperature"],
             *review["expected_calibration_error"].values())
    return review


def raw_outputs(classifier: Classifier, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    parts = [classifier.raw(x[i : i + 1000]) for i in range(0, len(x), 1000)]
    features = None if parts[0][1] is None else np.concatenate([f for _, f in parts])
    return np.concatenate([p for p, _ in parts]), features
