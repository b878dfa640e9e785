"""Model files for tests of publishing and serving: copies of the shipped model, its card
changed (the repository with it published is conftest's ``served``); pages as the model gets them."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from worker.preprocess import DIGITS, Profile

SUFFIXES = (".keras", ".tflite", ".json")


def copy_set(source: Path, target: Path, **card_changes) -> Path:
    """The three files of ``source`` as plain files at ``target``, the card changed as told."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in SUFFIXES:
        shutil.copyfile(source.with_suffix(suffix), target.with_suffix(suffix))
    card = json.loads(target.with_suffix(".json").read_text())
    card.update(card_changes)
    target.with_suffix(".json").write_text(json.dumps(card))
    return target


def model_inputs(pages, profile: Profile = DIGITS) -> np.ndarray:
    """What reaches the model from grey ``pages``: a page without ink is an error record, never
    a row (``bench/hard_sets.py``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from hard_sets import taken

    return taken(pages, profile)[0]
