"""Your own labelled images as a training set: a folder per class, or a ``labels.csv``.

``worker train --data DIR`` takes, in this order of recognition:

- the four IDX files of MNIST or Fashion-MNIST (``datasets.py``: a source of a built-in dataset);
- ``DIR/labels.csv``: rows ``file,label`` (a header row naming them, an optional ``split``
  column of ``train``, ``validation`` or ``test``), files relative to ``DIR``;
- ``DIR/train/<class>/`` and ``DIR/test/<class>/`` (and ``DIR/validation/<class>/``): the
  splits as given;
- ``DIR/<class>/``: one folder per class, split here.

A class folder may hold subfolders: everything under it is that class. A class name holding a
``/`` is spelled ``%2F`` in its folder's name (any ``%XX`` is decoded: ``reviewed.folder_label``,
the names ``export-reviewed`` writes). Files whose suffix is no image format the daemon reads,
and hidden files, are skipped and counted.

Without given splits, the split is stratified and deterministic (``--seed``): each class's
files, sorted by path, are shuffled by the seed and cut into test, validation and training
shares. Images are preprocessed exactly as the daemon will (``preprocess.load_many`` with the
chosen profile) into float32 files in the user cache, memory-mapped while training, so a
folder larger than RAM trains; the same folder, profile and split are read from the cache the
next time.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import shutil
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worker.defaults import TEST_SHARE, VALIDATION_SHARE
from worker.errors import ConfigError, InputError
from worker.files import write_atomic
from worker.preprocess import SIZE, Profile, load_many
from worker.preprocess.headers import IMAGE_SUFFIXES
from worker.training.datasets import DATASETS, DatasetSpec, cache_dir, read_idx_folder
from worker.training.reviewed import folder_label

log = logging.getLogger(__name__)

LABELS_CSV = "labels.csv"
SPLITS = ("train", "validation", "test")
# Fewer images than this in a class cannot be split into training, validation and test and
# still teach the model anything about the class: such a class is refused, by name.
MIN_CLASS_IMAGES = 5
MIN_CLASSES = 2
# Each class is a column of predictions.csv and an output of the model: past this many, a row
# is mostly probabilities and a 28x28 input has too little to tell them apart.
MAX_CLASSES = 1000
# Files preprocessed per call of ``load_many``: its runs bound the pixels decoded at once.
CHUNK = 512
# A class this many times larger than the smallest is reported as imbalanced.
IMBALANCE = 10
# How a model of one's own may be named: it becomes models/<name>.keras and a folder of versions.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
INPUT_BYTES = SIZE * SIZE * 4


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


@dataclass(frozen=True)
class Prepared:
    """The splits preprocessed, memory-mapped from the cache, and what the card records."""

    spec: DatasetSpec
    arrays: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (inputs, labels)
    summary: dict


def is_folder_dataset(path: Path | None) -> bool:
    """A folder of one's own labelled images, rather than a built-in dataset's files."""
    if path is None or not Path(path).is_dir():
        return False
    path = Path(path)
    if (path / LABELS_CSV).is_file():
        return True
    return read_idx_folder(path) is None and any(p.is_dir() and not p.name.startswith(".")
                                                 for p in path.iterdir())


def model_name(name: str | None, folder: Path) -> str:
    """``--name``, or the folder's name; refused if it is no file name or a built-in dataset's."""
    name = name or Path(folder).resolve().name
    if not NAME.fullmatch(name):
        raise ConfigError(f"--name {name!r}: a model name is letters, digits, '.', '_' and '-' "
                          "(it names models/<name>.keras); pass --name")
    if name in DATASETS:
        raise ConfigError(f"--name {name}: that is the built-in dataset's name; choose another")
    return name


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


def spec_for(name: str, class_names: tuple[str, ...], profile: Profile, root: Path) -> DatasetSpec:
    """A folder dataset's spec: its classes and profile; nothing to fetch or verify."""
    return DatasetSpec(name=name, class_names=class_names, sha256={}, keras_npz=None, keras_dir=None,
                       install_hint=f"the folder {root}", profile=profile)


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


def assign_splits(listing: Listing, *, test_share: float, validation_share: float, seed: int) -> np.ndarray:
    """Each file's split, as an array of ``SPLITS`` names: as given, else stratified by class
    (every class keeps at least one image in each split it is cut into, and most in training)."""
    for what, share in (("--test-share", test_share), ("--validation-share", validation_share)):
        if not 0 <= share < 1:
            raise ConfigError(f"{what} is a share of each class's images, from 0 to below 1")
    if test_share + validation_share >= 1:
        raise ConfigError("--test-share and --validation-share leave nothing to train on")
    given = np.array([s or "" for s in listing.splits], dtype=object)
    has_test = np.any(given == "test")
    has_validation = np.any(given == "validation")
    rng = np.random.default_rng(seed)
    for c in range(len(listing.class_names)):
        pool = np.flatnonzero((listing.labels == c) & np.isin(given, ["", "train"]))
        pool = pool[rng.permutation(len(pool))]
        cut_test = 0 if has_test else _share(len(pool), test_share)
        cut_val = 0 if has_validation else _share(len(pool), validation_share)
        given[pool[:cut_test]] = "test"
        given[pool[cut_test : cut_test + cut_val]] = "validation"
        given[pool[cut_test + cut_val :]] = "train"
    for split in ("validation", "test"):
        if not np.any(given == split):
            raise ConfigError(f"--data {listing.root}: no image left for the {split} split; "
                              f"give a {split} folder or a {split} share above 0")
    return given.astype(str)


def _share(count: int, share: float) -> int:
    """Images of a class cut off for a split: at least one when the share is above 0, and never
    so many that the other two splits could not keep one each."""
    if share <= 0:
        return 0
    return int(min(max(1, round(count * share)), max(0, count - 2)))


