"""The review flag: which predictions a person should look at, and why.

Five reasons, each a measure with a threshold fitted when the model is made and kept in its
card (``card["review"]``):

- ``low-confidence``: the calibrated confidence is low. The network's softmax is over-sure;
  dividing its log-probabilities by a temperature fitted on the validation split (the one
  number that minimises its log loss) makes "0.9" mean right about 9 times in 10.
- ``low-margin``: the two likeliest classes are close.
- ``unlike-training``: the input is far from anything the model was trained on, measured on
  the penultimate layer's features (scaled to unit length) as the Mahalanobis distance to the
  nearest class mean (one covariance shared by the classes, fitted on the training split). The
  softmax says nothing of this: a shirt can be a very sure "8". Chosen by measurement
  (``bench/review_flag.py``): against the energy score, the softmax, their sum, a distance
  relative to one Gaussian of all classes, and other layers. Its threshold is per predicted
  class (a 1's features lie closer together than an 8's).
- ``odd-shape``: the ink has a shape the predicted class's digits never have (``OddShape``,
  ``ink_shape``): more pieces or holes, wider, more of a blot, thicker, or with a box's edges (a
  form's rule still attached). The network may be sure of such an input; its shape says no.
- ``not-a-digit`` (digit models): the input looks like the printed letters and symbols a score
  was fitted to tell from digits (``not_digit.py``): a printed ``#`` is a 4 to the network and
  to every measure above, and nothing like one once such things have been seen.

The thresholds are quantiles: each flags about ``SHARE`` of inputs like the training data (the
first two mostly the same rows), so together they flag a few percent of ordinary rows. Most
wrong digits are unsure ones, so most of the budget goes to confidence and margin; the distance
and the shape find what is not a digit with little. A card from before a reason (no
``odd_shape``, one distance threshold for all classes) is applied as it was fitted. A row's
``review_score`` is its measure furthest past its threshold, as a ratio: 1 or more is flagged.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import numpy as np

from worker.errors import ModelError
from worker.model import ink_shape
from worker.model.not_digit import NotDigit, represent

SHARE = {"low-confidence": 0.02, "low-margin": 0.02, "unlike-training": 0.006, "odd-shape": 0.003,
         "not-a-digit": 0.012}
TINY = 1e-30  # float32 softmax underflows to 0 for hopeless classes; log needs a floor


def calibrated(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the same as dividing the logits by T (log p differs from the logits
    by a constant per row, which softmax ignores)."""
    if temperature == 1.0:
        return probabilities
    logits = np.log(np.maximum(probabilities, TINY)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature with the lowest log loss on held-out data (a 1-d search: a grid, then a
    finer grid around its best)."""
    def loss(t: float) -> float:
        p = calibrated(probabilities, t)[np.arange(len(labels)), labels]
        return float(-np.mean(np.log(np.maximum(p, TINY))))

    grid = np.geomspace(0.25, 8, 61)
    best = grid[int(np.argmin([loss(t) for t in grid]))]
    fine = np.linspace(best / 1.06, best * 1.06, 25)
    return round(float(fine[int(np.argmin([loss(t) for t in fine]))]), 4)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """How far confidence is from accuracy, averaged over 15 equal-width confidence bins."""
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    right = predicted == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.sum() * abs(right[inside].mean() - confidence[inside].mean())
    return float(total / len(labels))


@dataclass(frozen=True)
class Distance:
    """Mahalanobis distance of unit-length features to the nearest class mean. ``transform``
    whitens (the Cholesky factor of the shared precision), so a distance is a Euclidean one
    after a matrix product."""

    means: np.ndarray  # (classes, features), already whitened
    transform: np.ndarray  # (features, features)

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray) -> Distance:
        features = _unit(features.astype(np.float64))
        classes = np.unique(labels)
        means = np.stack([features[labels == c].mean(axis=0) for c in classes])
        centred = features - means[np.searchsorted(classes, labels)]
        covariance = centred.T @ centred / len(features)
        covariance += np.eye(len(covariance)) * 1e-6 * np.trace(covariance) / len(covariance)
        transform = np.linalg.cholesky(np.linalg.inv(covariance)).astype(np.float32)
        return cls(means=(means @ transform).astype(np.float32), transform=transform)

    @property
    def width(self) -> int:
        return len(self.transform)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        white = _unit(features.astype(np.float32)) @ self.transform
        squared = ((white[:, None, :] - self.means[None, :, :]) ** 2).sum(axis=2)
        return np.sqrt(squared.min(axis=1))

    def to_dict(self) -> dict:
        return {"shape": list(self.transform.shape), "classes": len(self.means),
                "means": _b64(self.means), "transform": _b64(self.transform)}

    @classmethod
    def from_dict(cls, data: dict) -> Distance:
        width = data["shape"][0]
        return cls(means=_unb64(data["means"]).reshape(data["classes"], width),
                   transform=_unb64(data["transform"]).reshape(width, width))


@dataclass(frozen=True)
class OddShape:
    """The ink's shape past what the model's classes reach (``ink_shape``): per measure, a
    threshold per class, read for the class a row is predicted as (a 1 is narrow, an 8 has two
    holes). The shape of the strokes (pieces, holes, how wide, edges) is fitted on the
    validation split's plain digits: the training split's scan renderings carry ruled lines,
    which is what this is to find. The pen (fill, thickness) on the training split: its thick
    marker and low-resolution renderings are digits as users send them. Each threshold is at
    the quantile that leaves ``SHARE["odd-shape"]``, shared between the measures, beyond it."""

    limits: dict[str, np.ndarray]  # measure -> (classes,)

    @classmethod
    def fit(cls, val_inputs: np.ndarray, val_labels: np.ndarray, train_inputs: np.ndarray,
            train_labels: np.ndarray, classes: int) -> OddShape:
        quantile = 1 - SHARE["odd-shape"] / len(ink_shape.MEASURES)
        val, train = ink_shape.measure(val_inputs), ink_shape.measure(train_inputs)
        limits = {}
        for name in ink_shape.MEASURES:
            pen = name in PEN_MEASURES
            measured, labels = (train[name], train_labels) if pen else (val[name], val_labels)
            limits[name] = _per_class(measured, labels, classes, quantile)
        return cls(limits)

    def __call__(self, measured: dict[str, np.ndarray], predicted: np.ndarray) -> np.ndarray:
        """Per row (``ink_shape.measure`` of the inputs), its measure furthest past its class's
        threshold, as (value + 1) / (threshold + 1): past it exactly when above 1, and finite
        where a class never has any (a 1's holes)."""
        return np.max([(measured[name] + 1) / (limit[predicted] + 1)
                       for name, limit in self.limits.items()], axis=0)

    def to_dict(self) -> dict:
        return {"method": "the ink's shape in the input, per class (worker/model/ink_shape.py)",
                "limits": {name: [round(float(v), 4) for v in limit] for name, limit in self.limits.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> OddShape:
        return cls({str(name): np.asarray(limit, np.float32) for name, limit in data["limits"].items()
                    if name in ink_shape.MEASURES})


PEN_MEASURES = ("fill", "thick")  # fitted on the training split; the others on the validation split


def _per_class(values: np.ndarray, labels: np.ndarray, classes: int, quantile: float) -> np.ndarray:
    """The quantile of each class's values (of all values, for a class the split lacks)."""
    every = float(np.quantile(values, quantile))
    return np.array([float(np.quantile(values[labels == c], quantile)) if np.any(labels == c) else every
                     for c in range(classes)], np.float32)


@dataclass(frozen=True)
class Flagger:
    """Applies a card's ``review`` section: calibrates, and names each row's reasons."""

    temperature: float
    min_confidence: float
    min_margin: float
    max_distance: np.ndarray | None  # per class, or one for all; None: the model gives no features
    distance: Distance | None
    odd_shape: OddShape | None = None  # None: a card from before the shape was measured
    not_digit: NotDigit | None = None  # None: not a digit model, or a card from before

    @classmethod
    def from_card(cls, card: dict, has_features: bool) -> Flagger | None:
        review = card.get("review")
        if not review:
            return None
        unlike = review.get("unlike_training") if has_features else None
        try:
            return cls(
                temperature=float(review["temperature"]),
                min_confidence=float(review["min_confidence"]), min_margin=float(review["min_margin"]),
                max_distance=_distance_thresholds(unlike) if unlike else None,
                distance=Distance.from_dict(unlike) if unlike else None,
                odd_shape=OddShape.from_dict(review["odd_shape"]) if review.get("odd_shape") else None,
                not_digit=NotDigit.from_dict(review["not_digit"])
                if review.get("not_digit") and has_features else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as error:
            # the card is a file a person may edit: one line and exit 78, not a traceback
            raise ModelError(f"the card's review section is malformed ({error!r}): "
                             "'worker calibrate' fits a new one") from None

    def classes(self) -> set[int]:
        """How many classes its per-class thresholds are for (empty: none are per class)."""
        counts = {len(limit) for limit in self.odd_shape.limits.values()} if self.odd_shape else set()
        if self.max_distance is not None and self.max_distance.ndim:
            counts.add(len(self.max_distance))
        return counts

    def __call__(self, probabilities: np.ndarray, features: np.ndarray | None,
                 inputs: np.ndarray | None = None):
        """Calibrated probabilities, and per row its reasons (a list) and its score;
        ``inputs``, the batch the model was given, for the ink's shape."""
        raw, probabilities = probabilities, calibrated(probabilities, self.temperature)
        top = np.sort(probabilities, axis=1)[:, ::-1]
        predicted = probabilities.argmax(axis=1)
        ratios = {
            "low-confidence": (1 - top[:, 0]) / (1 - self.min_confidence),
            "low-margin": (1 - (top[:, 0] - top[:, 1])) / (1 - self.min_margin),
        }
        if self.distance is not None and features is not None:
            limit = self.max_distance[predicted] if self.max_distance.ndim else self.max_distance
            ratios["unlike-training"] = self.distance(features) / limit
        shape_read = inputs is not None and (self.odd_shape is not None or self.not_digit is not None)
        measured = ink_shape.measure(inputs) if shape_read else None
        if self.odd_shape is not None and measured is not None:
            ratios["odd-shape"] = self.odd_shape(measured, predicted)
        if self.not_digit is not None and measured is not None and features is not None:
            ratios["not-a-digit"] = self.not_digit(represent(raw, features, measured))
        names = list(ratios)
        stacked = np.stack([ratios[n] for n in names], axis=1)
        past = stacked > 1
        reasons: list[list[str]] = [[] for _ in stacked]
        for i in np.flatnonzero(past.any(axis=1)):  # a few rows in a hundred: no loop over the rest
            reasons[i] = [n for n, flagged in zip(names, past[i], strict=True) if flagged]
        return probabilities, reasons, stacked.max(axis=1)


def _distance_thresholds(unlike: dict) -> np.ndarray:
    """Per class where the card has them; else the one threshold of a card from before."""
    if "class_thresholds" in unlike:
        return np.asarray(unlike["class_thresholds"], np.float32)
    return np.asarray(float(unlike["threshold"]), np.float32)


def fit(val_probabilities: np.ndarray, val_labels: np.ndarray, val_features: np.ndarray | None,
        train_features: np.ndarray | None, train_labels: np.ndarray | None,
        val_inputs: np.ndarray | None = None, train_inputs: np.ndarray | None = None) -> dict:
    """The card's ``review`` section, fitted on the validation split (calibration, thresholds)
    and the training split (the feature distribution); the ink's shape on both (``OddShape``)."""
    temperature = fit_temperature(val_probabilities, val_labels)
    probabilities = calibrated(val_probabilities, temperature)
    top = np.sort(probabilities, axis=1)[:, ::-1]
    review = {
        "temperature": temperature,
        "expected_calibration_error": {
            "before": round(expected_calibration_error(val_probabilities, val_labels), 5),
            "after": round(expected_calibration_error(probabilities, val_labels), 5),
        },
        "min_confidence": round(float(np.quantile(top[:, 0], SHARE["low-confidence"])), 6),
        "min_margin": round(float(np.quantile(top[:, 0] - top[:, 1], SHARE["low-margin"])), 6),
        "fitted_on": "temperature and thresholds: the validation split; distance: the training split; "
                     "ink shape: strokes on the validation split, pen on the training split",
    }
    if train_features is not None and val_features is not None:
        distance = Distance.fit(train_features, train_labels)
        measured, classes = distance(val_features), val_probabilities.shape[1]
        quantile = 1 - SHARE["unlike-training"]
        review["unlike_training"] = {
            "method": "mahalanobis of unit-length features",
            "threshold": round(float(np.quantile(measured, quantile)), 4),
            "class_thresholds": [round(float(t), 4) for t in
                                 _per_class(measured, probabilities.argmax(axis=1), classes, quantile)],
            **distance.to_dict()}
    if val_inputs is not None and train_inputs is not None:
        review["odd_shape"] = OddShape.fit(val_inputs, val_labels, train_inputs, train_labels,
                                           val_probabilities.shape[1]).to_dict()
    return review


def fit_not_digit(digits: tuple, not_digits: tuple, validation: tuple) -> dict:
    """The card's ``review["not_digit"]`` (``NotDigit``): the training split's digits against
    printed letters and symbols, its threshold on the validation split. Each a batch's
    (probabilities before calibration, features, inputs)."""
    def rows(outputs: tuple) -> np.ndarray:
        probabilities, features, inputs = outputs
        return represent(probabilities, features, ink_shape.measure(inputs))

    fitted = NotDigit.fit(rows(digits), rows(not_digits), rows(validation), SHARE["not-a-digit"])
    return {**fitted.to_dict(), "fitted_on": f"{len(digits[0])} training digits against "
                                             f"{len(not_digits[0])} printed letters and symbols"}


def _unit(features: np.ndarray) -> np.ndarray:
    return features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-6)


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def _unb64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").copy()
