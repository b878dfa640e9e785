"""The ``not-a-digit`` reason: a digit model's input that looks like printed letters and symbols.

The network's features place a printed ``#`` near its 4s and a ``©`` near its 0s: no distance
to the training digits tells them apart, and their ink's shape is a digit's. What does is to
have seen such things: when a digit model is made, a linear score is fitted between its training
digits (the scan renderings with them) and printed letters and symbols (``printed_glyph`` in
``worker/training/form_render.py``), and its threshold set on the validation digits, so that
``SHARE`` of digits like them lie beyond it.

The score is logistic regression over, per row: the network's features at unit length and their
squares (which directions, and how far along them), the ink's shape measures (``ink_shape``), the
network's three largest log-probabilities (before calibration, so that the card's temperature,
fitted again or edited, leaves the score as it was fitted), and 1. Fitted by Newton's method
with a little L2 weight decay, the two sides weighed equally however many of each there are.

The card is a file a person may edit: a section whose weights do not fit the network and the
measures, or are not finite numbers, is refused when the model loads (``ModelError``), never a
crash at the first prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.errors import ModelError
from worker.model import ink_shape

DECAY = 1e-5  # L2 weight decay: more of it flagged fewer letters at the same share of digits
NEWTON_STEPS = 40
LIKELIEST = 3  # log-probabilities read: the first says how sure, the next two of what else


def represent(probabilities: np.ndarray, features: np.ndarray, measured: dict[str, np.ndarray]) -> np.ndarray:
    """Each row as the score reads it, from ``probabilities`` as the network gives them
    (uncalibrated): float32, rows x ``columns(features)``."""
    unit = features.astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True) + 1e-6
    shape = np.stack([np.log1p(measured[name]) for name in ink_shape.MEASURES], axis=1)
    top = np.sort(probabilities, axis=1)[:, ::-1][:, :LIKELIEST]
    likeliest = np.log(np.maximum(top, 1e-30)) / 10  # about the size of the other columns
    return np.hstack([unit, unit**2, shape, likeliest, np.ones((len(unit), 1))]).astype(np.float32)


def columns(features: int) -> int:
    """How many columns ``represent`` gives for a network of ``features`` features."""
    return 2 * features + len(ink_shape.MEASURES) + LIKELIEST + 1


@dataclass(frozen=True)
class NotDigit:
    weights: np.ndarray  # float32, one per column of ``represent``
    threshold: float  # a score above it is flagged
    width: int  # how many of the network's features it reads

    @classmethod
    def fit(cls, digits: np.ndarray, not_digits: np.ndarray, validation: np.ndarray,
            share: float) -> NotDigit:
        """``digits`` and ``not_digits`` as ``represent`` gives them; the threshold leaves
        ``share`` of ``validation`` (digits) beyond it."""
        x = np.vstack([digits, not_digits]).astype(np.float64)
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
        threshold = float(np.quantile(validation.astype(np.float64) @ weights, 1 - share))
        return cls(weights.astype(np.float32), threshold, (len(weights) - columns(0)) // 2)

    def __call__(self, represented: np.ndarray) -> np.ndarray:
        """Per row, softplus(score) / softplus(threshold): above 1 exactly when the score is past
        the threshold, near 0 for a plain digit, as the other reasons' ratios are."""
        return (_softplus(represented @ self.weights) / _softplus(self.threshold)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"method": "logistic regression: digits against printed letters and symbols "
                          "(worker/model/not_digit.py)",
                "features": self.width, "measures": list(ink_shape.MEASURES), "likeliest": LIKELIEST,
                "weights": [round(float(w), 6) for w in self.weights], "threshold": round(self.threshold, 6)}

    @classmethod
    def from_dict(cls, data: dict) -> NotDigit:
        """The card's section, checked: a ModelError if it is not one this code fits."""
        try:
            width, threshold = int(data["features"]), float(data["threshold"])
            weights = np.asarray(data["weights"], np.float64)
            layout = (list(data["measures"]), int(data["likeliest"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ModelError(f"the card's review.not_digit is malformed ({error!r}): "
                             "'worker calibrate' fits a new one") from None
        expected = (list(ink_shape.MEASURES), LIKELIEST)
        if layout != expected or weights.shape != (columns(width),):
            raise ModelError(f"the card's review.not_digit has {weights.size} weights for {layout}, "
                             f"not {columns(width)} for {expected}: 'worker calibrate' fits a new one")
        if not (np.isfinite(weights).all() and np.isfinite(threshold)):
            raise ModelError("the card's review.not_digit has numbers that are not finite: "
                             "'worker calibrate' fits a new one")
        return cls(weights.astype(np.float32), threshold, width)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(z, -60, 60)))


def _softplus(z):
    return np.logaddexp(0, z)