def balance_report(listing: Listing, split_of: np.ndarray) -> list[str]:
    """Lines for the log before training: the splits' sizes, each class's images (all of
    them for a few classes, the smallest and largest for many), and any imbalance."""
    names = listing.class_names
    sizes = {s: int(np.sum(split_of == s)) for s in SPLITS}
    lines = [f"{len(names)} classes, {len(listing.paths):,} images ({listing.layout}): "
             + ", ".join(f"{s} {n:,}" for s, n in sizes.items())]
    if listing.skipped:
        lines.append(f"skipped {len(listing.skipped)} file(s) that are no image, e.g. {listing.skipped[0]}")
    counts = np.bincount(listing.labels[split_of == "train"], minlength=len(names))
    order = np.argsort(counts, kind="stable")
    shown = order if len(names) <= 20 else np.concatenate([order[:5], order[-5:]])
    lines += [f"  {names[i]!r}: {counts[i]:,} for training" for i in shown]
    if counts.max() > IMBALANCE * counts.min():
        lines.append(f"imbalanced: {names[order[-1]]!r} has {counts.max() // counts.min()}x the training "
                     f"images of {names[order[0]]!r}; the model will favour the larger classes")
    return lines


def prepare(root: Path, *, name: str, profile: Profile, seed: int, test_share: float = TEST_SHARE,
            validation_share: float = VALIDATION_SHARE) -> Prepared:
    """List, check, split and report; preprocess into the cache (or reuse it); memory-map it."""
    listing = list_folder(root)
    split_of = assign_splits(listing, test_share=test_share, validation_share=validation_share, seed=seed)
    for line in balance_report(listing, split_of):
        log.info("%s", line)
    key = _cache_key(listing, split_of, profile)
    folder = cache_dir() / "folders" / f"{name}-{key}"
    if not (folder / "done.json").is_file():
        _preprocess(listing, split_of, profile, folder)
        _forget_older(folder)
    else:
        log.info("preprocessed images from the cache %s", folder)
    done = json.loads((folder / "done.json").read_text())
    arrays = {split: _mapped(folder, split, done["counts"][split]) for split in SPLITS}
    summary = {
        "kind": "folder", "layout": listing.layout, "root": str(Path(root).resolve()),
        "images": {s: int(np.sum(split_of == s)) for s in SPLITS}, "unreadable": done["unreadable"],
        "skipped": len(listing.skipped), "test_share": None if "test" in listing.splits else test_share,
        "validation_share": None if "validation" in listing.splits else validation_share,
        "cache": str(folder),
    }
    return Prepared(spec_for(name, listing.class_names, profile, root), arrays, summary)


def _cache_key(listing: Listing, split_of: np.ndarray, profile: Profile) -> str:
    """Names the preprocessed arrays by everything they come from: each file (path, size, time
    changed), its class and split, the class names and the profile."""
    digest = hashlib.sha256(json.dumps([profile.to_dict(), listing.class_names]).encode())
    for path, label, split in zip(listing.paths, listing.labels, split_of, strict=True):
        info = path.stat()
        digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\0{label}\0{split}\n".encode(
            "utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def _preprocess(listing: Listing, split_of: np.ndarray, profile: Profile, folder: Path) -> None:
    """Each split's images through ``load_many``, appended to ``<split>.f32`` as they come: in
    memory only a chunk at a time. A document's pages each become an image of its class; a
    file that cannot be read is left out and counted."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    total, done_so_far, unreadable, counts = len(listing.paths), 0, [], {}
    for split in SPLITS:
        chosen = np.flatnonzero(split_of == split)
        labels = []
        with open(folder / f"{split}.f32", "wb") as out:
            for start in range(0, len(chosen), CHUNK):
                part = chosen[start : start + CHUNK]
                paths = [listing.paths[i] for i in part]
                names = [str(p.relative_to(listing.root)) for p in paths]
                for i, result in zip(part, load_many(paths, profile, names=names), strict=True):
                    if isinstance(result, InputError):
                        unreadable.append(f"{listing.paths[i]}: {result.message}")
                        continue
                    for pixels in result.inputs:
                        out.write(np.ascontiguousarray(pixels, dtype=np.float32).tobytes())
                        labels.append(listing.labels[i])
                done_so_far = _progress(done_so_far, len(part), total, profile)
        np.save(folder / f"{split}.labels.npy", np.array(labels, dtype=np.int64))
        counts[split] = len(labels)
    for line in unreadable[:5]:
        log.warning("left out, unreadable: %s", line)
    if len(unreadable) > 5:
        log.warning("left out %d unreadable files in all", len(unreadable))
    write_atomic(folder / "done.json", json.dumps({"counts": counts, "unreadable": len(unreadable)}).encode())


def _progress(done: int, more: int, total: int, profile: Profile) -> int:
    """A line each tenth of the way: preprocessing a big folder takes minutes."""
    if (done + more) * 10 // total > done * 10 // total:
        log.info("preprocessing with %s: %d of %d images", profile.name, done + more, total)
    return done + more


def _forget_older(kept: Path) -> None:
    """The cache keeps one set of arrays per model name: the latest."""
    name = kept.name.rsplit("-", 1)[0]
    for other in kept.parent.glob(f"{name}-*"):
        if other != kept and other.name.rsplit("-", 1)[0] == name:
            shutil.rmtree(other, ignore_errors=True)


def _mapped(folder: Path, split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.load(folder / f"{split}.labels.npy")
    if count == 0:
        return np.zeros((0, SIZE, SIZE, 1), dtype=np.float32), labels
    inputs = np.memmap(folder / f"{split}.f32", dtype=np.float32, mode="r", shape=(count, SIZE, SIZE, 1))
    return inputs, labels
