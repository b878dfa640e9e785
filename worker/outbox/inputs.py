"""Where an input goes once its batch is recorded: a classified one into ``processed/``
(``Archive``; or deleted, --on-success), a refused one into ``failed/`` with its
``.error.json`` beside it (``Quarantine``).

Both folders are the outbox's own, held open, and never a symlink. Nothing is ever
overwritten: a second ``x.png`` becomes ``x.<id>.png`` (see ``archive.place``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

from worker.archive import Folder, is_disk_trouble, move_unique, place, relative_destinations
from worker.errors import ConfigError
from worker.files import unlink_quietly
from worker.link_or_copy import TooBig
from worker.outbox.records import ERROR_SUFFIX

log = logging.getLogger(__name__)


def _own_folder(path: Path) -> Folder:
    """One of the outbox's folders, opened to hold: it must be a real folder, never a symlink
    to one, since everything archived goes under it."""
    try:
        return Folder(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP, errno.EEXIST):
            raise
        raise ConfigError(f"{path} is not a folder of the outbox's own (a symlink or a file): "
                          "move it away, the daemon makes the folder") from exc


def _too_big_folder(path: Path, claim_id: str) -> Folder:
    """The folder for inputs too big for the outbox (in the inbox, a writer's place): what
    a writer put there first (a symlink, a file) is renamed aside (named for the claim that
    found it), never followed, and a folder made in its place."""
    try:
        return Folder(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP, errno.EEXIST):
            raise
    aside = path.with_name(f"{path.name}.unrecognised-{claim_id}")
    try:
        os.rename(path, aside)  # renames the symlink itself
    except FileNotFoundError:  # gone meanwhile: made below
        return Folder(path)
    log.error("%s was not a folder of ours: set aside as %s", path, aside)
    return Folder(path)


class Archive:
    """``processed/``, the classified inputs kept (``keep``), or none kept."""

    def __init__(self, folder: Path, *, keep: bool) -> None:
        self.keep = keep
        self._folder = _own_folder(folder)

    def close(self) -> None:
        self._folder.close()

    def archive(self, src: Path, rel: str, claim_id: str) -> None:
        """A classified input leaves ``.work/``: into ``processed/``, or deleted (--on-success)."""
        if self.keep:
            move_unique(src, self._folder, rel, claim_id)
        else:
            os.unlink(src)


class Quarantine:
    """``failed/``, the refused inputs, each with its error record."""

    def __init__(self, folder: Path) -> None:
        self.failed = folder
        self._folder = _own_folder(folder)

    def close(self) -> None:
        self._folder.close()

    def quarantine(self, src: Path, rel: str, claim_id: str, record: dict, *,
                   too_big: Path | None = None) -> Path:
        """A refused input goes to ``failed/`` with its ``.error.json`` beside it. One larger
        than the outbox's whole file system (a 2 GB file, a small outbox disk) goes to the
        ``too_big`` folder on its own file system instead, its error record saying where."""
        reserve = len(os.fsencode(ERROR_SUFFIX))
        try:
            beside = [self._folder.place(src, rel, claim_id, reserve=reserve)]
        except TooBig as exc:
            if too_big is None:
                raise
            with _too_big_folder(too_big, claim_id) as kept_in:
                kept = place(src, kept_in, rel, claim_id)
            log.warning("%s is too big for %s (%s): kept at %s", rel, self.failed, exc.strerror, kept)
            record = {**record, "kept_at": str(kept)}
            beside = [d for d in relative_destinations(rel, claim_id, reserve=reserve)
                      if claim_id in d.rpartition("/")[2]]  # a record of its own, whatever else is there
        dest = self._write_error_record(beside, json.dumps(record, ensure_ascii=False, indent=2) + "\n")
        unlink_quietly(src)  # gone already if place had to rename it
        return self.failed / dest

    def _write_error_record(self, beside: list[str], text: str) -> str:
        """``<name>.error.json`` beside the first of ``beside`` (paths in ``failed/``) where it
        can be written; returns that one."""
        for dest in beside[:-1]:
            try:
                self._folder.write_atomic(dest + ERROR_SUFFIX, text)
                return dest
            except OSError as exc:
                if is_disk_trouble(exc):
                    raise
        self._folder.write_atomic(beside[-1] + ERROR_SUFFIX, text)
        return beside[-1]
