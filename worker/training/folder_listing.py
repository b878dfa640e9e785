"""The labelled files of a folder of one's own: its layout read, its classes checked.

``worker train --data DIR`` takes, in this order of recognition:

- the four IDX files of MNIST or Fashion-MNIST (``datasets.py``: a source of a built-in dataset);
- ``DIR/labels.csv``: rows ``file,label`` (a header row naming them, an optional ``split``
  column of ``train``, ``validation`` or ``test``), files relative to ``DIR``;
- ``DIR/train/<class>/`` and ``DIR/test/<class>/`` (and ``DIR/validation/<class>/``): the
  splits as given;
- ``DIR/<class>/``: one folder per class, split here (``folder_dataset.py``).

A class folder may hold subfolders: everything under it is that class. A class name holding a
``/`` is spelled ``%2F`` in its folder's name (any ``%XX`` is decoded: ``reviewed.folder_label``,
the names ``export-reviewed`` writes). Files whose suffix is no image format the daemon reads,
and hidden files, are skipped and counted.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worker.errors import ConfigError
from worker.preprocess.headers import IMAGE_SUFFIXES
from worker.training.datasets import read_idx_folder
from worker.training.reviewed import folder_label

LABELS_CSV = "labels.csv"
SPLITS = ("train", "validation", "test")
# Fewer images than this in a class cannot be split into training, validation and test and
# still teach the model anything about the class: such a class is refused, by name.
MIN_CLASS_IMAGES = 5
MIN_CLASSES = 2
# Each class is a column of predictions.csv and an output of the model: past this many, a row
# is mostly probabilities and a 28x28 input has too little to tell them apart.
MAX_CLASSES = 1000


@dataclass(frozen=True)
class Listing:
    """The labelled files of a folder: each file's path, class index and split (None: split here)."""

    root: Path
    layout: str  # "labels.csv", "split folders" or "class folders"
    class_names: tuple[str, ...]
    paths: list[Path]
    labels: np.ndarray
    splits: list[str | None]
    skipped: list[Path] = field(default_factory=list)  # files that are no image


def is_folder_dataset(path: Path | None) -> bool:
    """A folder of one's own labelled images, rather than a built-in dataset's files."""
    if path is None or not Path(path).is_dir():
        return False
    path = Path(path)
    if (path / LABELS_CSV).is_file():
        return True
    return read_idx_folder(path) is None and any(p.is_dir() and not p.name.startswith(".")
                                                 for p in path.iterdir())


def class_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a class, or None. A class name becomes a label in every row and
    the CSV column ``p_<name>``: any printable text is fine (the CSV quotes commas and quotes),
    but not control characters (a line break splits a row for naive readers), blanks at either
    end (a spreadsheet trims them) or a leading formula character (the label cell would run)."""
    if not name:
        return "it is empty"
    if any(unicodedata.category(c).startswith("C") for c in name):
        return "it holds a control character"
    if name != name.strip():
        return "it starts or ends with a blank"
    if name.startswith(("=", "+", "@")):
        return "it starts with =, + or @ (a spreadsheet formula)"
    return None


def list_folder(root: Path) -> Listing:
    root = Path(root)
    if (root / LABELS_CSV).is_file():
        listing = _from_csv(root)
    elif any((root / split).is_dir() for split in ("train", "test")):
        listing = _from_split_folders(root)
    else:
        listing = _from_class_folders(root)
    _check_classes(listing)
    return listing


def natural_key(name: str) -> list:
    """Sort ``2`` before ``10``: class names that are numbers keep their order."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    found = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = folder_label(sub.name)
        if label in found:
            raise ConfigError(f"--data {folder}: two folders name the class {label!r} (one spelled with "
                              f"%XX escapes, as {sub.name!r}); merge them or rename one")
        found[label] = _files_under(sub)
    if not found:
        raise ConfigError(f"--data {folder} has no class folders (a folder per class, or {LABELS_CSV})")
    return found


def _files_under(folder: Path) -> list[Path]:
    """Every file in ``folder`` and its subfolders, in path order, hidden ones left out."""
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _from_class_folders(root: Path) -> Listing:
    return _listing(root, "class folders", {None: _class_folders(root)})


def _from_split_folders(root: Path) -> Listing:
    if not (root / "train").is_dir():
        raise ConfigError(f"--data {root} has a test folder but no train folder")
    given = {split: _class_folders(root / split) for split in SPLITS if (root / split).is_dir()}
    return _listing(root, "split folders", given)


def _listing(root: Path, layout: str, given: dict[str | None, dict[str, list[Path]]]) -> Listing:
    names = sorted({name for classes in given.values() for name in classes}, key=natural_key)
    paths, labels, splits, skipped = [], [], [], []
    for split, classes in given.items():
        for name, files in classes.items():
            for path in files:
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    skipped.append(path)
                    continue
                paths.append(path)
                labels.append(names.index(name))
                splits.append(split)
    return Listing(root, layout, tuple(names), paths, np.array(labels, dtype=np.int64), splits, skipped)


def _from_csv(root: Path) -> Listing:
    table = root / LABELS_CSV
    with open(table, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["file", "label"]:
        raise ConfigError(f"{table}: the first row must name the columns: file,label (and split, optionally)")
    header = [c.strip().lower() for c in rows[0]]
    split_at = header.index("split") if "split" in header else None
    entries = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < 2 or (split_at is not None and len(row) <= split_at):
            raise ConfigError(f"{table} line {number}: expected file,label{',split' if split_at else ''}")
        split = row[split_at].strip().lower() or None if split_at is not None else None
        if split is not None and split not in SPLITS:
            raise ConfigError(f"{table} line {number}: split {split!r} is not one of {', '.join(SPLITS)}")
        path = (root / row[0]).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            raise ConfigError(f"{table} line {number}: {row[0]!r} is no file inside {root}")
        entries.append((path, row[1], split))
    if split_at is not None and any(split is None for _, _, split in entries):
        raise ConfigError(f"{table}: a split column gives every file's split (train, validation, test)")
    given: dict[str | None, dict[str, list[Path]]] = {}
    for path, label, split in entries:
        given.setdefault(split, {}).setdefault(label, []).append(path)
    return _listing(root, LABELS_CSV, given)


def _check_classes(listing: Listing) -> None:
    for name in listing.class_names:
        problem = class_name_problem(name)
        if problem:
            raise ConfigError(f"class {name!r} in {listing.root}: {problem}; rename its folder or label")
    folded = Counter(unicodedata.normalize("NFC", n) for n in listing.class_names)
    twins = [n for n, count in folded.items() if count > 1]
    if twins:
        raise ConfigError(f"classes {twins} are spelled twice (the same letters, composed differently)")
    if not MIN_CLASSES <= len(listing.class_names) <= MAX_CLASSES:
        raise ConfigError(f"--data {listing.root} has {len(listing.class_names)} class(es); "
                          f"a model tells {MIN_CLASSES} to {MAX_CLASSES} apart")
    trained = np.bincount(listing.labels[[s in (None, "train") for s in listing.splits]],
                          minlength=len(listing.class_names))
    tiny = [f"{name!r} ({count})" for name, count in zip(listing.class_names, trained, strict=True)
            if count < MIN_CLASS_IMAGES]
    if tiny:
        raise ConfigError(f"too few images to learn from in class(es) {', '.join(tiny)}: each needs "
                          f"at least {MIN_CLASS_IMAGES} for training; add images or remove the folder")
