"""Claiming inbox files by atomic rename, Maildir-style, safe with several daemons on one inbox.

Each daemon has an id, a lock file ``.work/<id>.lock`` it holds with ``flock`` for its whole life,
and a folder ``.work/<id>/``. Claiming ``inbox/a/x.png`` renames it to
``.work/<id>/<claim-id>=a%2Fx.png`` (the relative path with ``%`` and ``/`` escaped): one atomic
rename, so of two daemons racing for one file exactly one wins, and the claim keeps the exact
relative path. A name too long for that form is claimed as ``.work/<id>/<claim-id>/a/x.png``
instead (two extra folder operations, which is why it is not the usual form).

The kernel drops a ``flock`` when its process dies, even by kill -9. So at start (and at each
rescan) a daemon can tell a dead daemon's folder from a live one's: if it can take the lock, the
owner is gone, and its claims are adopted (renamed into our folder) and processed again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

log = logging.getLogger(__name__)

# Claimed files live here; hidden, so scans and events never take them for new arrivals.
WORK_DIR = ".work"
NAME_MAX = 255  # bytes in one file name on Linux file systems
SEPARATOR = "="  # between claim id (hex) and the escaped relative path
ATTEMPT = "."  # between claim id and the number of daemons that died holding the claim


@dataclass(frozen=True)
class Claim:
    id: str
    rel: str  # path relative to the inbox, "/" separated
    path: Path  # where the claimed file is now
    folder: Path | None = None  # the claim's own folder, for the nested form only
    crashes: int = 0  # how many daemons died while holding this claim
    arrived: float | None = None  # when it arrived whole in the inbox (unknown for a crash's claims)
    size: int | None = None  # bytes when claimed, from the claim's own lstat (None: a crash's claim)


_id_lock = threading.Lock()
_last_micros = 0


def claim_size(claim: Claim) -> int:
    """The claimed file's bytes: as seen when claimed, or now (0 if it cannot be seen)."""
    if claim.size is not None:
        return claim.size
    try:
        return os.lstat(claim.path).st_size
    except OSError:
        return 0


