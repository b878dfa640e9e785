"""From review to model: the inputs people reviewed, as a folder per label, and such folders
read back as extra training images.

``export_reviewed`` writes each reviewed row's input (as archived in ``processed/``; a
document's reviewed page as a PNG) to ``DIR/<label>/<claim id>-<name>``, under the label the
person gave. ``read_extra`` reads a folder-per-label tree (an export, or a user's own sorted
scans) through the same preprocessing as the daemon, for ``worker train --extra``.

A label is one folder whatever it holds: ``label_folder`` escapes what a folder name cannot be
(Fashion-MNIST's ``T-shirt/top`` is ``T-shirt%2Ftop``), ``folder_label`` reads it back.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np

from worker.errors import ConfigError, InputError
from worker.outbox.records import PROCESSED_DIR, claim_of
from worker.outbox.reviews import REVIEWS_NAME, read_decisions
from worker.preprocess import Profile, load_input
from worker.report.thumbnails import archived_input, page_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Exported:
    images: int
    labels: int
    missing: int  # reviewed rows whose input was not kept (deleted, or --on-success delete)
    bad_lines: int = 0  # lines of reviews.jsonl that were no decision, skipped


# What a folder name cannot hold (a separator, control characters, NUL) and '%', the escape.
UNSAFE_IN_FOLDER = re.compile(r"[%/\\\x00-\x1f\x7f]")


def label_folder(label: str) -> str:
    """The folder name of a class: the label with '%', separators and control characters
    escaped as ``%XX``, and a leading '.' too (no hidden folder, no '..')."""
    name = UNSAFE_IN_FOLDER.sub(lambda m: f"%{ord(m.group()):02X}", label)
    return f"%2E{name[1:]}" if name.startswith(".") else name


def folder_label(name: str) -> str:
    """The class a folder names: ``label_folder`` undone (a plain name is itself)."""
    return unquote(name)


def export_reviewed(outbox: Path, folder: Path) -> Exported:
    outbox, folder = Path(outbox), Path(folder)
    if not (outbox / REVIEWS_NAME).is_file():
        raise ConfigError(f"{outbox / REVIEWS_NAME} does not exist: nothing has been reviewed")
    images = missing = 0
    labels = set()
    decisions = read_decisions(outbox)
    for decision in decisions.by_row.values():
        if decision.file is None:
            missing += 1
            continue
        row = {"id": decision.id, "file": decision.file}
        if decision.page is not None:
            row["page"] = decision.page
        source = archived_input(outbox / PROCESSED_DIR, row)
        if source is None:
            missing += 1
            continue
        target_folder = folder / label_folder(decision.label)
        target_folder.mkdir(parents=True, exist_ok=True)
        name = f"{claim_of(decision.id)}-{Path(decision.file.split('#')[0]).name}"
        if decision.page is not None:
            page = target_folder / f"{Path(name).stem}-page{decision.page}.png"
            cv2.imwrite(str(page), page_of(source, decision.page))
        else:
            shutil.copyfile(source, target_folder / name)
        images += 1
        labels.add(decision.label)
    return Exported(images, len(labels), missing, decisions.bad)


def read_extra(folder: Path, class_names: list[str], profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """Images of ``folder/<label>/`` (a label's folder as ``label_folder`` names it),
    preprocessed, and their class indices. A subfolder that names no class, and a file that
    is no image, are skipped with a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--extra {folder} is not a folder")
    inputs, labels = [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = folder_label(sub.name)
        if label not in class_names:
            log.warning("--extra: %s names no class of this dataset; skipped", sub)
            continue
        for path in sorted(p for p in sub.rglob("*") if p.is_file()):
            try:
                loaded = load_input(path, profile)
            except InputError as exc:
                log.warning("--extra: %s skipped (%s)", path, exc.message)
                continue
            inputs += loaded.inputs
            labels += [class_names.index(label)] * len(loaded.inputs)
    if not inputs:
        raise ConfigError(f"--extra {folder} holds no image in a folder named for a class")
    return np.stack(inputs).astype(np.float32), np.array(labels, dtype=np.int64)
