"""``worker train``: fit an architecture on a dataset, keep the best epoch, evaluate, save.

The dataset goes through the same ``preprocess.normalize`` as served files, so what the model
learns is exactly what it will see. The best epoch is the one with the lowest validation loss;
training stops when that has not improved for ``patience`` epochs. The test split is evaluated
through the exported LiteRT file, i.e. the way the daemon will serve it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from worker import __version__, defaults
from worker.errors import ConfigError, NotPublished
from worker.extras import missing_extra
from worker.model import artifact, gate, publish, review_flag
from worker.model.classifier import Classifier
from worker.preprocess import MARKS, PROFILES, normalize_many
from worker.training import archs, datasets, folder_dataset

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class TrainResult:
    model_path: Path
    card: dict
    published: bool = True
    verdict: str = ""  # what the gate said


@dataclass(frozen=True)
class Recipe:
    """How a model is trained; the card records every field under its own name."""

    dataset: str
    arch: str
    epochs: int
    batch_size: int
    seed: int
    learning_rate: float
    patience: int
    augment: float  # 0 when the architecture trains without augmentation
    scan_augment: float = 0.0  # share of training images replaced by scan-like renderings
    teacher_weight: float = 0.0  # share of each training target that is the teacher's answer

    def validate(self) -> Recipe:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("--epochs and --batch-size must be at least 1")
        if not 0 <= self.scan_augment <= 1:
            raise ConfigError("--scan-augment is a share of the training images, between 0 and 1")
        if not 0 <= self.teacher_weight <= 1:
            raise ConfigError("--teacher-weight is the teacher's share of each target, between 0 and 1")
        return self


@dataclass(frozen=True)
class Splits:
    """The dataset preprocessed and split: train, validation (best-epoch choice) and test."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    extra: dict | None = None  # what --extra added to the training split
    folder: dict | None = None  # a folder of one's own: its layout, split sizes, cache


@dataclass(frozen=True)
class Fitted:
    """What a training run gave; the card records every field under its own name."""

    epochs_run: int
    best_epoch: int
    validation_accuracy: float
    validation_loss: float
    training_seconds: float
    seconds_per_epoch: float
    epoch_seconds: list[float]


def _augmenter(dataset: str, strength: float, seed: int):
    """Light augmentation of strength s: digits shift and scale by up to s and rotate by up to
    100*s degrees; garments shift by up to s and mirror (a left shoe is a shoe)."""
    import keras
    from keras import layers

    shift = layers.RandomTranslation(strength, strength, fill_mode="constant", seed=seed)
    if dataset == "fashion-mnist":
        return keras.Sequential([layers.RandomFlip("horizontal", seed=seed), shift])
    return keras.Sequential([
        layers.RandomRotation(100 * strength / 360, fill_mode="constant", seed=seed),
        layers.RandomZoom(strength, fill_mode="constant", seed=seed),
        shift,
    ])


def _split(x: np.ndarray, y: np.ndarray, validation: int, seed: int):
    order = np.random.default_rng(seed).permutation(len(x))
    val, train = order[:validation], order[validation:]
    return (x[train], y[train]), (x[val], y[val])


