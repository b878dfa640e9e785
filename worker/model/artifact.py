"""The model artifact on disk: its files, its card, its version.

A model is three files side by side: ``<name>.keras`` (the trained Keras model, the source of
truth), ``<name>.tflite`` (the same network exported for LiteRT, which serves without importing
TensorFlow: ready in a fraction of a second at a fraction of the memory) and ``<name>.json``,
the model card. Reading a card checks what every model needs in it (``CARD_REQUIRED``); the
card's check images (``make_checks``) let ``Classifier`` tell a copy of this model from another.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from worker.errors import ModelError
from worker.files import write_atomic
from worker.preprocess import SIZE

if TYPE_CHECKING:
    from worker.model.classifier import Classifier

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
