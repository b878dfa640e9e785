"""Shared fixtures: a fake classifier for focused daemon tests, the real model for slow ones,
and an autouse check that no test leaks a thread."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from worker import defaults  # noqa: E402
from worker.model import Prediction  # noqa: E402
from worker.preprocess import DIGITS  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


class FakeClassifier:
    """Stands in for ``worker.model.Classifier``: label = the image's brightest row // 3."""

    def __init__(self) -> None:
        self.class_names = [str(d) for d in range(10)]
        self.profile = DIGITS
        self.name = "fake"
        self.card = {"dataset": "mnist"}
        self.runtime = "fake"
        self.calls = 0

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        probs = np.full((len(batch), 10), 0.01, np.float32)
        for i, image in enumerate(batch):
            probs[i, int(np.argmax(image.sum(axis=(1, 2)))) // 3] = 0.91
        return probs

    def to_prediction(self, probabilities: np.ndarray) -> Prediction:
        index = int(np.argmax(probabilities))
        return Prediction(index, self.class_names[index], float(probabilities[index]),
                          [float(p) for p in probabilities])


@pytest.fixture
def fake_classifier() -> FakeClassifier:
    return FakeClassifier()


@pytest.fixture(scope="session")
def real_model_path() -> Path:
    path = defaults.MODEL
    assert path.is_file(), f"the shipped model {path} is missing"
    return path


@pytest.fixture(autouse=True)
def no_thread_leak():
    before = set(threading.enumerate())
    yield
    leaked = [  # watchdog's InotifyFD is one reader thread per process, shared by design
        t for t in threading.enumerate()
        if t not in before and t.is_alive() and type(t).__name__ != "InotifyFD"
    ]
    for thread in leaked:
        thread.join(timeout=2)
    leaked = [t for t in leaked if t.is_alive()]
    assert not leaked, f"threads leaked: {leaked}"
