"""A trained network kept as a new version and published as the gate says.

The model, its LiteRT file and its card are written beside the versions before it, not yet
published; the review flag is fitted and the test split evaluated through the LiteRT file, the
way the daemon will serve it. Then the gate (``gate.py``) decides whether it serves.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from worker import __version__
from worker.errors import NotPublished
from worker.model import artifact, gate, publish
from worker.model.classifier import Classifier
from worker.training import archs, datasets
from worker.training.evaluating import evaluate, fit_review
from worker.training.fitting import Fitted, Recipe
from worker.training.splits import Splits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    model_path: Path
    card: dict
    published: bool = True
    verdict: str = ""  # what the gate said


def card_for(output: Path, spec: datasets.DatasetSpec, architecture: archs.Arch, net, recipe: Recipe,
             fitted: Fitted, splits: Splits, start: dict | None) -> dict:
    """The model card (before the test split is evaluated): what it is, how it was made."""
    return {
        "name": output.stem,
        "dataset_source": splits.source,
        "class_names": list(spec.class_names),
        "input_shape": artifact.INPUT_SHAPE,
        "preprocessing": spec.profile.to_dict(),
        "arch_description": architecture.description,
        "params": int(net.count_params()),
        **asdict(recipe),
        "init_from": start,
        "train_size": len(splits.x_train),
        "extra": splits.extra,
        "data_folder": splits.folder,
        "validation_size": len(splits.x_val),
        **asdict(fitted),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }


def _versions() -> dict:
    import cv2
    import keras
    import tensorflow as tf

    return {
        "worker": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }


def save_version(net, output: Path, card: dict, splits: Splits) -> Path:
    """Write model, LiteRT file and card as a new version, not yet published: the review flag
    fitted (``review_flag.py``), evaluated on the test split the way the daemon serves, with
    its check images and version in the card."""
    staged = publish.staging_path(output)
    with _phase("exporting the model for serving"):
        net.save(staged)
        artifact.export_serving(net, staged)
        artifact.write_card(staged, card)
    with _phase("fitting the review flag"):
        card["review"] = fit_review(Classifier(staged), splits)
        artifact.write_card(staged, card)
    with _phase("evaluating on the test split as the daemon serves"):
        classifier = Classifier(staged)
        card.update(evaluate(classifier, splits.x_test, splits.y_test), serving_runtime=classifier.runtime,
                    checks=artifact.make_checks(classifier, splits.x_test, splits.y_test),
                    version=artifact.file_version(staged))
        artifact.write_card(staged, card)
    return staged


@contextmanager
def _phase(what: str) -> Iterator[None]:
    """A line for a step after the epochs, with its time: minutes of silence look like a hang."""
    started = time.perf_counter()
    log.info("%s ...", what)
    yield
    log.info("%s: done in %.1f s", what, time.perf_counter() - started)


def publish_version(staged: Path, output: Path, force: bool, mode: str = "auto",
                    tolerance: float = gate.TOLERANCE_POINTS) -> TrainResult:
    """Keep the staged model as a version; publish it as ``mode`` says (see ``train.train``)."""
    card = artifact.read_card(staged)
    verdict = gate.judge(card, publish.serving_card(output), tolerance)
    version_path = publish.commit(staged, card["version"])
    if mode == "never" or (mode == "auto" and not verdict.passed):
        log.info("test accuracy %.4f; kept %s as version %s, not published", card["test_accuracy"],
                 output, card["version"])
        if mode == "auto":
            raise NotPublished(f"not published: {verdict.reason}; 'worker publish --force "
                               f"{version_path.parent} --model {output}' serves it anyway")
        return TrainResult(model_path=version_path, card=card, published=False, verdict=verdict.reason)
    publish.publish(version_path, output, force=force)
    log.info("test accuracy %.4f; published %s version %s (older versions stay in %s/)",
             card["test_accuracy"], output, card["version"], publish.versions_folder(output))
    return TrainResult(model_path=output, card=card, verdict=verdict.reason)
