"""From review to model: the inputs people reviewed, as a folder per label, and such folders
read back as extra training images.

``export_reviewed`` writes each reviewed row's input (as archived in ``processed/``; a
document's reviewed page as a PNG) to ``DIR/<label>/<claim id>-<name>``, under the label the
person gave. ``read_extra`` reads a folder-per-label tree (an export, or a user's own sorted
scans) through the same preprocessing as the daemon, for ``worker train --extra``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from worker.errors import ConfigError, InputError
from worker.outbox import PROCESSED_DIR, claim_of
from worker.preprocess import Profile, load_input
from worker.report.thumbnails import archived_input, page_of
from worker.reviews import REVIEWS_NAME, read_decisions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Exported:
    images: int
    labels: int
    missing: int  # reviewed rows whose input was not kept (deleted, or --on-success delete)


def export_reviewed(outbox: Path, folder: Path) -> Exported:
    outbox, folder = Path(outbox), Path(folder)
    if not (outbox / REVIEWS_NAME).is_file():
        raise ConfigError(f"{outbox / REVIEWS_NAME} does not exist: nothing has been reviewed")
    images = missing = 0
    labels = set()
    for decision in read_decisions(outbox).values():
        if not isinstance(decision.get("file"), str):
            missing += 1
            continue
        row = {"id": decision["id"], "file": decision["file"]}
        if "#" in decision["id"]:
            row["page"] = int(decision["id"].rsplit("#", 1)[1])
        source = archived_input(outbox / PROCESSED_DIR, row)
        if source is None:
            missing += 1
            continue
        target_folder = folder / decision["label"]
        target_folder.mkdir(parents=True, exist_ok=True)
        name = f"{claim_of(decision['id'])}-{Path(decision['file'].split('#')[0]).name}"
        if "page" in row:
            page = target_folder / f"{Path(name).stem}-page{row['page']}.png"
            cv2.imwrite(str(page), page_of(source, row["page"]))
        else:
            shutil.copyfile(source, target_folder / name)
        images += 1
        labels.add(decision["label"])
    return Exported(images, len(labels), missing)


def read_extra(folder: Path, class_names: list[str], profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """Images of ``folder/<label>/``, preprocessed, and their class indices. A subfolder that
    names no class, and a file that is no image, are skipped with a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--extra {folder} is not a folder")
    inputs, labels = [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name not in class_names:
            log.warning("--extra: %s names no class of this dataset; skipped", sub)
            continue
        for path in sorted(p for p in sub.rglob("*") if p.is_file()):
            try:
                loaded = load_input(path, profile)
            except InputError as exc:
                log.warning("--extra: %s skipped (%s)", path, exc.message)
                continue
            inputs += loaded.inputs
            labels += [class_names.index(sub.name)] * len(loaded.inputs)
    if not inputs:
        raise ConfigError(f"--extra {folder} holds no image in a folder named for a class")
    return np.stack(inputs).astype(np.float32), np.array(labels, dtype=np.int64)
