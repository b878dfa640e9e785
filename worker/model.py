"""The model artifact and the classifier that serves it.

On disk a model is three files side by side: ``<name>.keras`` (the trained Keras model, the
source of truth), ``<name>.tflite`` (the same network exported for LiteRT, which serves without
importing TensorFlow: ready in a fraction of a second at a fraction of the memory) and
``<name>.json``, the model card. ``Classifier`` reads the card, checks it against the network
and serves through LiteRT, falling back to Keras if the LiteRT file or runtime is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
    if card.get("version"):
        return str(card["version"])
    serving = serving_path(model_path)
    path = serving if serving.is_file() else Path(model_path)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError:
        return "unknown"


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
        self.path = Path(model_path)
        self.card = read_card(self.path)
        self.class_names: list[str] = list(self.card["class_names"])
        self.profile: Profile = profile_from_dict(self.card["preprocessing"])
        self.name = self.path.stem
        self.version = model_version(self.path, self.card)
        self.runtime, self._run = self._open_runtime(runtime, threads)
        self._check_outputs()

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