def new_id() -> str:
    """20 hex digits: the time in microseconds (13; never the same or earlier twice in one
    process), then 28 random bits (7) so that daemons sharing an inbox never make the same id.
    A daemon's ids sort in the order it made them, so a replay after a crash (which takes the
    claims in name order) writes rows in their first order: a batch cut between its JSONL and
    CSV appends ends with both files listing it alike."""
    global _last_micros
    with _id_lock:
        _last_micros = max(time.time_ns() // 1000, _last_micros + 1)
        micros = _last_micros
    return f"{micros:013x}{os.urandom(4).hex()[:7]}"


def flat_name(claim_id: str, rel: str) -> str:
    return claim_id + SEPARATOR + rel.replace("%", "%25").replace("/", "%2F")


def parse_flat_name(name: str) -> tuple[str, str]:
    token, escaped = name.split(SEPARATOR, 1)
    return parse_token(token)[0], unquote(escaped)  # every "%" in it starts one of our two escapes


def parse_token(token: str) -> tuple[str, int]:
    """A claim's name up to ``=`` (or its folder's name): the claim id, and how many daemons
    died holding it (``<id>.<n>``; no suffix: none)."""
    claim_id, _, crashes = token.partition(ATTEMPT)
    return claim_id, int(crashes) if crashes.isdigit() else 0


def one_more_crash(name: str) -> str:
    """The name a claim gets when it is adopted from a dead daemon."""
    token, separator, rest = name.partition(SEPARATOR)
    claim_id, crashes = parse_token(token)
    return f"{claim_id}{ATTEMPT}{crashes + 1}{separator}{rest}"


def take_lock(path: Path, *, shared: bool = False) -> int | None:
    """Try a daemon's lock file without waiting: our fd holding it if we got it (the daemon is
    dead), None if a live daemon holds it. FileNotFoundError if there is no such file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Claims:
    def __init__(self, inbox: Path) -> None:
        self.inbox = Path(inbox)
        self.work = self.inbox / WORK_DIR
        self.owner = new_id()
        self.mine = self.work / self.owner
        self._lock_fd = self._take_folder()

    def _take_folder(self) -> int:
        """Lock first, folder second: a folder without a lock file is taken for a dead one's.
        The inbox itself is never made: a share that is not mounted must stay so."""
        self.work.mkdir(exist_ok=True)
        lock_fd = os.open(self.work / f"{self.owner}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.mine.mkdir(exist_ok=True)
        return lock_fd

    def reopen(self) -> None:
        """The inbox was deleted (or unmounted) and is back: our lock and folder again."""
        os.close(self._lock_fd)
        self._lock_fd = self._take_folder()

    def close(self) -> None:
        """Give up our folder (it must be empty: unfinished claims stay for the next start)."""
        try:
            self.mine.rmdir()
            os.unlink(self.work / f"{self.owner}.lock")
        except OSError:
            log.info("leaving unfinished claims in %s for the next start", self.mine)
        os.close(self._lock_fd)

    def claim(self, rel: str, arrived: float | None = None) -> Claim | None:
        """Rename inbox/rel into our work folder; None if it is gone or another daemon won."""
        claim_id = new_id()
        name = flat_name(claim_id, rel)
        if len(os.fsencode(name)) <= NAME_MAX:
            folder, path = None, self.mine / name
        else:
            folder = self.mine / claim_id
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(f"{self.inbox}/{rel}", path)
        except OSError as exc:
            if folder is not None:
                _remove_empty_folders(folder)
            if not isinstance(exc, FileNotFoundError):
                log.error("cannot claim %s: %s", rel, exc.strerror)
            return None
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode):  # a folder swapped in for the file
            self._put_back(path, rel)
            if folder is not None:
                _remove_empty_folders(folder)
            return None
        return Claim(id=claim_id, rel=rel, path=path, folder=folder, arrived=arrived, size=info.st_size)

    def _put_back(self, path: Path, rel: str) -> None:
        """A folder is never ours to take apart: back where it was (a scan finds its files)."""
        try:
            os.rename(path, self.inbox / rel)
        except OSError as exc:
            log.error("a folder was claimed as %s and cannot be put back (%s); it stays in %s",
                      rel, exc.strerror, path)

    def put_back(self, claim: Claim) -> bool:
        """Return a claimed file to its place in the inbox (its writer is not done with it);
        False if something else is there now."""
        target = self.inbox / claim.rel
        if os.path.lexists(target):
            return False
        os.rename(claim.path, target)
        self.finish(claim)
        return True

    def finish(self, claim: Claim) -> None:
        """After the claimed file has left: remove a nested claim's (now empty) folders."""
        if claim.folder is None:
            return
        folder = claim.path.parent
        try:
            while True:
                os.rmdir(folder)
                if folder == claim.folder:
                    return
                folder = folder.parent
        except OSError:  # something else is in there: never ours to delete
            log.warning("claim folder %s is not empty after its file left; left alone", claim.folder)

    def recover(self, skip: set[Path] = frozenset()) -> list[Claim]:
        """Adopt the claims of dead daemons (and our own leftovers); return them all but those
        at ``skip`` (claims of ours in hand elsewhere, not left over)."""
        if not self.mine.is_dir():  # the inbox was taken away with our folder in it
            self.reopen()
        for entry in sorted(self.work.iterdir()):
            if entry.name.endswith(".lock"):
                owner = entry.name[: -len(".lock")]
                if owner != self.owner:
                    self._adopt_if_dead(owner)
            elif entry.is_dir() and entry.name != self.owner:
                if not (self.work / f"{entry.name}.lock").exists():
                    self._adopt(entry)
            elif not entry.is_dir():  # a loose file in .work: treat it as a fresh claim
                os.rename(entry, self.mine / flat_name(new_id(), entry.name))
        return [claim for claim in self._own_claims() if claim.path not in skip]

    def _adopt_if_dead(self, owner: str) -> None:
        lock_path = self.work / f"{owner}.lock"
        try:
            fd = take_lock(lock_path)
        except FileNotFoundError:
            return
        if fd is None:
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
        each claim is renamed once, by whoever gets there first."""
        try:
            entries = list(folder.iterdir())
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                os.rename(entry, self.mine / one_more_crash(entry.name))
            except FileNotFoundError:
                continue
        try:
            folder.rmdir()
        except OSError:
            pass
        log.warning("recovered unfinished claims of a stopped worker from %s", folder)

    def _own_claims(self) -> Iterator[Claim]:
        for entry in sorted(self.mine.iterdir()):
            if not stat.S_ISDIR(os.lstat(entry).st_mode):
                token, escaped = entry.name.split(SEPARATOR, 1)
                claim_id, crashes = parse_token(token)
                yield Claim(id=claim_id, rel=unquote(escaped), path=entry, crashes=crashes)
            elif SEPARATOR in entry.name:  # a folder claimed as a file (before the check above)
                self._put_back(entry, parse_flat_name(entry.name)[1])
            else:
                yield from self._nested_claims(entry)

    def _nested_claims(self, folder: Path) -> Iterator[Claim]:
        claim_id, crashes = parse_token(folder.name)
        files = [
            Path(root, name)
            for root, dirs, names in os.walk(folder)
            for name in names + [d for d in dirs if Path(root, d).is_symlink()]
        ]
        if not files:  # crashed after the input left: nothing to do
            _remove_empty_folders(folder)
        for file in files:
            rel = file.relative_to(folder).as_posix()
            yield Claim(id=claim_id, rel=rel, path=file, folder=folder, crashes=crashes)


def _remove_empty_folders(top: Path) -> None:
    """Remove ``top`` and the empty folders below it; anything else stays where it is."""
    for root, _, _ in os.walk(top, topdown=False):
        try:
            os.rmdir(root)
        except OSError:
            pass
