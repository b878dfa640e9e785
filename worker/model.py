"""The model artifact and the classifier that serves it.

On disk a model is three files side by side: ``<name>.keras`` (the trained Keras model, the
source of truth), ``<name>.tflite`` (the same network exported for LiteRT, which serves without
importing TensorFlow: ready in a fraction of a second at a fraction of the memory) and
``<name>.json``, the model card. ``Classifier`` reads the card, checks it against the network
and serves through LiteRT, falling back to Keras if the LiteRT file or runtime is missing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.errors import ModelError
from worker.files import write_atomic
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
    probs = classifier.predict_proba(pixels.astype(np.float32) / 255)
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
    """Write the LiteRT file beside the .keras file."""
    target = serving_path(model_path)
    keras_model.export(str(target), format="litert", verbose=False)
    return target


class LiteRTRunner:
    """Runs a .tflite file with ai-edge-litert; resizes the input only when the batch size changes."""

    def __init__(self, path: Path, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self.batch = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) != self.batch:
            self.interpreter.resize_tensor_input(self.input_index, [len(batch), *INPUT_SHAPE])
            self.interpreter.allocate_tensors()
            self.batch = len(batch)
        self.interpreter.set_tensor(self.input_index, batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index).copy()


class KerasRunner:
    def __init__(self, path: Path) -> None:
        import keras

        self.model = keras.saving.load_model(path, compile=False)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(batch, training=False))


@dataclass
class Prediction:
    class_index: int
    label: str
    confidence: float
    probabilities: list[float]


class Classifier:
    """A model with its card; ``predict`` maps a batch of (28, 28, 1) inputs to probabilities."""

    def __init__(self, model_path: Path, *, runtime: str = "auto", threads: int = 2) -> None:
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
        self._check_outputs()
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
            raise ModelError(
                f"{tflite} is missing and TensorFlow is not installed to read {self.path}: "
                "install the [train] extra or restore the .tflite file"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - Keras raises many kinds for a bad file
            raise ModelError(f"cannot load model {self.path}: {exc}") from exc

    def _check_outputs(self) -> None:
        probe = self._run(np.zeros((1, *INPUT_SHAPE), dtype=np.float32))
        if probe.shape != (1, len(self.class_names)):
            raise ModelError(
                f"model {self.path} outputs {probe.shape[1:]} values but its card names "
                f"{len(self.class_names)} classes; the card does not belong to this model"
            )

    def _check_samples(self) -> None:
        checks = self.card.get("checks")
        if not checks:
            return  # a card from before checks
        pixels = np.frombuffer(base64.b64decode(checks["pixels"]), dtype=np.uint8)
        images = pixels.reshape(-1, *INPUT_SHAPE).astype(np.float32) / 255
        got = [self.class_names[i] for i in self._run(images).argmax(axis=1)] if len(images) else []
        wrong = sum(a != b for a, b in zip(got, checks["labels"], strict=True))
        if wrong:
            raise ModelError(
                f"model {self.path} classifies {wrong} of the {len(got)} check images in its card "
                "otherwise than when it was trained: the files are damaged or not of one model"
            )

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        return self._run(np.ascontiguousarray(batch, dtype=np.float32))

    def to_prediction(self, probabilities: np.ndarray) -> Prediction:
        index = int(np.argmax(probabilities))
        return Prediction(
            class_index=index,
            label=self.class_names[index],
            confidence=float(probabilities[index]),
            probabilities=[round(float(p), 6) for p in probabilities],
        )
