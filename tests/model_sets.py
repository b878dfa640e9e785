"""Model files for tests of publishing and serving: copies of the shipped model, its card
changed (the repository with it published is conftest's ``served``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
