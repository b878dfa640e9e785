"""The classifier that serves a model: its card checked against its network, and answers.

``Classifier`` reads the card (``artifact.py``), checks it against the network and serves
through LiteRT, falling back to Keras if the LiteRT file or runtime is missing (``runtimes.py``).
"""

from __future__ import annotations

import base64
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worker.errors import ModelError
from worker.extras import install_hint
from worker.model.artifact import (
    INPUT_SHAPE,
    model_version,
    read_card,
    serving_path,
    signature,
    split_outputs,
)
from worker.model.repository import ensure_serving
from worker.model.review_flag import Flagger
from worker.model.runtimes import KerasRunner, LiteRTRunner
from worker.preprocess import Profile, profile_from_dict

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    class_index: int
    label: str
    confidence: float  # calibrated, when the card has a temperature
    probabilities: list[float]
    review: list[str] = field(default_factory=list)  # review_flag's reasons; empty: none
    review_score: float | None = None  # >= 1 flagged; None: the card has no review section


@dataclass
class Scored:
    """The model's answer for a batch: calibrated probabilities, and each row's review."""

    probabilities: np.ndarray
    reviews: list[list[str]]
    review_scores: np.ndarray | None


@functools.cache
def _one_blas_thread() -> None:
    """The review flag's matrix products are small (a batch's features); OpenBLAS would run
    them on every core and leave its threads spinning after, on the cores LiteRT's threads
    need next (measured: the model alone 2,400 images/s with the flag, 3,800 without it, and
    3,800 with it on one BLAS thread)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


class Classifier:
    """A model with its card; ``predict`` maps a batch of (28, 28, 1) inputs to probabilities."""

    def __init__(self, model_path: Path, *, runtime: str = "auto", threads: int = 2) -> None:
        _one_blas_thread()
        ensure_serving(model_path)  # a shipped model's first use in a repository
        # Resolved once: a model published while this one loads is another folder, so the
        # three files read here are always of one version.
        self.signature = signature(model_path)
        self.path = Path(self.signature[0])
        self.card = read_card(self.path)
        self.class_names: list[str] = list(self.card["class_names"])
        self.profile: Profile = profile_from_dict(self.card["preprocessing"])
        self.name = self.path.stem
        self.version = model_version(self.path, self.card)
        self.runtime, self._run = self._open_runtime(runtime, threads)
        features = self._check_outputs()
        self.has_features = features > 0
        self.flagger = Flagger.from_card(self.card, self.has_features)
        measures = (self.flagger.distance, self.flagger.not_digit) if self.flagger else ()
        foreign = sorted({m.width for m in measures if m is not None} - {features})
        if foreign:
            raise ModelError(f"model {self.path} gives {features} features but its card's review section "
                             f"measures {foreign[0]}: the card does not belong to this model")
        if self.flagger and self.flagger.classes() - {len(self.class_names)}:
            raise ModelError(f"the review section of {self.path}'s card has thresholds for "
                             f"{sorted(self.flagger.classes())} classes, not its {len(self.class_names)}")
        self._check_samples()

    def _open_runtime(self, runtime: str, threads: int):
        tflite = serving_path(self.path)
        if runtime in ("auto", "litert") and tflite.is_file():
            try:
                return "litert", LiteRTRunner(tflite, threads)
            except (ImportError, ValueError, RuntimeError) as exc:
                if runtime == "litert":
                    raise ModelError(f"cannot load {tflite} with LiteRT: {exc}") from exc
                log.warning("LiteRT unavailable (%s); falling back to Keras", exc)
        elif runtime == "litert":
            raise ModelError(f"{tflite} is missing; re-export it with 'worker train' or use Keras")
        if not self.path.is_file():
            raise ModelError(f"model file {self.path} is missing; run 'worker train' or pass --model")
        try:
            return "keras", KerasRunner(self.path)
        except ImportError as exc:
            raise ModelError(f"{tflite} is missing, and reading {self.path} instead needs the train extra "
                             f"(TensorFlow): restore the .tflite file, or {install_hint('train')}") from exc
        except Exception as exc:  # noqa: BLE001 - Keras raises many kinds for a bad file
            raise ModelError(f"cannot load model {self.path}: {exc}") from exc

    def _check_outputs(self) -> int:
        """Checks the network gives a probability per class; returns how many features it gives
        (0: none, a model exported before the review flag)."""
        outputs = self._run(np.zeros((1, *INPUT_SHAPE), dtype=np.float32))
        probabilities, features = split_outputs(outputs, len(self.class_names))
        if probabilities.shape != (1, len(self.class_names)):
            raise ModelError(
                f"model {self.path} outputs {probabilities.shape[1:]} values but its card names "
                f"{len(self.class_names)} classes; the card does not belong to this model"
            )
        return 0 if features is None else features.shape[-1]

    def _check_samples(self) -> None:
        checks = self.card.get("checks")
        if not checks:
            return  # a card from before checks
        pixels = np.frombuffer(base64.b64decode(checks["pixels"]), dtype=np.uint8)
        images = pixels.reshape(-1, *INPUT_SHAPE).astype(np.float32) / 255
        got = [self.class_names[i] for i in self.raw(images)[0].argmax(axis=1)] if len(images) else []
        wrong = sum(a != b for a, b in zip(got, checks["labels"], strict=True))
        if wrong:
            raise ModelError(
                f"model {self.path} classifies {wrong} of the {len(got)} check images in its card "
                "otherwise than when it was trained: the files are damaged or not of one model"
            )

    def raw(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The network's own output: (probabilities before calibration, features or None)."""
        return split_outputs(self._run(np.ascontiguousarray(batch, dtype=np.float32)), len(self.class_names))

    def predict(self, batch: np.ndarray) -> Scored:
        probabilities, features = self.raw(batch)
        if self.flagger is None:
            return Scored(probabilities, [[] for _ in probabilities], None)
        calibrated, reasons, scores = self.flagger(probabilities, features, batch)
        return Scored(calibrated, reasons, scores)

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities, calibrated when the card says how."""
        return self.predict(batch).probabilities

    def predictions(self, scored: Scored) -> list[Prediction]:
        """One per row of a batch; rounded and turned into Python numbers once for the batch,
        not a float at a time (a bulk backlog makes tens of thousands a second)."""
        probabilities = scored.probabilities
        indices = probabilities.argmax(axis=1).tolist()
        confidences = probabilities.max(axis=1).tolist()
        rounded = np.round(probabilities.astype(np.float64), 6).tolist()
        scores = [None] * len(indices) if scored.review_scores is None else \
            np.round(scored.review_scores.astype(np.float64), 3).tolist()
        return [Prediction(class_index=i, label=self.class_names[i], confidence=c, probabilities=p,
                           review=list(r), review_score=s)
                for i, c, p, r, s in zip(indices, confidences, rounded, scored.reviews, scores, strict=True)]