def _make_datasets(x_train, y_train, x_val, y_val, *, batch_size, augment, seed):
    """The training and validation pipelines. tf.data's autotuning is off: its thread sleeps
    up to 60 s between rounds, and Keras's end-of-epoch iterator teardown waited for it (seen:
    a 40-55 s stall in every other epoch). Parallelism and prefetch are set by hand instead.
    Memory-mapped inputs (a folder of one's own) larger than ``IN_MEMORY_TRAINING_BYTES`` are
    read a batch at a time, never whole; smaller ones are read into memory first."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    if isinstance(x_train, np.memmap) and x_train.nbytes <= defaults.IN_MEMORY_TRAINING_BYTES:
        x_train, x_val = np.array(x_train), np.array(x_val)
    if isinstance(x_train, np.memmap):
        train = _batches_of(x_train, y_train, batch_size, np.random.default_rng(seed))
        val = _batches_of(x_val, y_val, 512, None)
        if augment is not None:
            train = train.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=1)
        return train.prefetch(2).with_options(options), val.with_options(options)
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train))
    train = train.shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
    train = train.batch(batch_size)
    if augment is not None:
        train = train.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=1)
    train = train.prefetch(2).with_options(options)
    val = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(512).with_options(options)
    return train, val


def _batches_of(x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator | None):
    """Batches read from a memory-mapped array, in a new random order each epoch (``rng``) or
    in order (None). Each batch's rows are read in file order: random batches, sequential reads."""
    import tensorflow as tf

    def generate():
        order = np.arange(len(x)) if rng is None else rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            rows = np.sort(order[start : start + batch_size])
            yield np.asarray(x[rows]), np.asarray(y[rows])

    signature = (tf.TensorSpec((None, *x.shape[1:]), tf.float32),
                 tf.TensorSpec((None, *y.shape[1:]), y.dtype))
    batches = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return batches.apply(tf.data.experimental.assert_cardinality(-(-len(x) // batch_size)))


def _epoch_log():
    """A Keras callback that keeps the best weights by validation loss and each epoch's time.
    Built in a function so Keras is imported only when training."""
    import keras

    class EpochLog(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best_loss, self.best_epoch, self.best_weights = np.inf, 0, None
            self.seconds: list[float] = []
            self._start = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)
            if logs["val_loss"] < self.best_loss:
                self.best_loss, self.best_epoch = logs["val_loss"], epoch + 1
                self.best_weights = self.model.get_weights()

    return EpochLog()


def _evaluate(classifier: Classifier, x: np.ndarray, y: np.ndarray) -> dict:
    probs = np.concatenate([classifier.predict_proba(x[i : i + 1000]) for i in range(0, len(x), 1000)])
    pred = probs.argmax(axis=1)
    n = len(classifier.class_names)
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (y.astype(int), pred), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "test_accuracy": round(float((pred == y).mean()), 5),
        "per_class_test_accuracy": {
            name: round(float(acc), 5) for name, acc in zip(classifier.class_names, per_class, strict=True)
        },
        "confusion_matrix": confusion.tolist(),
    }


def _load_start(path: Path, dataset: str, arch: str, net) -> dict:
    """Copy a trained model's weights into ``net``; return what the card records about it."""
    card = artifact.read_card(path)
    if (card["dataset"], card["arch"]) != (dataset, arch):
        raise ConfigError(
            f"--init-from {path} is {card['arch']} on {card['dataset']}, not {arch} on {dataset}"
        )
    import keras

    net.set_weights(keras.saving.load_model(path, compile=False).get_weights())
    return {
        "path": str(path), "test_accuracy": card.get("test_accuracy"),
        "epochs_run": card.get("epochs_run"), "training_seconds": card.get("training_seconds"),
        "learning_rate": card.get("learning_rate", 2e-3), "created_at": card.get("created_at"),
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


def train(
    *,
    dataset: str | None = None,
    arch: str = archs.DEFAULT_ARCH,
    epochs: int = defaults.EPOCHS,
    batch_size: int = defaults.TRAIN_BATCH_SIZE,
    seed: int = defaults.SEED,
    validation: int | None = None,
    data: Path | None = None,
    output: Path | None = None,
    models_dir: Path | None = None,
    limit: int | None = None,
    learning_rate: float = defaults.LEARNING_RATE,
    init_from: Path | None = None,
    patience: int = defaults.PATIENCE,
    augment: float = defaults.AUGMENT,
    scan_augment: float = 0.0,
    teacher: Path | None = None,
    teacher_weight: float = defaults.TEACHER_WEIGHT,
    force: bool = False,
    extra: Path | None = None,
    verbose: int = 2,
    publish_mode: str = "auto",
    tolerance: float = gate.TOLERANCE_POINTS,
    name: str | None = None,
    profile: str | None = None,
    test_share: float = folder_dataset.TEST_SHARE,
    validation_share: float = folder_dataset.VALIDATION_SHARE,
) -> TrainResult:
    """Train ``arch`` on ``dataset`` and save model, LiteRT file and card at ``output``.

    ``limit`` trains on the first N training images only (for smoke tests); ``validation``
    (None) is then a tenth of them, at most ``VALIDATION_SIZE``. ``init_from`` starts
    from a trained model's weights (same dataset and arch): a warm restart, i.e. one more cosine
    cycle, usually at a lower ``learning_rate``. ``scan_augment`` replaces that share of the
    training images by scan-like renderings (``scan_render.py``). ``teacher``: distillation,
    each training target a mix of the label and a trained model's answer for that image
    (``teacher_weight`` of it). The model is saved as a new
    version beside the old ones and published (``publish.py``) as ``publish_mode`` says:
    ``auto`` only if it passes the gate against what serves (``gate.py``; else NotPublished),
    ``always``, or ``never``. Nothing is overwritten, and a model kept as plain files at
    ``output`` is turned into versions only with ``force``.

    ``data`` may instead be a folder of one's own labelled images (``folder_dataset.py``): the
    model is then named ``name`` (default: the folder's), its images preprocessed with the
    profile named ``profile`` (default: digits, i.e. ink on paper) and split by ``test_share``
    and ``validation_share`` unless the folder gives its splits.
    """
    if publish_mode not in gate.PUBLISH_MODES:
        raise ConfigError(f"--publish must be one of: {', '.join(gate.PUBLISH_MODES)}")
    own = folder_dataset.is_folder_dataset(data)
    dataset = _dataset_name(dataset, data, own, name=name, profile=profile, limit=limit,
                            validation=validation, scan_augment=scan_augment)
    if validation is None:
        validation = validation_size(limit)
    recipe = Recipe(dataset=dataset, arch=arch, epochs=epochs, batch_size=batch_size, seed=seed,
                    learning_rate=learning_rate, patience=patience, augment=augment,
                    scan_augment=scan_augment, teacher_weight=teacher_weight if teacher else 0.0).validate()
    architecture = archs.get_arch(arch)
    prepared = None if not own else folder_dataset.prepare(
        data, name=dataset, profile=_profile(profile), seed=seed, test_share=test_share,
        validation_share=validation_share)
    spec = prepared.spec if own else datasets.get_spec(dataset)
    output = _output_path(output, spec.name, force, models_dir)
    if not architecture.augment:
        recipe = replace(recipe, augment=0.0)
    keras = import_keras_quietly()
    keras.utils.set_random_seed(seed)
    splits = _own_splits(prepared) if own else _prepare(spec, data, limit=limit, validation=validation,
                                                        seed=seed, scan_share=recipe.scan_augment)
    if extra is not None:
        splits = _with_extra(splits, extra, spec)
    net = architecture.build(len(spec.class_names))
    start = _load_start(init_from, spec.name, arch, net) if init_from else None
    targets, learnt_from = _targets(splits, teacher, recipe.teacher_weight, list(spec.class_names))
    fitted = _fit(net, splits, recipe, verbose, targets)
    card = _card(output, spec, architecture, net, recipe, fitted, splits, start)
    staged = _save(net, output, {**card, "teacher": learnt_from}, splits)
    return _publish(staged, output, force, publish_mode, tolerance)


def _dataset_name(dataset: str | None, data: Path | None, own: bool, *, name: str | None,
                  profile: str | None, limit: int | None, validation: int | None, scan_augment: float) -> str:
    """The card's dataset: a built-in one (mnist by default), or a folder's model name. The
    options of the one kind are refused with the other."""
    if not own:
        if name is not None or profile is not None:
            raise ConfigError("--name and --profile are for --data DIR of your own images (a folder per "
                              f"class, or {folder_dataset.LABELS_CSV}); a built-in dataset has its own")
        return dataset or "mnist"
    if dataset is not None:
        raise ConfigError(f"--data {data} is a dataset of its own (class folders); "
                          f"leave out --dataset {dataset}")
    for option, value in (("--limit", limit), ("--validation", validation),
                          ("--scan-augment", scan_augment or None)):
        if value is not None:
            raise ConfigError(f"{option} is for the built-in datasets; a folder of your own is split by "
                              "--test-share and --validation-share")
    return folder_dataset.model_name(name, data)


def _profile(name: str | None):
    """A folder's profile: ``--profile``, else the one for marks in ink on paper."""
    name = name or MARKS.name
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown --profile {name!r}; choose one of: {', '.join(PROFILES)}") from None


def _own_splits(prepared: folder_dataset.Prepared) -> Splits:
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (prepared.arrays[s] for s in folder_dataset.SPLITS)
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, prepared.summary["root"],
                  folder=prepared.summary)


def calibrate(model_path: Path, data: Path | None = None) -> TrainResult:
    """``worker calibrate``: give a model made before the review flag what it needs (the
    features output, the card's ``review`` section), fitted on the splits it was trained with;
    the weights are not touched. A new version, published: ``<sha of the .tflite>-r<sha of
    the review section>``, as a model calibrated again has the same .tflite."""
    model_path = Path(model_path)
    card = artifact.read_card(model_path)
    if card.get("data_folder"):
        raise ConfigError(f"{model_path} was trained on a folder of its own and fitted its review flag "
                          "then: there is nothing to calibrate")
    spec = datasets.get_spec(card["dataset"])
    keras = import_keras_quietly()

    seed, validation = card.get("seed", defaults.SEED), card.get("validation_size", defaults.VALIDATION_SIZE)
    keras.utils.set_random_seed(seed)
    extra = (card.get("extra") or {}).get("images", 0)  # a folder not re-read: the split is the dataset's
    total = card.get("train_size", 0) - extra + validation
    splits = _prepare(spec, data, limit=total if card.get("train_size") else None, validation=validation,
                      seed=seed, scan_share=card.get("scan_augment", 0.0))
    net = keras.saving.load_model(model_path, compile=False)
    kept = {k: v for k, v in card.items() if k not in ("version", "review", "checks")}
    staged = _save(net, model_path, kept, splits)
    card = artifact.read_card(staged)
    review = json.dumps(card["review"], sort_keys=True).encode()
    card["version"] = f"{artifact.file_version(staged)}-r{hashlib.sha256(review).hexdigest()[:6]}"
    artifact.write_card(staged, card)
    return _publish(staged, model_path, force=False, mode="always")  # the same weights: no gate


def _publish(staged: Path, output: Path, force: bool, mode: str = "auto",
             tolerance: float = gate.TOLERANCE_POINTS) -> TrainResult:
    """Keep the staged model as a version; publish it as ``mode`` says (see ``train``)."""
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


def _save(net, output: Path, card: dict, splits: Splits) -> Path:
    """Write model, LiteRT file and card as a new version, not yet published: the review flag
    fitted (``review_flag.py``), evaluated on the test split the way the daemon serves, with
    its check images and version in the card."""
    staged = publish.staging_path(output)
    with _phase("exporting the model for serving"):
        net.save(staged)
        artifact.export_serving(net, staged)
        artifact.write_card(staged, card)
    with _phase("fitting the review flag"):
        card["review"] = _fit_review(Classifier(staged), splits)
        artifact.write_card(staged, card)
    with _phase("evaluating on the test split as the daemon serves"):
        classifier = Classifier(staged)
        card.update(_evaluate(classifier, splits.x_test, splits.y_test), serving_runtime=classifier.runtime,
                    checks=artifact.make_checks(classifier, splits.x_test, splits.y_test),
                    version=artifact.file_version(staged))
        artifact.write_card(staged, card)
    return staged


def validation_size(limit: int | None) -> int:
    """``VALIDATION_SIZE`` images held out, or a tenth of ``--limit`` when that is fewer."""
    return defaults.VALIDATION_SIZE if limit is None else min(defaults.VALIDATION_SIZE, max(1, limit // 10))


@contextmanager
def _phase(what: str) -> Iterator[None]:
    """A line for a step after the epochs, with its time: minutes of silence look like a hang."""
    started = time.perf_counter()
    log.info("%s ...", what)
    yield
    log.info("%s: done in %.1f s", what, time.perf_counter() - started)


def import_keras_quietly():
    """Keras, with TensorFlow loaded with stderr silenced: its C++ libraries log while loading,
    before anything can configure them (no CUDA drivers, the CPU's features, absl's warning),
    lines that say nothing to a user of a CPU machine. A ConfigError without the ``[train]``
    extra."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    quiet = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(quiet, 2)
        import keras
        import tensorflow  # noqa: F401 - loaded here, quietly, rather than later, loudly
    except ModuleNotFoundError:
        raise missing_extra("train", "training") from None
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(quiet)
    return keras


def _fit_review(classifier: Classifier, splits: Splits) -> dict:
    val_probabilities, val_features = _raw_outputs(classifier, splits.x_val)
    _, train_features = _raw_outputs(classifier, splits.x_train)
    review = review_flag.fit(val_probabilities, splits.y_val.astype(int), val_features,
                             train_features, splits.y_train.astype(int), splits.x_val, splits.x_train)
    log.info("review flag: temperature %.3f (validation ECE %.4f -> %.4f)", review["temperature"],
             *review["expected_calibration_error"].values())
    return review


def _raw_outputs(classifier: Classifier, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    parts = [classifier.raw(x[i : i + 1000]) for i in range(0, len(x), 1000)]
    features = None if parts[0][1] is None else np.concatenate([f for _, f in parts])
    return np.concatenate([p for p, _ in parts]), features


def _output_path(output: Path | None, dataset: str, force: bool, models_dir: Path | None = None) -> Path:
    """The model path users name (``models/mnist.keras``, or ``<models_dir>/mnist.keras``). A new
    version goes beside the old ones and is published; plain files there (a model from before
    versions) need ``force``."""
    output = Path(output) if output else Path(models_dir or defaults.MODELS_DIR) / f"{dataset}.keras"
    if output.suffix != ".keras":
        raise ConfigError(f"--output {output} must end in .keras")
    if output.exists() and not output.is_symlink() and not force:
        raise ConfigError(
            f"{output} is a model kept as plain files; pass --output for a new model beside it, "
            "or --force to keep it as versions from now on (the new one published)"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    return output


def _with_extra(splits: Splits, folder: Path, spec: datasets.DatasetSpec) -> Splits:
    """Add a folder-per-label tree (reviewed inputs, sorted scans) to the training split only:
    validation and test stay the dataset's, so the card's numbers stay comparable."""
    from worker.training.reviewed import read_extra

    x_extra, y_extra = read_extra(folder, list(spec.class_names), spec.profile)
    log.info("--extra %s: %d images added to the training split", folder, len(x_extra))
    return replace(splits, x_train=np.concatenate([splits.x_train, x_extra]),
                   y_train=np.concatenate([splits.y_train, y_extra.astype(splits.y_train.dtype)]),
                   extra={"path": str(folder), "images": len(x_extra)})


def _prepare(spec: datasets.DatasetSpec, data: Path | None, *, limit: int | None,
             validation: int, seed: int, scan_share: float = 0.0) -> Splits:
    """Load, preprocess with the dataset's profile (as serving will), split off validation;
    replace ``scan_share`` of the training split by scan-like renderings of the same images."""
    data_set = datasets.load(spec.name, data)
    x_all, y_all = data_set.train_images, data_set.train_labels
    if limit:
        x_all, y_all = x_all[:limit], y_all[:limit]
    if not 0 < validation < len(x_all):
        raise ConfigError(f"--validation must be between 1 and {len(x_all) - 1}")
    log.info("preprocessing %d training and %d test images", len(x_all), len(data_set.test_images))
    x_all = normalize_many(x_all, spec.profile)
    x_test = normalize_many(data_set.test_images, spec.profile)
    (x_train, y_train), (x_val, y_val) = _split(x_all, y_all, validation, seed)
    if scan_share > 0:
        (raw_train, _), _ = _split(data_set.train_images[: len(x_all)], y_all, validation, seed)
        digits = tuple(spec.class_names) == tuple("0123456789")  # printed digits need digit labels
        x_train = _with_scans(x_train, raw_train, y_train if digits else None, scan_share, spec.profile, seed)
    return Splits(x_train, y_train, x_val, y_val, x_test, data_set.test_labels, data_set.source)


def _with_scans(x_train: np.ndarray, raw: np.ndarray, labels: np.ndarray | None, share: float, profile,
                seed: int) -> np.ndarray:
    from worker.training.scan_render import render_many

    chosen = np.random.default_rng(seed + 1).choice(len(raw), int(round(share * len(raw))), replace=False)
    log.info("rendering %d training images as scans, marker, low-resolution, form, printed and canvas "
             "digits", len(chosen))
    x_train = x_train.copy()
    x_train[chosen] = render_many(raw[chosen], profile, seed, None if labels is None else labels[chosen])
    return x_train


def _targets(splits: Splits, teacher: Path | None, weight: float, class_names: list[str]):
    """Training and validation targets: the labels, or (distilling) for training each label's
    one-hot mixed with the teacher's probabilities for that very image (scan renderings
    included), and one-hot labels for validation. Returns them and what the card records."""
    if teacher is None:
        return (splits.y_train, splits.y_val), None
    guide = Classifier(teacher)
    if guide.class_names != class_names:
        raise ConfigError(f"--teacher {teacher} has other classes than this dataset")
    answers, _ = _raw_outputs(guide, splits.x_train)
    eye = np.eye(len(class_names), dtype=np.float32)
    labels = splits.y_train.astype(int)
    # A teacher wrong about an image (a printed 1 with a long flag, read as 7) would teach its
    # mistake: there the target is the label alone.
    wrong = answers.argmax(axis=1) != labels
    shares = np.where(wrong, 0.0, weight).astype(np.float32)[:, None]
    soft = (1 - shares) * eye[labels] + shares * answers
    log.info("distilling from %s (version %s): targets %.0f %% its answers, the label alone for the "
             "%d images it reads wrong", teacher, guide.version, 100 * weight, int(wrong.sum()))
    return (soft, eye[splits.y_val.astype(int)]), {
        "path": str(teacher), "version": guide.version, "test_accuracy": guide.card.get("test_accuracy"),
        "weight": weight, "label_only": int(wrong.sum()),
    }


def _fit(net, splits: Splits, recipe: Recipe, verbose: int, targets) -> Fitted:
    """Fit with a warmed-up cosine schedule; keep the weights of the best validation loss.
    ``targets``: (training, validation) labels, or one-hot and soft targets when distilling."""
    import keras

    steps = int(np.ceil(len(splits.x_train) / recipe.batch_size)) * recipe.epochs
    schedule = keras.optimizers.schedules.CosineDecay(
        recipe.learning_rate / 20, decay_steps=steps, warmup_target=recipe.learning_rate,
        warmup_steps=max(1, steps // 20),
    )
    y_train, y_val = targets
    soft = y_train.ndim == 2
    net.compile(optimizer=keras.optimizers.Adam(schedule),
                loss="categorical_crossentropy" if soft else "sparse_categorical_crossentropy",
                metrics=[keras.metrics.CategoricalAccuracy(name="accuracy") if soft else "accuracy"])
    augmenter = _augmenter(recipe.dataset, recipe.augment, recipe.seed) if recipe.augment > 0 else None
    train_ds, val_ds = _make_datasets(
        splits.x_train, y_train, splits.x_val, y_val, batch_size=recipe.batch_size,
        augment=augmenter, seed=recipe.seed,
    )
    epoch_log = _epoch_log()
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=recipe.patience)
    log.info("training %s on %s: %d epochs at most, batch %d, seed %d",
             recipe.arch, recipe.dataset, recipe.epochs, recipe.batch_size, recipe.seed)
    started = time.perf_counter()
    history = net.fit(train_ds, validation_data=val_ds, epochs=recipe.epochs,
                      callbacks=[epoch_log, stop], verbose=verbose,
                      shuffle=False)  # train_ds reshuffles itself each epoch
    training_seconds = time.perf_counter() - started
    net.set_weights(epoch_log.best_weights)
    return Fitted(
        epochs_run=len(epoch_log.seconds),
        best_epoch=epoch_log.best_epoch,
        validation_accuracy=round(float(history.history["val_accuracy"][epoch_log.best_epoch - 1]), 5),
        validation_loss=round(float(epoch_log.best_loss), 5),
        training_seconds=round(training_seconds, 1),
        seconds_per_epoch=round(float(np.mean(epoch_log.seconds)), 1),
        epoch_seconds=[round(x, 1) for x in epoch_log.seconds],
    )


def _card(output: Path, spec: datasets.DatasetSpec, architecture: archs.Arch, net, recipe: Recipe,
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
