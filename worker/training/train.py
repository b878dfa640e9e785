"""``worker train`` and ``worker calibrate``: the commands, from their options to a published version.

``train`` checks the options, then runs the steps, one module each: the dataset preprocessed and
split (``splits.py``, or ``folder_dataset.py`` for a folder of one's own), the network fitted
(``fitting.py``), then kept as a new version and published as the gate says (``storing.py``,
evaluating it with ``evaluating.py``). ``calibrate`` fits the review flag of a model made before it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import replace
from pathlib import Path

from worker import defaults
from worker.errors import ConfigError
from worker.extras import missing_extra
from worker.model import artifact, gate
from worker.preprocess import MARKS, PROFILES
from worker.training import archs, datasets, folder_dataset, folder_listing
from worker.training.fitting import Recipe, fit, load_start, training_targets
from worker.training.splits import Splits, builtin_splits, folder_splits, validation_size, with_extra
from worker.training.storing import TrainResult, card_for, publish_version, save_version

log = logging.getLogger(__name__)


# Over 40 lines by its signature and docstring alone: a keyword for each option of 'worker train'.
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
    test_share: float = defaults.TEST_SHARE,
    validation_share: float = defaults.VALIDATION_SHARE,
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
    own = folder_listing.is_folder_dataset(data)
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
    splits = _splits(spec, data, prepared, extra, limit=limit, validation=validation, seed=seed,
                     scan_share=recipe.scan_augment)
    staged = _fit_and_save(architecture, spec, splits, recipe, output, init_from=init_from, teacher=teacher,
                           verbose=verbose)
    return publish_version(staged, output, force, publish_mode, tolerance)


def _splits(spec: datasets.DatasetSpec, data: Path | None, prepared: folder_dataset.Prepared | None,
            extra: Path | None, *, limit: int | None, validation: int, seed: int,
            scan_share: float) -> Splits:
    """A folder's splits as ``prepared``, else the built-in dataset's; ``extra``'s images added
    to the training split."""
    splits = folder_splits(prepared) if prepared is not None else builtin_splits(
        spec, data, limit=limit, validation=validation, seed=seed, scan_share=scan_share)
    return splits if extra is None else with_extra(splits, extra, spec)


def _fit_and_save(architecture: archs.Arch, spec: datasets.DatasetSpec, splits: Splits, recipe: Recipe,
                  output: Path, *, init_from: Path | None, teacher: Path | None, verbose: int) -> Path:
    """The network built (with ``init_from``'s weights), fitted (learning from ``teacher`` too)
    and saved as a new version beside ``output``, not yet published."""
    net = architecture.build(len(spec.class_names))
    start = load_start(init_from, spec.name, recipe.arch, net) if init_from else None
    targets, learnt_from = training_targets(splits, teacher, recipe.teacher_weight, list(spec.class_names))
    fitted = fit(net, splits, recipe, verbose, targets)
    card = card_for(output, spec, architecture, net, recipe, fitted, splits, start)
    return save_version(net, output, {**card, "teacher": learnt_from}, splits)


def _dataset_name(dataset: str | None, data: Path | None, own: bool, *, name: str | None,
                  profile: str | None, limit: int | None, validation: int | None, scan_augment: float) -> str:
    """The card's dataset: a built-in one (mnist by default), or a folder's model name. The
    options of the one kind are refused with the other."""
    if not own:
        if name is not None or profile is not None:
            raise ConfigError("--name and --profile are for --data DIR of your own images (a folder per "
                              f"class, or {folder_listing.LABELS_CSV}); a built-in dataset has its own")
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
    splits = builtin_splits(spec, data, limit=total if card.get("train_size") else None,
                            validation=validation, seed=seed, scan_share=card.get("scan_augment", 0.0))
    net = keras.saving.load_model(model_path, compile=False)
    kept = {k: v for k, v in card.items() if k not in ("version", "review", "checks")}
    staged = save_version(net, model_path, kept, splits)
    card = artifact.read_card(staged)
    review = json.dumps(card["review"], sort_keys=True).encode()
    card["version"] = f"{artifact.file_version(staged)}-r{hashlib.sha256(review).hexdigest()[:6]}"
    artifact.write_card(staged, card)
    return publish_version(staged, model_path, force=False, mode="always")  # the same weights: no gate


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
