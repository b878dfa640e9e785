"""The dataset preprocessed and split for training: train, validation (the best epoch's
choice) and test.

A built-in dataset goes through the same ``preprocess.normalize`` as served files, so what the
model learns is exactly what it will see; a share of its training images may be replaced by
scan-like renderings (``scan_render.py``), and ``--extra`` adds a folder's images to the
training split only. A folder of one's own comes split and preprocessed (``folder_dataset.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from worker import defaults
from worker.errors import ConfigError
from worker.preprocess import normalize_many
from worker.training import datasets, folder_dataset
from worker.training.folder_listing import SPLITS

log = logging.getLogger(__name__)


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


def validation_size(limit: int | None) -> int:
    """``VALIDATION_SIZE`` images held out, or a tenth of ``--limit`` when that is fewer."""
    return defaults.VALIDATION_SIZE if limit is None else min(defaults.VALIDATION_SIZE, max(1, limit // 10))


def _split(x: np.ndarray, y: np.ndarray, validation: int, seed: int):
    order = np.random.default_rng(seed).permutation(len(x))
    val, train = order[:validation], order[validation:]
    return (x[train], y[train]), (x[val], y[val])


def builtin_splits(spec: datasets.DatasetSpec, data: Path | None, *, limit: int | None,
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


def with_extra(splits: Splits, folder: Path, spec: datasets.DatasetSpec) -> Splits:
    """Add a folder-per-label tree (reviewed inputs, sorted scans) to the training split only:
    validation and test stay the dataset's, so the card's numbers stay comparable."""
    from worker.training.reviewed import read_extra

    x_extra, y_extra = read_extra(folder, list(spec.class_names), spec.profile)
    log.info("--extra %s: %d images added to the training split", folder, len(x_extra))
    return replace(splits, x_train=np.concatenate([splits.x_train, x_extra]),
                   y_train=np.concatenate([splits.y_train, y_extra.astype(splits.y_train.dtype)]),
                   extra={"path": str(folder), "images": len(x_extra)})


def folder_splits(prepared: folder_dataset.Prepared) -> Splits:
    """A folder of one's own's splits, as ``folder_dataset.prepare`` gave them."""
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (prepared.arrays[s] for s in SPLITS)
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, prepared.summary["root"],
                  folder=prepared.summary)
