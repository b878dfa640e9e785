"""The model artifact and the classifier that serves it.

On disk a model is three files side by side: ``<name>.keras`` (the trained Keras model, the
source of truth), ``<name>.tflite`` (the same network exported for LiteRT, which serves without
importing TensorFlow: ready in a fraction of a second at a fraction of the memory) and
``<name>.json``, the model card. ``Classifier`` reads the card, checks it against the network
and serves through LiteRT, falling back to Keras if the LiteRT file or runtime is missing.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worker.errors import ModelError
from worker.extras import install_hint
from worker.files import write_atomic
from worker.model.repository import ensure_serving
from worker.model.review_flag import Flagger
from worker.preprocess import SIZE, Profile, profile_from_dict

log = logging.getLogger(__name__)

INPUT_SHAPE = [SIZE, SIZE, 1]
CARD_REQUIRED = ("dataset", "class_names", "input_shape", "preprocessing", "arch")


def card_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".json")


def serving_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".tflite")


def read_card(model_path: Path) -> dict:
    path = card_path(model_path)
    model_files = (Path(model_path).with_suffix(suffix) for suffix in (".keras", ".tflite"))
    if not path.is_file() and not any(file.exists() for file in model_files):
        raise ModelError(f"model {model_path} does not exist (nor its .tflite or card); give the path "
                         "of a trained model's .keras file")
    if not path.is_file():
        raise ModelError(
            f"model card {path} is missing; every model needs its card beside it "
            "(run 'worker train' to make both)"
        )
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"model card {path} is not valid JSON ({exc}); retrain or restore it") from exc
    missing = [key for key in CARD_REQUIRED if key not in card]
    if missing:
        raise ModelError(f"model card {path} lacks {', '.join(missing)}; retrain or restore it")
    if list(card["input_shape"]) != INPUT_SHAPE:
        raise ModelError(f"model card {path} says input {card['input_shape']}, expected {INPUT_SHAPE}")
    return card


def model_version(model_path: Path, card: dict) -> str:
    """What tells two models of one name apart: the card's ``version`` if it has one, else the
    first 12 hex digits of the sha256 of the file that serves (the .tflite, or the .keras)."""
    return str(card["version"]) if card.get("version") else file_version(model_path)


def file_version(model_path: Path) -> str:
    """The first 12 hex digits of the sha256 of the file that serves (the .tflite, or the .keras)."""
    serving = serving_path(model_path)
    path = serving if serving.is_file() else Path(model_path)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError:
        return "unknown"


def signature(model_path: Path) -> tuple:
    """What changes when a model is published or its files are replaced: the folder the path
    resolves to, and each file's inode, size and modification time."""
    real = Path(os.path.realpath(model_path))
    parts = []
    for path in (real, serving_path(real), card_path(real)):
        try:
            info = os.stat(path)
            parts.append((info.st_ino, info.st_size, info.st_mtime_ns))
        except OSError:
            parts.append(None)
    return (str(real), tuple(parts))


def make_checks(classifier: Classifier, images: np.ndarray, labels: np.ndarray) -> dict:
    """For the card: one test image per class that the model gets right and sure (>= 0.99),
    stored as 8-bit pixels with the label the model gave it. A copy of the model that does not
    give the same labels is not this model (a wrong file, a broken export, a damaged copy)."""
    pixels = np.round(np.asarray(images) * 255).astype(np.uint8)
    # A thousand at a time: the runtime sizes its activations to the batch (a whole test split
    # at once took 3 GB more).
    probs = np.concatenate([classifier.predict_proba(pixels[i : i + 1000].astype(np.float32) / 255)
                            for i in range(0, len(pixels), 1000)])
    predicted, sure = probs.argmax(axis=1), probs.max(axis=1) >= 0.99
    chosen = [int(np.flatnonzero((labels == c) & (predicted == c) & sure)[0])
              for c in range(len(classifier.class_names)) if np.any((labels == c) & (predicted == c) & sure)]
    return {
        "labels": [classifier.class_names[predicted[i]] for i in chosen],
        "pixels": base64.b64encode(pixels[chosen].tobytes()).decode("ascii"),
    }


