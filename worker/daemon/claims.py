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

A writer of the inbox can reach ``.work`` too: ``Claims`` trusts nothing in it it has not
checked (see its docstring), and walks inbox paths by directory fds (``worker.safe_paths``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from worker.errors import ConfigError
from worker.safe_paths import FOLDER_FLAGS, make_folders, open_folder, parent_of, parts_of

log = logging.getLogger(__name__)

# Claimed files live here; hidden, so scans and events never take them for new arrivals.
WORK_DIR = ".work"
# .work and the daemons' folders in it: writable by the daemon's user alone.
WORK_MODE = 0o755
NAME_MAX = 255  # bytes in one file name on Linux file systems
PATH_MAX = 4096  # bytes in a path the kernel takes whole
SEPARATOR = "="  # between claim id (hex) and the escaped relative path
ATTEMPT = "."  # between claim id and the number of daemons that died holding the claim
# What a daemon's folder, lock (less ".lock") or claim (up to "=") is named: <hex id>[.<crashes>]
TOKEN = re.compile(r"[0-9a-f]+(\.[0-9]+)?")
# Between the name of what failed a check and an id, in the inbox, where it is set aside.
SET_ASIDE = ".set-aside."
# A lock file is opened without following a symlink, and without blocking on a FIFO.
LOCK_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# A live daemon's lock file holds one JSON object saying what it serves (``Claims.announce``),
# for ``worker status``: these fields, of these types. A daemon from before this leaves its
# lock file empty.
ABOUT_FIELDS = {"pid": int, "model": str, "model_version": str, "since": str}
ABOUT_MAX_BYTES = 4096


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


def take_lock(path: Path | str, *, shared: bool = False, dir_fd: int | None = None) -> int | None:
    """Try a daemon's lock file without waiting: our fd holding it if we got it (the daemon is
    dead), None if a live daemon holds it. FileNotFoundError if there is no such file; another
    OSError if it is not a plain file (a symlink, a FIFO)."""
    fd = os.open(path, os.O_RDONLY | LOCK_FLAGS, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a lock file")
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_about(path: Path | str) -> dict:
    """What a daemon said of itself in its lock file (``Claims.announce``): the fields of
    ``ABOUT_FIELDS`` it holds, each of its type; {} for an empty lock file (a daemon from
    before) or one that is no such object. Read without following a symlink, and so far only."""
    fd = os.open(path, os.O_RDONLY | LOCK_FLAGS)
    try:
        data = os.read(fd, ABOUT_MAX_BYTES)
    finally:
        os.close(fd)
    try:
        about = json.loads(data)
    except ValueError:
        return {}
    if not isinstance(about, dict):
        return {}
    # the exact type: JSON's true is no pid
    return {key: about[key] for key, kind in ABOUT_FIELDS.items() if type(about.get(key)) is kind}


class Claims:
    """Our claims, in ``.work/<owner>/``, reached through directory fds opened and checked here.

    ``.work`` and everything in it is the daemon's own state, which a writer of the inbox must
    not steer (Postfix's rule for its queue): ``.work`` and our folder must be folders (not
    symlinks) owned by us and writable by no one else, or they are set aside and made afresh;
    a name in them that does not parse into a claim of a safe relative path is put back into
    the inbox as a plain drop, never acted on as a claim; and every rename goes between open
    folders (``renameat``), so no symlink a writer swaps in on the way can redirect it.
    """

    def __init__(self, inbox: Path) -> None:
        self.inbox = Path(inbox)
        self.work = self.inbox / WORK_DIR
        self.owner = new_id()
        self.mine = self.work / self.owner
        self._inbox_fd = self._work_fd = self._lock_fd = self._mine_fd = -1
        self._about = b""  # what announce() last said, written again into each new lock file
        try:
            self._take_folder()
        except OSError as exc:  # at start, what the system refuses is the set-up's to mend
            for fd in (self._mine_fd, self._lock_fd, self._work_fd, self._inbox_fd):
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
        self._inbox_fd = os.open(self.inbox, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._work_fd = self._checked_folder(self._inbox_fd, WORK_DIR, self.work)
        self._lock_fd = os.open(f"{self.owner}.lock", LOCK_FLAGS | os.O_CREAT | os.O_RDWR, 0o644,
                                dir_fd=self._work_fd)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if self._about:
            self._write_about()
        self._mine_fd = self._checked_folder(self._work_fd, self.owner, self.mine)
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
            os.rename(name, aside, src_dir_fd=parent_fd, dst_dir_fd=self._inbox_fd)
        except FileNotFoundError:
            return  # someone else set it aside first
        except OSError as exc:
            raise ConfigError(
                f"{path} is {why} and cannot be set aside ({exc.strerror}): move it away; give the "
                "inbox the sticky bit (chmod 3775) so that writers cannot replace it"
            ) from exc
        log.error("%s is %s: set aside as %s, never acted on", path, why, self.inbox / aside)

    def _identity(self) -> tuple[tuple[int, int], ...]:
        return (_identity(os.fstat(self._work_fd)), _identity(os.fstat(self._mine_fd)))

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
        old_mine, old_lock = self._mine_fd, self._lock_fd
        os.close(old_lock)  # a lock on the same file through a second open would never be granted
        for fd in (self._inbox_fd, self._work_fd):
            os.close(fd)
        self._take_folder()
        try:
            for name in os.listdir(old_mine):
                os.rename(name, name, src_dir_fd=old_mine, dst_dir_fd=self._mine_fd)
        finally:
            os.close(old_mine)

    def _inbox_unchanged(self) -> bool:
        try:
            return _identity(os.stat(self.inbox)) == _identity(os.fstat(self._inbox_fd))
        except OSError:
            return False

    def reopen(self) -> None:
        """The inbox was deleted (or unmounted) and is back: our lock and folder again."""
        self._close_fds()
        self._take_folder()

    def _close_fds(self) -> None:
        for fd in (self._mine_fd, self._lock_fd, self._work_fd, self._inbox_fd):
            os.close(fd)

    def close(self) -> None:
        """Give up our folder (it must be empty: unfinished claims stay for the next start)."""
        try:
            os.rmdir(self.owner, dir_fd=self._work_fd)
            os.unlink(f"{self.owner}.lock", dir_fd=self._work_fd)
        except OSError:
            log.info("leaving unfinished claims in %s for the next start", self.mine)
        self._close_fds()

    def claim(self, rel: str, arrived: float | None = None) -> Claim | None:
        """Rename inbox/rel into our work folder; None if it is gone or another daemon won.
        Its folders are walked from the inbox without following a symlink: one swapped in
        since the scan fails the claim, so nothing outside the inbox is ever taken."""
        claim_id = new_id()
        try:
            with parent_of(self._inbox_fd, rel) as (src_fd, src_name):
                return self._claim_from(src_fd, src_name, claim_id, rel, arrived)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("cannot claim %s: %s", rel, exc.strerror)
            return None

    def _claim_from(self, src_fd: int, src_name: str, claim_id: str, rel: str,
                    arrived: float | None) -> Claim | None:
        name, folder = self._claim_name(claim_id, rel), None
        if name is not None:
            dest_fd, dest_name, path = self._mine_fd, name, self.mine / name
        else:
            parts = rel.split("/")
            folder, path = self.mine / claim_id, self.mine / claim_id / rel
            dest_fd, dest_name = make_folders(self._mine_fd, [claim_id, *parts[:-1]]), parts[-1]
        try:
            os.rename(src_name, dest_name, src_dir_fd=src_fd, dst_dir_fd=dest_fd)
            info = os.lstat(dest_name, dir_fd=dest_fd)
            if stat.S_ISDIR(info.st_mode):  # a folder swapped in for the file: never ours to take apart
                os.rename(dest_name, src_name, src_dir_fd=dest_fd, dst_dir_fd=src_fd)
                return None
        finally:
            if folder is not None:
                os.close(dest_fd)
                if not os.path.lexists(path):
                    _remove_empty_folders(folder)
        return Claim(id=claim_id, rel=rel, path=path, folder=folder, arrived=arrived, size=info.st_size)

    def _claim_name(self, claim_id: str, rel: str) -> str | None:
        """The flat name of a claim (None: too long, claim it nested). A path so long that the
        nested form would pass PATH_MAX gets a flat name from its last part only: its row
        still names the whole path, though after a crash it is recovered by that part."""
        name = flat_name(claim_id, rel)
        if len(os.fsencode(name)) <= NAME_MAX:
            return name
        nested = f"{self.mine}/{claim_id}/{rel}"
        if len(os.fsencode(nested)) < PATH_MAX:
            return None
        return flat_name(claim_id, fitting(claim_id, rel.rsplit("/", 1)[-1]))

    def put_back(self, claim: Claim) -> bool:
        """Return a claimed file to its place in the inbox (its writer is not done with it);
        False if something else is there now, or its folder is gone or is no folder now."""
        try:
            with parent_of(self._inbox_fd, claim.rel) as (fd, name), self._held(claim) as (src_fd, src_name):
                if _exists(fd, name):
                    return False
                os.rename(src_name, name, src_dir_fd=src_fd, dst_dir_fd=fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EINVAL):
                raise
            return False
        self.finish(claim)
        return True

    def _held(self, claim: Claim):
        """(fd, name) of a claimed file in our folder."""
        return parent_of(self._mine_fd, claim.path.relative_to(self.mine).as_posix())

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
        at ``skip`` (claims of ours in hand elsewhere, not left over). What in ``.work`` is not
        a daemon's lock or folder is put back into the inbox as a plain drop."""
        self.keep_in_place()
        mine = (self.owner, f"{self.owner}.lock")
        for name in sorted(os.listdir(self._work_fd)):
            try:
                info = os.lstat(name, dir_fd=self._work_fd)
            except FileNotFoundError:
                continue
            if name in mine:
                continue
            if name.endswith(".lock") and stat.S_ISREG(info.st_mode):
                self._adopt_if_dead(name[: -len(".lock")])
            elif stat.S_ISDIR(info.st_mode) and TOKEN.fullmatch(name):
                if not _exists(self._work_fd, f"{name}.lock"):
                    self._adopt(name)
            else:  # a loose file, a symlink, a folder no daemon made
                self._put_back_stray(self._work_fd, name, self.work)
        return [claim for claim in self._own_claims() if claim.path not in skip]

    def _adopt_if_dead(self, owner: str) -> None:
        lock = f"{owner}.lock"
        try:
            fd = take_lock(lock, dir_fd=self._work_fd)
        except FileNotFoundError:
            return
        except OSError:  # not a lock file we made
            self._put_back_stray(self._work_fd, lock, self.work)
            return
        if fd is None:
            return  # alive
        try:
            info = _lstat(self._work_fd, owner)
            if info is not None and stat.S_ISDIR(info.st_mode):
                self._adopt(owner)
            os.unlink(lock, dir_fd=self._work_fd)
        finally:
            os.close(fd)

    def _adopt(self, name: str) -> None:
        """Move a dead daemon's claims into ours; another daemon adopting too is harmless:
        each claim is renamed once, by whoever gets there first. A folder that is not ours
        (another owner, writable by others) is put back into the inbox whole."""
        try:
            fd = os.open(name, FOLDER_FLAGS, dir_fd=self._work_fd)
        except OSError:
            return  # gone, or swapped for something else: the next recovery looks again
        try:
            why = untrusted(os.fstat(fd))
            if why is not None:
                log.error("%s is %s: not a daemon's claims", self.work / name, why)
                self._put_back_stray(self._work_fd, name, self.work)
                return
            for entry in os.listdir(fd):
                self._adopt_one(fd, entry, self.work / name)
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.rmdir(name, dir_fd=self._work_fd)
        log.warning("recovered unfinished claims of a stopped worker from %s", self.work / name)

    def _adopt_one(self, folder_fd: int, name: str, folder: Path) -> None:
        """One claim of a dead daemon into our folder. Claim ids are never made twice, so a name
        that is taken in our folder (rename would replace what is there) is no claim of ours."""
        adopted = one_more_crash(name)
        if not TOKEN.fullmatch(name.partition(SEPARATOR)[0]) or _exists(self._mine_fd, adopted):
            self._put_back_stray(folder_fd, name, folder)
            return
        with contextlib.suppress(FileNotFoundError):
            os.rename(name, adopted, src_dir_fd=folder_fd, dst_dir_fd=self._mine_fd)

    def _put_back_stray(self, folder_fd: int, name: str, folder: Path) -> None:
        """Something in our folders that is no claim of ours (planted, or left by a version we
        do not know): back into the inbox as a plain drop, under a name of its own, so that it
        ends as a row or an error record like any file, and is never acted on as a claim."""
        target = stray_name(name)
        if _exists(self._inbox_fd, target):
            target = fitting_prefix(new_id(), target)
        try:
            os.rename(name, target, src_dir_fd=folder_fd, dst_dir_fd=self._inbox_fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("%s is not a claim and cannot be put back into the inbox (%s); left alone",
                      folder / name, exc.strerror)
            return
        log.warning("%s is not a claim: put back into the inbox as %s", folder / name, target)

    def _own_claims(self) -> Iterator[Claim]:
        for name in sorted(os.listdir(self._mine_fd)):
            info = _lstat(self._mine_fd, name)
            if info is None:
                continue
            parsed = parse_claim_name(name)
            if not stat.S_ISDIR(info.st_mode):
                if parsed is None:
                    self._put_back_stray(self._mine_fd, name, self.mine)
                    continue
                claim_id, crashes, rel = parsed
                yield Claim(id=claim_id, rel=rel, path=self.mine / name, crashes=crashes)
            elif parsed is not None:  # a folder claimed as a file (before the check in claim)
                self._put_back_folder(name, parsed[2])
            elif TOKEN.fullmatch(name) and untrusted(info) is None:
                yield from self._nested_claims(name)
            else:
                self._put_back_stray(self._mine_fd, name, self.mine)

    def _put_back_folder(self, name: str, rel: str) -> None:
        """A folder is never ours to take apart: back where it was (a scan finds its files)."""
        try:
            with parent_of(self._inbox_fd, rel) as (fd, last):
                if _exists(fd, last):
                    raise FileExistsError(errno.EEXIST, "something else is there now")
                os.rename(name, last, src_dir_fd=self._mine_fd, dst_dir_fd=fd)
        except OSError as exc:
            log.error("a folder was claimed as %s and cannot be put back (%s); putting it back as %s",
                      rel, exc.strerror, stray_name(name))
            self._put_back_stray(self._mine_fd, name, self.mine)

    def _nested_claims(self, name: str) -> Iterator[Claim]:
        claim_id, crashes = parse_token(name)
        folder = self.mine / name
        files = list(_files_below(self._mine_fd, [name]))
        if not files:  # crashed after the input left: nothing to do
            _remove_empty_folders(folder)
        for parts in files:
            rel = "/".join(parts[1:])
            yield Claim(id=claim_id, rel=rel, path=folder / rel, folder=folder, crashes=crashes)


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


def parse_claim_name(name: str) -> tuple[str, int, str] | None:
    """(claim id, crashes, relative path) of a flat claim's name, or None if it is none of ours:
    no ``<hex id>[.<n>]=`` before the path, or a path that would leave the inbox."""
    token, separator, escaped = name.partition(SEPARATOR)
    if not separator or not TOKEN.fullmatch(token):
        return None
    rel = unquote(escaped)  # every "%" in it starts one of our two escapes
    if parts_of(rel) is None:
        return None
    claim_id, crashes = parse_token(token)
    return claim_id, crashes, rel


def stray_name(name: str) -> str:
    """The inbox name for a stray: what follows ``=`` (the writer's part), visible (no leading
    dot, which scans skip); escapes stay as they are, so it is one plain name."""
    token, separator, rest = name.partition(SEPARATOR)
    return (rest if separator and rest else name).lstrip(".") or "unnamed"


def fitting_prefix(prefix: str, name: str) -> str:
    """``<prefix>-<name>``, cut to NAME_MAX bytes."""
    raw = os.fsencode(f"{prefix}-{name}")[:NAME_MAX]
    return os.fsdecode(raw)


def fitting(claim_id: str, name: str) -> str:
    """``name`` cut (keeping a short suffix) until ``flat_name(claim_id, name)`` fits NAME_MAX."""
    stem, dot, suffix = name.rpartition(".")
    suffix = f".{suffix}" if dot and stem and len(suffix) <= 16 else ""
    stem = name[: len(name) - len(suffix)]
    while len(os.fsencode(flat_name(claim_id, stem + suffix))) > NAME_MAX:
        stem = os.fsdecode(os.fsencode(stem)[:-8])
    return stem + suffix


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _lstat(folder_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=folder_fd)
    except FileNotFoundError:
        return None


def _exists(folder_fd: int, name: str) -> bool:
    return _lstat(folder_fd, name) is not None


def _files_below(root_fd: int, parts: list[str]) -> Iterator[list[str]]:
    """The paths (as parts) of everything but folders below ``parts``, walked by fds: a
    symlink is listed, never followed."""
    fd = open_folder(root_fd, parts)
    try:
        entries = sorted((entry.name, entry.is_dir(follow_symlinks=False)) for entry in os.scandir(fd))
    finally:
        os.close(fd)
    for name, is_dir in entries:
        if is_dir:
            yield from _files_below(root_fd, [*parts, name])
        else:
            yield [*parts, name]


def _remove_empty_folders(top: Path) -> None:
    """Remove ``top`` and the empty folders below it; anything else stays where it is."""
    for root, _, _ in os.walk(top, topdown=False):
        try:
            os.rmdir(root)
        except OSError:
            pass
