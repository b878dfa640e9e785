"""Where models live: the repository a command reads and writes, and the shipped seeds.

A checkout ships one version of each default model (``models/<name>/<version>/``, tracked in
git) and, beside it, the pointer ``models/<name>/shipped`` naming that version. What *serves* is
``models/<name>/current``, which is the operator's: it is not in git, so training and publishing
in a checkout change no tracked file (``.gitignore`` keeps the new versions and pointers out of
``git status``).

A repository elsewhere (``--models DIR``, ``WORKER_MODELS``; ``/var/lib/worker/models`` for the
service, which ``scripts/install-service`` fills) starts empty: the first ``train`` or
``publish`` there copies the shipped version in and publishes it, so that the gate has what
serves to compare with. The checkout's own ``models/`` gets its ``current`` on a fresh clone
from the first command that opens a model. A model that is already published is never
touched, so an operator's published or rolled-back version stays what serves.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from worker import defaults
from worker.errors import ConfigError
from worker.model.publish import CURRENT, add_version, publish, versions_folder

log = logging.getLogger(__name__)

SHIPPED = "shipped"  # models/<name>/shipped -> <version>: the version the checkout ships


def shipped_version(name: str, seeds: Path = defaults.MODELS_DIR) -> Path | None:
    """The shipped version folder of model ``name``, or None if none ships by that name."""
    pointer = Path(seeds) / name / SHIPPED
    if not pointer.is_symlink():
        return None
    folder = pointer.parent / os.readlink(pointer)
    return folder if (folder / f"{name}.keras").is_file() else None


def ensure_serving(model_path: Path, seeds: Path = defaults.MODELS_DIR, *, copy: bool = False) -> None:
    """Make a shipped model's path resolve before it is opened: in the seeds' own folder by
    pointing ``current`` at the shipped version; elsewhere, with ``copy`` (a command that
    writes to the repository by intent: train, publish), by copying that version into a folder
    that exists and publishing it. Paths that resolve already, and models that do not ship, are
    left alone (loading them says what is missing): a daemon given a mistyped path, or a
    repository on a share not mounted yet, is told so, never handed the shipped model."""
    model_path = Path(model_path)
    published = (versions_folder(model_path) / CURRENT).is_symlink()
    if model_path.exists() or published or model_path.suffix != ".keras":
        return  # serving, or published and broken (loading says so): the operator's choice
    seed = shipped_version(model_path.stem, seeds)
    if seed is None:
        return
    at_home = versions_folder(model_path).resolve() == seed.parent.resolve()
    if not at_home and not (copy and model_path.parent.is_dir()):
        return
    try:
        version = seed / model_path.name
        if not at_home:
            version = add_version(version, model_path, seed.name)
        publish(version, model_path)
        log.info("model %s: first use of %s, the shipped version %s serves", model_path.stem,
                 model_path.parent, seed.name)
    except OSError as exc:
        raise ConfigError(f"model {model_path} is not published yet and cannot be set up here "
                          f"({exc.strerror}: {exc.filename}); run a command as the owner of "
                          f"{model_path.parent} once, or pass --models/--model elsewhere") from exc


def ensure_seeded(models_dir: Path, seeds: Path = defaults.MODELS_DIR) -> None:
    """Every shipped model of ``seeds`` serving in ``models_dir``: a repository set up whole
    at once rather than a model at its first use. (Classify hosts are not seeded: they serve
    the versions their ``--models`` holds, and refuse the others.)"""
    seeds = Path(seeds)
    if not seeds.is_dir():
        return
    for home in sorted(seeds.iterdir()):
        if (home / SHIPPED).is_symlink():
            ensure_serving(Path(models_dir) / f"{home.name}.keras", seeds, copy=True)
