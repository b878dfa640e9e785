"""The daemon's own folder, ``.work/<owner>/``, and its lock, held through checked directory fds.

A daemon takes its lock file first and its folder second (a folder without a lock file is taken
for a dead one's), each opened once and checked: ``.work`` and our folder must be folders (not
symlinks) owned by us and writable by no one else, or they are set aside and made afresh.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import stat
from pathlib import Path

from worker.daemon.claim import new_id
from worker.daemon.daemon_lock import ABOUT_MAX_BYTES, LOCK_FLAGS
from worker.errors import ConfigError
from worker.safe_paths import FOLDER_FLAGS, NAME_MAX

log = logging.getLogger(__name__)

# Claimed files live here; hidden, so scans and events never take them for new arrivals.
WORK_DIR = ".work"
# .work and the daemons' folders in it: writable by the daemon's user alone.
WORK_MODE = 0o755
# Between the name of what failed a check and an id, in the inbox, where it is set aside.
SET_ASIDE = ".set-aside."


class WorkFolder:
    """``inbox/.work/<owner>/`` and ``inbox/.work/<owner>.lock``, held open: ``inbox_fd``,
    ``work_fd`` and ``mine_fd`` are the folders every operation on claims goes through (read
    them afresh each time: ``keep_in_place`` and ``reopen`` open new ones)."""

    def __init__(self, inbox: Path) -> None:
        self.inbox = Path(inbox)
        self.work = self.inbox / WORK_DIR
        self.owner = new_id()
        self.mine = self.work / self.owner
        self.inbox_fd = self.work_fd = self._lock_fd = self.mine_fd = -1
        self._about = b""  # what announce() last said, written again into each new lock file
        try:
            self._take_folder()
        except OSError as exc:  # at start, what the system refuses is the set-up's to mend
            for fd in (self.mine_fd, self._lock_fd, self.work_fd, self.inbox_fd):
                if fd >= 0:
                    os.close(fd)
            why = exc.strerror or exc
            # Under systemd an inbox the unit's ReadWritePaths= does not name is read-only
            # whatever its modes are.
            hint = ("; under systemd, the unit's ReadWritePaths= must name it (a drop-in)"
                    if exc.errno == errno.EROFS else "")
            raise ConfigError(f"inbox {self.inbox}: cannot keep claims in {self.work} ({why}); "
                              f"the worker must be able to read and write both{hint}") from exc

    def _take_folder(self) -> None:
        """Lock first, folder second: a folder without a lock file is taken for a dead one's.
        The inbox itself is never made: a share that is not mounted must stay so."""
        self.inbox_fd = os.open(self.inbox, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.work_fd = self._checked_folder(self.inbox_fd, WORK_DIR, self.work)
        self._lock_fd = os.open(f"{self.owner}.lock", LOCK_FLAGS | os.O_CREAT | os.O_RDWR, 0o644,
                                dir_fd=self.work_fd)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if self._about:
            self._write_about()
        self.mine_fd = self._checked_folder(self.work_fd, self.owner, self.mine)
        self._where = self._identity()

    def announce(self, **about: str | int) -> None:
        """Say in our lock file what this daemon serves (``ABOUT_FIELDS``), for ``worker
        status``; said again whenever the lock file is made anew."""
        self._about = json.dumps(about, ensure_ascii=False).encode()[:ABOUT_MAX_BYTES]
        self._write_about()

    def _write_about(self) -> None:
        try:  # a reader between the two calls may find a longer old tail: it shows no model then
            os.pwrite(self._lock_fd, self._about, 0)
            os.ftruncate(self._lock_fd, len(self._about))
        except OSError as exc:  # a full disk: status will not name the model; classifying goes on
            log.warning("cannot note the serving model in %s.lock: %s", self.owner, exc.strerror)

    def _checked_folder(self, parent_fd: int, name: str, path: Path) -> int:
        """An fd on the folder ``name`` (made if missing) once it passes ``untrusted``; one
        that fails is set aside and made afresh."""
        for _ in range(3):  # another daemon may be making or setting it aside at the same time
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, WORK_MODE, dir_fd=parent_fd)
            try:
                fd = os.open(name, FOLDER_FLAGS, dir_fd=parent_fd)
            except FileNotFoundError:
                continue
            except OSError as exc:  # ELOOP: a symlink; ENOTDIR: a file
                why = f"not a folder ({exc.strerror})"
            else:
                why = untrusted(os.fstat(fd))
                if why is None:
                    return fd
                os.close(fd)
            self._set_aside(parent_fd, name, path, why)
        raise ConfigError(f"{path} keeps changing under the worker: is another program using it?")

    def _set_aside(self, parent_fd: int, name: str, path: Path, why: str) -> None:
        """Rename what failed a check out of the way, hidden in the inbox, and say so."""
        aside = f".{name.lstrip('.')[:NAME_MAX - 40]}{SET_ASIDE}{new_id()}"
        try:
            os.rename(name, aside, src_dir_fd=parent_fd, dst_dir_fd=self.inbox_fd)
        except FileNotFoundError:
            return  # someone else set it aside first
        except OSError as exc:
            raise ConfigError(
                f"{path} is {why} and cannot be set aside ({exc.strerror}): move it away; give the "
                "inbox the sticky bit (chmod 3775) so that writers cannot replace it"
            ) from exc
        log.error("%s is %s: set aside as %s, never acted on", path, why, self.inbox / aside)

    def _identity(self) -> tuple[tuple[int, int], ...]:
        return (_identity(os.fstat(self.work_fd)), _identity(os.fstat(self.mine_fd)))

    def keep_in_place(self) -> None:
        """Our claims' paths, ``inbox/.work/<owner>/...``, lead to the folders we hold: if a
        writer renamed ``.work`` away (or planted its own), a checked ``.work`` again, with our
        claims moved into it from the folder we still hold open, under the same names."""
        try:
            where = (_identity(os.lstat(self.work)), _identity(os.lstat(self.mine)))
        except OSError:
            where = ()
        if where == self._where or not self._inbox_unchanged():
            return  # all in place; or the inbox itself was replaced: the daemon waits and reopens
        log.error("%s was moved or replaced while the worker used it; taking a checked one again", self.work)
        old_mine, old_lock = self.mine_fd, self._lock_fd
        os.close(old_lock)  # a lock on the same file through a second open would never be granted
        for fd in (self.inbox_fd, self.work_fd):
            os.close(fd)
        self._take_folder()
        try:
            for name in os.listdir(old_mine):
                os.rename(name, name, src_dir_fd=old_mine, dst_dir_fd=self.mine_fd)
        finally:
            os.close(old_mine)

    def _inbox_unchanged(self) -> bool:
        try:
            return _identity(os.stat(self.inbox)) == _identity(os.fstat(self.inbox_fd))
        except OSError:
            return False

    def reopen(self) -> None:
        """The inbox was deleted (or unmounted) and is back: our lock and folder again."""
        self._close_fds()
        self._take_folder()

    def _close_fds(self) -> None:
        for fd in (self.mine_fd, self._lock_fd, self.work_fd, self.inbox_fd):
            os.close(fd)

    def close(self) -> None:
        """Give up our folder (it must be empty: unfinished claims stay for the next start)."""
        try:
            os.rmdir(self.owner, dir_fd=self.work_fd)
            os.unlink(f"{self.owner}.lock", dir_fd=self.work_fd)
        except OSError:
            log.info("leaving unfinished claims in %s for the next start", self.mine)
        self._close_fds()


def untrusted(info: os.stat_result) -> str | None:
    """Why a folder of ``.work`` is not the daemon's own, or None: it must be a folder, owned
    by the daemon's user and writable by no one else."""
    if not stat.S_ISDIR(info.st_mode):
        return "not a folder"
    if info.st_uid != os.geteuid():
        return f"owned by uid {info.st_uid}, not by the worker's (uid {os.geteuid()})"
    if info.st_mode & 0o022:
        return f"writable by others ({stat.filemode(info.st_mode)})"
    return None


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def remove_empty_folders(top: Path) -> None:
    """Remove ``top`` and the empty folders below it; anything else stays where it is."""
    for root, _, _ in os.walk(top, topdown=False):
        try:
            os.rmdir(root)
        except OSError:
            pass
