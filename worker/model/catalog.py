"""What a model repository holds: each model, each of its versions, and which one serves.

Read from the folders and the cards alone (``publish.py`` lays them out), so ``worker models``
needs neither TensorFlow nor a running daemon. A folder or card that is not a model's is left
out, never fatal: a repository may hold other things.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from worker.model.publish import CURRENT, SUFFIXES
from worker.model.repository import SHIPPED


@dataclass(frozen=True)
class Version:
    model: str
    version: str
    serving: bool
    classes: list[str]
    arch: str | None
    profile: str | None
    test_accuracy: float | None
    hard_sets: dict[str, float]  # set -> accuracy, with the profile the model serves with
    created_at: str | None
    size_bytes: int
    path: str

    def to_json(self) -> dict:
        return asdict(self)


def versions(models_dir: Path) -> list[Version]:
    """Every version of every model under ``models_dir``, by model, newest first."""
    found = []
    for home in sorted(p for p in Path(models_dir).iterdir() if p.is_dir() and not p.name.startswith(".")):
        serving = _serving(home)
        kept = [_version(folder, home.name, folder.name == serving)
                for folder in home.iterdir() if folder.is_dir() and not folder.is_symlink()]
        found += sorted((v for v in kept if v is not None), key=lambda v: v.created_at or "", reverse=True)
    return found


def _serving(home: Path) -> str | None:
    """The version ``current`` names; in a fresh checkout, where nothing is published yet, the
    shipped one, which the first command that opens the model publishes."""
    for pointer in (home / CURRENT, home / SHIPPED):
        if pointer.is_symlink():
            return pointer.readlink().name
    return None


def _version(folder: Path, model: str, serving: bool) -> Version | None:
    card_file = folder / f"{model}.json"
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(card, dict):
        return None
    profile = (card.get("preprocessing") or {}).get("name")
    hard = (card.get("hard_sets") or {}).get(profile) or {}
    return Version(
        model=model, version=folder.name, serving=serving, classes=list(card.get("class_names") or []),
        arch=card.get("arch"), profile=profile, test_accuracy=card.get("test_accuracy"),
        hard_sets={k: v for k, v in hard.items() if isinstance(v, int | float)},
        created_at=card.get("created_at"), size_bytes=_size(folder, model), path=str(folder),
    )


def _size(folder: Path, model: str) -> int:
    return sum(part.stat().st_size for part in (folder / f"{model}{s}" for s in SUFFIXES) if part.is_file())
