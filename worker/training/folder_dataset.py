"""Your own labelled images as a training set: split, reported, preprocessed into the cache.

The folder's layout (a folder per class, split folders or a ``labels.csv``) is read by
``folder_listing.py``. Without given splits, the split is stratified and deterministic
(``--seed``): each class's files, sorted by path, are shuffled by the seed and cut into test,
validation and training shares. Images are preprocessed exactly as the daemon will
(``preprocess.load_many`` with the chosen profile) into float32 files in the user cache,
memory-mapped while training, so a folder larger than RAM trains; the same folder, profile and
split are read from the cache the next time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.defaults import TEST_SHARE, VALIDATION_SHARE
from worker.errors import ConfigError, InputError
from worker.files import write_atomic
from worker.preprocess import SIZE, Profile, load_many
from worker.training.datasets import DATASETS, DatasetSpec, cache_dir
from worker.training.folder_listing import SPLITS, Listing, list_folder

log = logging.getLogger(__name__)

# Files preprocessed per call of ``load_many``: its runs bound the pixels decoded at once.
CHUNK = 512
# A class this many times larger than the smallest is reported as imbalanced.
IMBALANCE = 10
# How a model of one's own may be named: it becomes models/<name>.keras and a folder of versions.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
INPUT_BYTES = SIZE * SIZE * 4


@dataclass(frozen=True)
class Prepared:
    """The splits preprocessed, memory-mapped from the cache, and what the card records."""

    spec: DatasetSpec
    arrays: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (inputs, labels)
    summary: dict


def model_name(name: str | None, folder: Path) -> str:
    """``--name``, or the folder's name; refused if it is no file name or a built-in dataset's."""
    name = name or Path(folder).resolve().name
    if not NAME.fullmatch(name):
        raise ConfigError(f"--name {name!r}: a model name is letters, digits, '.', '_' and '-' "
                          "(it names models/<name>.keras); pass --name")
    if name in DATASETS:
        raise ConfigError(f"--name {name}: that is the built-in dataset's name; choose another")
    return name


def spec_for(name: str, class_names: tuple[str, ...], profile: Profile, root: Path) -> DatasetSpec:
    """A folder dataset's spec: its classes and profile; nothing to fetch or verify."""
    return DatasetSpec(name=name, class_names=class_names, sha256={}, keras_npz=None, keras_dir=None,
                       install_hint=f"the folder {root}", profile=profile)


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
