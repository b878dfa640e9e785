"""Recovery: the claims of dead daemons adopted into ours, and ours listed again after a crash.

The kernel drops a daemon's ``flock`` when its process dies, even by kill -9. So at start (and
at each rescan) a daemon can tell a dead daemon's folder from a live one's: if it can take the
lock, the owner is gone, and its claims are adopted (renamed into our folder) and processed
again. Nothing in ``.work`` is trusted until checked: what is no claim of ours is put back into
the inbox as a plain drop, never acted on as a claim.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from worker.daemon.claim import (
    SEPARATOR,
    TOKEN,
    Claim,
    fitting_prefix,
    new_id,
    one_more_crash,
    parse_claim_name,
    parse_token,
    stray_name,
)
from worker.daemon.daemon_lock import take_lock
from worker.daemon.work_folder import WorkFolder, remove_empty_folders, untrusted
from worker.safe_paths import FOLDER_FLAGS, exists_at, files_below, lstat_at, parent_of

log = logging.getLogger(__name__)


class Recovery:
    """Takes up, through ``folder``, the claims a crash left: a dead daemon's and our own."""

    def __init__(self, folder: WorkFolder) -> None:
        self.folder = folder

    def recover(self, skip: set[Path] = frozenset()) -> list[Claim]:
        """Adopt the claims of dead daemons (and our own leftovers); return them all but those
        at ``skip`` (claims of ours in hand elsewhere, not left over). What in ``.work`` is not
        a daemon's lock or folder is put back into the inbox as a plain drop."""
        self.folder.keep_in_place()
        mine = (self.folder.owner, f"{self.folder.owner}.lock")
        for name in sorted(os.listdir(self.folder.work_fd)):
            try:
                info = os.lstat(name, dir_fd=self.folder.work_fd)
            except FileNotFoundError:
                continue
            if name in mine:
                continue
            if name.endswith(".lock") and stat.S_ISREG(info.st_mode):
                self._adopt_if_dead(name[: -len(".lock")])
            elif stat.S_ISDIR(info.st_mode) and TOKEN.fullmatch(name):
                if not exists_at(self.folder.work_fd, f"{name}.lock"):
                    self._adopt(name)
            else:  # a loose file, a symlink, a folder no daemon made
                self._put_back_stray(self.folder.work_fd, name, self.folder.work)
        return [claim for claim in self._own_claims() if claim.path not in skip]

    def _adopt_if_dead(self, owner: str) -> None:
        lock = f"{owner}.lock"
        try:
            fd = take_lock(lock, dir_fd=self.folder.work_fd)
        except FileNotFoundError:
            return
        except OSError:  # not a lock file we made
            self._put_back_stray(self.folder.work_fd, lock, self.folder.work)
            return
        if fd is None:
            return  # alive
        try:
            info = lstat_at(self.folder.work_fd, owner)
            if info is not None and stat.S_ISDIR(info.st_mode):
                self._adopt(owner)
            os.unlink(lock, dir_fd=self.folder.work_fd)
        finally:
            os.close(fd)

    def _adopt(self, name: str) -> None:
        """Move a dead daemon's claims into ours; another daemon adopting too is harmless:
        each claim is renamed once, by whoever gets there first. A folder that is not ours
        (another owner, writable by others) is put back into the inbox whole."""
        try:
            fd = os.open(name, FOLDER_FLAGS, dir_fd=self.folder.work_fd)
        except OSError:
            return  # gone, or swapped for something else: the next recovery looks again
        try:
            why = untrusted(os.fstat(fd))
            if why is not None:
                log.error("%s is %s: not a daemon's claims", self.folder.work / name, why)
                self._put_back_stray(self.folder.work_fd, name, self.folder.work)
                return
            for entry in os.listdir(fd):
                self._adopt_one(fd, entry, self.folder.work / name)
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.rmdir(name, dir_fd=self.folder.work_fd)
        log.warning("recovered unfinished claims of a stopped worker from %s", self.folder.work / name)

    def _adopt_one(self, folder_fd: int, name: str, folder: Path) -> None:
        """One claim of a dead daemon into our folder. Claim ids are never made twice, so a name
        that is taken in our folder (rename would replace what is there) is no claim of ours."""
        adopted = one_more_crash(name)
        if not TOKEN.fullmatch(name.partition(SEPARATOR)[0]) or exists_at(self.folder.mine_fd, adopted):
            self._put_back_stray(folder_fd, name, folder)
            return
        with contextlib.suppress(FileNotFoundError):
            os.rename(name, adopted, src_dir_fd=folder_fd, dst_dir_fd=self.folder.mine_fd)

    def _put_back_stray(self, folder_fd: int, name: str, folder: Path) -> None:
        """Something in our folders that is no claim of ours (planted, or left by a version we
        do not know): back into the inbox as a plain drop, under a name of its own, so that it
        ends as a row or an error record like any file, and is never acted on as a claim."""
        target = stray_name(name)
        if exists_at(self.folder.inbox_fd, target):
            target = fitting_prefix(new_id(), target)
        try:
            os.rename(name, target, src_dir_fd=folder_fd, dst_dir_fd=self.folder.inbox_fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("%s is not a claim and cannot be put back into the inbox (%s); left alone",
                      folder / name, exc.strerror)
            return
        log.warning("%s is not a claim: put back into the inbox as %s", folder / name, target)

    def _own_claims(self) -> Iterator[Claim]:
        for name in sorted(os.listdir(self.folder.mine_fd)):
            info = lstat_at(self.folder.mine_fd, name)
            if info is None:
                continue
            parsed = parse_claim_name(name)
            if not stat.S_ISDIR(info.st_mode):
                if parsed is None:
                    self._put_back_stray(self.folder.mine_fd, name, self.folder.mine)
                    continue
                claim_id, crashes, rel = parsed
                yield Claim(id=claim_id, rel=rel, path=self.folder.mine / name, crashes=crashes)
            elif parsed is not None:  # a folder claimed as a file (before the check in claim)
                self._put_back_folder(name, parsed[2])
            elif TOKEN.fullmatch(name) and untrusted(info) is None:
                yield from self._nested_claims(name)
            else:
                self._put_back_stray(self.folder.mine_fd, name, self.folder.mine)

    def _put_back_folder(self, name: str, rel: str) -> None:
        """A folder is never ours to take apart: back where it was (a scan finds its files)."""
        try:
            with parent_of(self.folder.inbox_fd, rel) as (fd, last):
                if exists_at(fd, last):
                    raise FileExistsError(errno.EEXIST, "something else is there now")
                os.rename(name, last, src_dir_fd=self.folder.mine_fd, dst_dir_fd=fd)
        except OSError as exc:
            log.error("a folder was claimed as %s and cannot be put back (%s); putting it back as %s",
                      rel, exc.strerror, stray_name(name))
            self._put_back_stray(self.folder.mine_fd, name, self.folder.mine)

    def _nested_claims(self, name: str) -> Iterator[Claim]:
        claim_id, crashes = parse_token(name)
        folder = self.folder.mine / name
        files = list(files_below(self.folder.mine_fd, [name]))
        if not files:  # crashed after the input left: nothing to do
            remove_empty_folders(folder)
        for parts in files:
            rel = "/".join(parts[1:])
            yield Claim(id=claim_id, rel=rel, path=folder / rel, folder=folder, crashes=crashes)