def write_card(model_path: Path, card: dict) -> Path:
    path = card_path(model_path)
    write_atomic(path, json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    return path


def export_serving(keras_model, model_path: Path) -> Path:
    """Write the LiteRT file beside the .keras file. It gives two outputs: the probabilities and
    the features the last layer reads (what ``review_flag`` measures the input's strangeness on)."""
    target = serving_path(model_path)
    with_features(keras_model).export(str(target), format="litert", verbose=False)
    return target


def with_features(keras_model):
    """The same network with a second output: what its last layer reads."""
    import keras

    if isinstance(keras_model, keras.Sequential):  # no graph of its own to read a layer's input from
        x = inputs = keras.Input(INPUT_SHAPE)
        for layer in keras_model.layers[:-1]:
            x = layer(x)
        return keras.Model(inputs, [keras_model.layers[-1](x), x])
    return keras.Model(keras_model.input, [keras_model.output, keras_model.layers[-1].input])


def split_outputs(outputs: list[np.ndarray], classes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities, features or None) from a network's outputs, told apart by their width:
    LiteRT does not keep the order they were exported in."""
    probabilities = next((o for o in outputs if o.shape[-1] == classes), outputs[0])
    features = next((o for o in outputs if o is not probabilities), None)
    return probabilities, features


class LiteRTRunner:
    """Runs a .tflite file with ai-edge-litert; resizes the input only when the batch size changes."""

    def __init__(self, path: Path, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        details = self.interpreter.get_input_details()[0]
        self.input_index = details["index"]
        self.output_indices = [d["index"] for d in self.interpreter.get_output_details()]
        with _stderr_without(XNNPACK_BANNER):
            self.interpreter.allocate_tensors()
        self.batch = int(details["shape"][0])

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        if len(batch) != self.batch:
            self.interpreter.resize_tensor_input(self.input_index, [len(batch), *INPUT_SHAPE])
            self.interpreter.allocate_tensors()
            self.batch = len(batch)
        self.interpreter.set_tensor(self.input_index, batch)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(i).copy() for i in self.output_indices]


# What the runtime's C++ prints on its first tensor allocation in a process, with no way to turn
# it off: on every command's stderr, even with -q, and in the journal.
XNNPACK_BANNER = b"Created TensorFlow Lite XNNPACK delegate for CPU."


_stderr_redirect = threading.Lock()  # fd 2 is the process's: one redirect at a time


@contextmanager
def _stderr_without(banner: bytes) -> Iterator[None]:
    """File descriptor 2 caught in a temporary file while the block runs, then written back
    without the lines holding ``banner``: what other threads write meanwhile comes late, never
    lost. Where fd 2 cannot be caught (no temporary file, no descriptor left), the block runs
    as it is and the banner shows."""
    with _stderr_redirect:
        caught, saved = _catch_stderr()
        if caught is None:
            yield
            return
        with caught:
            os.dup2(caught.fileno(), 2)
            try:
                yield
            finally:
                if sys.stderr is not None:
                    sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                _write_back(caught, banner)


def _catch_stderr():
    """(a temporary file, a copy of fd 2), or (None, None) where either cannot be had."""
    try:
        caught = tempfile.TemporaryFile()
    except OSError:
        return None, None
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        return caught, os.dup(2)
    except (OSError, ValueError):
        caught.close()
        return None, None


def _write_back(caught, banner: bytes) -> None:
    """What fd 2 received while caught, but the banner's lines, to fd 2 as it is again."""
    try:
        caught.seek(0)
        kept = [line for line in caught.read().splitlines(keepends=True) if banner not in line]
        if kept:
            os.write(2, b"".join(kept))
    except OSError:
        pass  # stderr gone (closed, a full disk): nothing can be said there anyway


class KerasRunner:
    def __init__(self, path: Path) -> None:
        import keras

        self.model = with_features(keras.saving.load_model(path, compile=False))

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(o) for o in self.model(batch, training=False)]


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
        measured = self.flagger.distance.width if self.flagger and self.flagger.distance else features
        if measured != features:
            raise ModelError(f"model {self.path} gives {features} features but its card's review section "
                             f"measures {measured}: the card does not belong to this model")
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
