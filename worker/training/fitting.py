"""Fitting a network: the recipe, the input pipelines, the schedule, the best epoch kept.

The best epoch is the one with the lowest validation loss; training stops when that has not
improved for ``patience`` epochs. A run may start from a trained model's weights (``--init-from``)
and learn from a teacher's answers as well as the labels (``--teacher``: distillation).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker import defaults
from worker.errors import ConfigError
from worker.model import artifact
from worker.model.classifier import Classifier
from worker.training.evaluating import raw_outputs
from worker.training.splits import Splits

log = logging.getLogger(__name__)


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
class Fitted:
    """What a training run gave; the card records every field under its own name."""

    epochs_run: int
    best_epoch: int
    validation_accuracy: float
    validation_loss: float
    training_seconds: float
    seconds_per_epoch: float
    epoch_seconds: list[float]


def load_start(path: Path, dataset: str, arch: str, net) -> dict:
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


def training_targets(splits: Splits, teacher: Path | None, weight: float, class_names: list[str]):
    """Training and validation targets: the labels, or (distilling) for training each label's
    one-hot mixed with the teacher's probabilities for that very image (scan renderings
    included), and one-hot labels for validation. Returns them and what the card records."""
    if teacher is None:
        return (splits.y_train, splits.y_val), None
    guide = Classifier(teacher)
    if guide.class_names != class_names:
        raise ConfigError(f"--teacher {teacher} has other classes than this dataset")
    answers, _ = raw_outputs(guide, splits.x_train)
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


def fit(net, splits: Splits, recipe: Recipe, verbose: int, targets) -> Fitted:
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
