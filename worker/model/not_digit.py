"""The ``not-a-digit`` reason: a digit model's input that looks like printed letters and symbols.

The network's features place a printed ``#`` near its 4s and a ``!`` near its 1s: no distance
to the training digits tells them apart, and their ink's shape is a digit's. What does is to
have seen such things: when a digit model is made, a linear score is fitted between its training
digits (the scan renderings with them) and printed letters and symbols
(``worker/training/glyph_render.py``), and its threshold set on the validation digits, so that
``SHARE`` of digits like them lie beyond it.

The score is logistic regression over, per row: the network's features at unit length and their
squares (which directions, and how far along them), the ink's shape measures (``ink_shape``), the
three largest log-probabilities, and 1. Fitted by Newton's method with a little L2 weight decay,
the two sides weighed equally however many of each there are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.model import ink_shape

DECAY = 1e-5  # L2 weight decay; measured: 1e-4 and 1e-3 flag fewer letters at the same share of digits
NEWTON_STEPS = 40


def represent(probabilities: np.ndarray, features: np.ndarray, measured: dict[str, np.ndarray]) -> np.ndarray:
    """Each row as the score reads it (float64, rows x (2 x features + measures + 3 + 1))."""
    unit = features.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True) + 1e-6
    shape = np.stack([np.log1p(measured[name]) for name in ink_shape.MEASURES], axis=1)
    top = np.sort(probabilities, axis=1)[:, ::-1][:, :3]
    likeliest = np.log(np.maximum(top, 1e-30)) / 10  # about the size of the other columns
    return np.hstack([unit, unit**2, shape, likeliest, np.ones((len(unit), 1))])


@dataclass(frozen=True)
class NotDigit:
    weights: np.ndarray  # float64, one per column of ``represent``
    threshold: float  # a score above it is flagged

    @classmethod
    def fit(cls, digits: np.ndarray, not_digits: np.ndarray, validation: np.ndarray,
            share: float) -> NotDigit:
        """``digits`` and ``not_digits`` as ``represent`` gives them; the threshold leaves
        ``share`` of ``validation`` (digits) beyond it."""
        x = np.vstack([digits, not_digits])
        y = np.r_[np.zeros(len(digits)), np.ones(len(not_digits))]
        weigh = np.where(y == 1, 0.5 / len(not_digits), 0.5 / len(digits))
        decay = np.r_[np.full(x.shape[1] - 1, DECAY), 0.0]  # the constant column is not decayed
        weights = np.zeros(x.shape[1])
        for _ in range(NEWTON_STEPS):
            p = _sigmoid(x @ weights)
            gradient = x.T @ (weigh * (p - y)) + decay * weights
            hessian = (x * (weigh * p * (1 - p))[:, None]).T @ x + np.diag(decay)
            step = np.linalg.solve(hessian, gradient)
            weights -= step
            if np.abs(step).max() < 1e-7:
                break
        threshold = float(np.quantile(validation @ weights, 1 - share))
        return cls(weights, threshold)

    def __call__(self, represented: np.ndarray) -> np.ndarray:
        """Per row, (1 + softplus(score)) / (1 + softplus(threshold)): above 1 exactly when the
        score is past the threshold, and positive, as the other reasons' ratios are."""
        return (1 + _softplus(represented @ self.weights)) / (1 + _softplus(self.threshold))

    @property
    def width(self) -> int:
        """How many features of the network it reads."""
        return (len(self.weights) - len(ink_shape.MEASURES) - 3 - 1) // 2

    def to_dict(self) -> dict:
        return {"method": "logistic regression: digits against printed letters and symbols "
                          "(worker/model/not_digit.py)",
                "weights": [round(float(w), 6) for w in self.weights], "threshold": round(self.threshold, 6)}

    @classmethod
    def from_dict(cls, data: dict) -> NotDigit:
        return cls(np.asarray(data["weights"], np.float64), float(data["threshold"]))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(z, -60, 60)))


def _softplus(z):
    return np.logaddexp(0, z)
