"""Claiming inbox files by atomic rename, Maildir-style, safe with several daemons on one inbox.

Each daemon has an id, a lock file ``.work/<id>.lock`` it holds with ``flock`` for its whole life,
and a folder ``.work/<id>/``. Claiming ``inbox/a/x.png`` renames it to
``.work/<id>/<claim-id>/a/x.png``: the rename is atomic, so of two daemons racing for one file
exactly one wins, and the claim keeps the file's exact relative path.

The kernel drops a ``flock`` when its process dies, even by kill -9. So at start (and at each
rescan) a daemon can tell a dead daemon's folder from a live one's: if it can take the lock, the
owner is gone, and its claims are adopted (renamed into our folder) and processed again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from worker.watch import WORK_DIR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    id: str
    rel: str  # path relative to the inbox, "/" separated
    folder: Path  # .work/<daemon>/<claim-id>

    @property
    def path(self) -> Path:
        return self.folder / self.rel


def new_id() -> str:
    return uuid.uuid4().hex[:16]


class Claims:
    def __init__(self, inbox: Path) -> None:
        self.inbox = Path(inbox)
        self.work = self.inbox / WORK_DIR
        self.owner = new_id()
        self.mine = self.work / self.owner
        # Lock first, folder second: a folder without a lock file is taken for a dead one's.
        self.work.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.work / f"{self.owner}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.mine.mkdir()

    def close(self) -> None:
        """Give up our folder (it must be empty: unfinished claims stay for the next start)."""
        try:
            self.mine.rmdir()
            os.unlink(self.work / f"{self.owner}.lock")
        except OSError:
            log.info("leaving unfinished claims in %s for the next start", self.mine)
        os.close(self._lock_fd)

    def claim(self, rel: str) -> Claim | None:
        """Rename inbox/rel into our work folder; None if it is gone or another daemon won."""
        claim_id = new_id()
        claim = Claim(id=claim_id, rel=rel, folder=self.mine / claim_id)
        target = claim.path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self.inbox / rel, target)
        except FileNotFoundError:
            shutil.rmtree(claim.folder, ignore_errors=True)
            return None
        except OSError as exc:
            shutil.rmtree(claim.folder, ignore_errors=True)
            log.error("cannot claim %s: %s", rel, exc.strerror)
            return None
        return claim

    def finish(self, claim: Claim) -> None:
        shutil.rmtree(claim.folder, ignore_errors=True)

    def recover(self) -> list[Claim]:
        """Adopt the claims of dead daemons (and our own leftovers); return them all."""
        for entry in sorted(self.work.iterdir()):
            if entry.name.endswith(".lock"):
                owner = entry.name[: -len(".lock")]
                if owner != self.owner:
                    self._adopt_if_dead(owner)
            elif entry.is_dir() and entry.name != self.owner:
                if not (self.work / f"{entry.name}.lock").exists():
                    self._adopt(entry)
            elif not entry.is_dir():  # a loose file in .work: treat it as a fresh claim
                self._adopt_loose(entry)
        return list(self._own_claims())

    def _adopt_if_dead(self, owner: str) -> None:
        lock_path = self.work / f"{owner}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return  # alive
        try:
            folder = self.work / owner
            if folder.is_dir():
                self._adopt(folder)
            os.unlink(lock_path)
        finally:
            os.close(fd)

    def _adopt(self, folder: Path) -> None:
        """Move a dead daemon's claims into ours; another daemon adopting too is harmless:
        each claim folder is renamed once, by whoever gets there first."""
        try:
            claim_dirs = list(folder.iterdir())
        except FileNotFoundError:
            return
        for claim_dir in claim_dirs:
            try:
                os.rename(claim_dir, self.mine / claim_dir.name)
            except FileNotFoundError:
                continue
        try:
            folder.rmdir()
        except OSError:
            pass
        log.warning("recovered unfinished claims of a stopped worker from %s", folder)

    def _adopt_loose(self, path: Path) -> None:
        claim_id = new_id()
        (self.mine / claim_id).mkdir()
        os.rename(path, self.mine / claim_id / path.name)

    def _own_claims(self):
        for claim_dir in sorted(self.mine.iterdir()):
            files = [
                Path(root, name)
                for root, dirs, names in os.walk(claim_dir)
                for name in names + [d for d in dirs if Path(root, d).is_symlink()]
            ]
            if not files:  # crashed after the input left: nothing to do
                shutil.rmtree(claim_dir, ignore_errors=True)
                continue
            for file in files:
                yield Claim(
                    id=claim_dir.name, rel=file.relative_to(claim_dir).as_posix(),
                    folder=claim_dir,
                )
