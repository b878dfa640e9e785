"""Model versions on disk, and publishing one atomically.

A model of name ``mnist`` is kept as versioned folders with a pointer to the one that serves,
as TF Serving and Triton lay models out::

    models/mnist/<version>/mnist.keras, mnist.tflite, mnist.json   one complete set each
    models/mnist/current -> <version>                               the pointer (a symlink)
    models/mnist.keras  -> mnist/current/mnist.keras                the paths users name,
    models/mnist.tflite -> mnist/current/mnist.tflite               fixed once: they always
    models/mnist.json   -> mnist/current/mnist.json                 resolve through current

A version folder is written whole under a temporary name and renamed into place; publishing
is one rename of a new ``current`` symlink over the old, so a reader sees the old set or the
new set, never a mix. The ``Classifier`` resolves the path once and reads all three files of
one folder. Old versions stay beside the new one: ``worker publish models/mnist/<old>`` rolls
back. A model kept as three plain files (the layout before versions) still loads; publishing
over it needs ``force``.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path

from worker.errors import ConfigError, ModelError, NotPublished
from worker.files import plain_mode, sync_file, sync_folder
from worker.model import gate

log = logging.getLogger(__name__)

CURRENT = "current"
SUFFIXES = (".keras", ".tflite", ".json")


def versions_folder(model_path: Path) -> Path:
    """``models/mnist.keras`` keeps its versions in ``models/mnist/``."""
    model_path = Path(model_path)
    return model_path.parent / model_path.stem


def staging_path(model_path: Path) -> Path:
    """Where a new version is written before it is complete: a hidden folder beside the
    versions, so that the rename that finishes it stays on one file system."""
    home = versions_folder(model_path)
    home.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=home, prefix=".staging-"))
    folder.chmod(plain_mode(0o777))  # mkdtemp's 0700 would hide it from a service's own user
    return folder / Path(model_path).name


def commit(staged: Path, version: str) -> Path:
    """Make a staged set a version: synced, then its folder renamed to ``<version>``. Returns
    the model path inside it. Publishing the same version twice keeps the first copy."""
    staged = Path(staged)
    for suffix in SUFFIXES:
        if staged.with_suffix(suffix).is_file():
            sync_file(staged.with_suffix(suffix))
    sync_folder(staged.parent)
    final = staged.parent.parent / version
    try:
        os.rename(staged.parent, final)  # fails if another process made the version first
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not final.is_dir():
            raise
        shutil.rmtree(staged.parent)
        log.info("version %s is already in %s; kept that copy", version, final.parent)
    else:
        sync_folder(final.parent)
    return final / staged.name


def add_version(source: Path, model_path: Path, version: str) -> Path:
    """Copy a model set kept elsewhere (three files side by side) in as a new version."""
    staged = staging_path(model_path)
    for suffix in SUFFIXES:
        part = Path(source).with_suffix(suffix)
        if part.is_file():
            shutil.copyfile(part, staged.with_suffix(suffix))
    return commit(staged, version)


def publish(version_model: Path, model_path: Path, *, force: bool = False) -> None:
    """Point ``current`` at the version holding ``version_model`` (a checked model path in
    ``models/<name>/<version>/``), and make the user-facing paths resolve through it."""
    version_model, model_path = Path(version_model), Path(model_path)
    home = versions_folder(model_path)
    if version_model.parent.parent.resolve() != home.resolve():
        raise ConfigError(f"{version_model} is not a version of {model_path} (those live in {home}/)")
    _check_links(model_path, force)
    replace_symlink(home / CURRENT, version_model.parent.name)
    for suffix in SUFFIXES:
        link = model_path.with_suffix(suffix)
        target = f"{home.name}/{CURRENT}/{model_path.stem}{suffix}"
        if not (link.is_symlink() and os.readlink(link) == target):
            replace_symlink(link, target)
    log.info("published %s version %s", model_path.stem, version_model.parent.name)


def current_version(model_path: Path) -> str | None:
    """The version ``current`` points at, or None for a model kept as plain files."""
    pointer = versions_folder(model_path) / CURRENT
    return os.readlink(pointer) if pointer.is_symlink() else None


def replace_symlink(link: Path, target: str) -> None:
    """Make ``link`` point at ``target`` in one step: a new symlink renamed over the old."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    sync_folder(link.parent)


def _check_links(model_path: Path, force: bool) -> None:
    """Plain files where the links go are a model from before versions: with ``force`` they
    are kept as a version of their own before the links replace them, else refused."""
    plain = [p for p in (model_path.with_suffix(s) for s in SUFFIXES) if p.exists() and not p.is_symlink()]
    if plain and not force:
        raise ModelError(
            f"{plain[0]} is a plain file, not a published version; pass --force to replace "
            f"{model_path.stem}'s plain files by links to its versions in {versions_folder(model_path)}/"
        )
    if plain and model_path.is_file():
        from worker.model.artifact import model_version, read_card

        try:
            version = model_version(model_path, read_card(model_path))
        except ModelError as exc:
            log.warning("the plain files of %s are replaced, not kept: %s", model_path, exc)
            return
        kept = add_version(model_path, model_path, version)
        log.warning("the plain files of %s are kept as version %s", model_path, kept.parent.name)


def publish_checked(source: Path, model_path: Path, *, force: bool = False,
                    tolerance: float = gate.TOLERANCE_POINTS):
    """``worker publish``: load and check ``source`` (a version folder of ``model_path``, a
    model file in one, or a model set kept elsewhere, copied in as a new version), pass it
    through the gate against what serves (``force`` overrides it), then publish it. Returns
    the loaded ``Classifier``; nothing changes if a check fails."""
    from worker.model.classifier import Classifier

    source, model_path = Path(source), Path(model_path)
    if source.is_dir():
        source = _model_in(source, model_path)
    classifier = Classifier(source)
    verdict = gate.judge(classifier.card, serving_card(model_path), tolerance)
    if not verdict.passed and not force:
        raise NotPublished(f"not published: {verdict.reason}; 'worker publish --force {source.parent}' "
                           "serves it anyway")
    if source.parent.parent.resolve() != versions_folder(model_path).resolve():
        source = add_version(source, model_path, classifier.version)
    publish(source, model_path, force=force)
    return classifier


def _model_in(folder: Path, model_path: Path) -> Path:
    """The model file of a version folder, which must be one of ``model_path``'s: a version of
    another model (fashion-mnist's, published with the default --model) says which --model."""
    if (folder / model_path.name).exists():
        return folder / model_path.name
    found = sorted(folder.glob("*.keras"))
    if len(found) == 1:
        right = model_path.with_name(found[0].name)
        raise ConfigError(f"{folder} is a version of {found[0].stem}, not of {model_path.stem}: "
                          f"pass --model {right}")
    return folder / model_path.name  # loading it says what is missing


def serving_card(model_path: Path) -> dict | None:
    """The card of the version that serves at ``model_path`` (a shipped model's once it is set
    up, so that a fresh repository's first training is judged against it), or None."""
    from worker.model.artifact import read_card
    from worker.model.repository import ensure_serving

    ensure_serving(model_path, copy=True)

    try:
        return read_card(model_path)
    except ModelError:
        return None
