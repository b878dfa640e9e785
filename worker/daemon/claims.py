"""Claiming inbox files by atomic rename, Maildir-style, safe with several daemons on one inbox.

Each daemon has an id, a lock file ``.work/<id>.lock`` it holds with ``flock`` for its whole life
(``daemon_lock``), and a folder ``.work/<id>/`` (``work_folder``). Claiming ``inbox/a/x.png``
renames it to ``.work/<id>/<claim-id>=a%2Fx.png`` (the relative path with ``%`` and ``/``
escaped, ``claim``): one atomic rename, so of two daemons racing for one file exactly one wins,
and the claim keeps the exact relative path. A name too long for that form is claimed as
``.work/<id>/<claim-id>/a/x.png`` instead (two extra folder operations, which is why it is not
the usual form).

The kernel drops a ``flock`` when its process dies, even by kill -9. So at start (and at each
rescan) a daemon can tell a dead daemon's folder from a live one's: if it can take the lock, the
owner is gone, and its claims are adopted (renamed into our folder) and processed again
(``recovery``).

A writer of the inbox can reach ``.work`` too: ``Claims`` trusts nothing in it it has not
checked (see its docstring), and walks inbox paths by directory fds (``worker.safe_paths``).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from worker.daemon.claim import Claim, claim_name, new_id
from worker.daemon.recovery import Recovery
from worker.daemon.work_folder import WorkFolder, remove_empty_folders
from worker.safe_paths import exists_at, make_folders, parent_of

log = logging.getLogger(__name__)


class Claims:
    """Our claims, in ``.work/<owner>/``, reached through directory fds opened and checked here.

    ``.work`` and everything in it is the daemon's own state, which a writer of the inbox must
    not steer (Postfix's rule for its queue): ``.work`` and our folder must be folders (not
    symlinks) owned by us and writable by no one else, or they are set aside and made afresh
    (``WorkFolder``); a name in them that does not parse into a claim of a safe relative path
    is put back into the inbox as a plain drop, never acted on as a claim (``Recovery``); and
    every rename goes between open folders (``renameat``), so no symlink a writer swaps in on
    the way can redirect it.
    """

    def __init__(self, inbox: Path) -> None:
        self.folder = WorkFolder(inbox)
        self.inbox, self.work = self.folder.inbox, self.folder.work
        self.owner, self.mine = self.folder.owner, self.folder.mine
        self._recovery = Recovery(self.folder)

    def announce(self, **about: str | int) -> None:
        """Say in our lock file what this daemon serves (see ``WorkFolder.announce``)."""
        self.folder.announce(**about)

    def keep_in_place(self) -> None:
        """A checked ``.work`` again if a writer moved ours (see ``WorkFolder.keep_in_place``)."""
        self.folder.keep_in_place()

    def reopen(self) -> None:
        """The inbox was deleted (or unmounted) and is back: our lock and folder again."""
        self.folder.reopen()

    def close(self) -> None:
        """Give up our folder (it must be empty: unfinished claims stay for the next start)."""
        self.folder.close()

    def recover(self, skip: set[Path] = frozenset()) -> list[Claim]:
        """The claims a crash left, adopted into ours, but those at ``skip`` (see ``Recovery``)."""
        return self._recovery.recover(skip)

    def claim(self, rel: str, arrived: float | None = None) -> Claim | None:
        """Rename inbox/rel into our work folder; None if it is gone or another daemon won.
        Its folders are walked from the inbox without following a symlink: one swapped in
        since the scan fails the claim, so nothing outside the inbox is ever taken."""
        claim_id = new_id()
        try:
            with parent_of(self.folder.inbox_fd, rel) as (src_fd, src_name):
                return self._claim_from(src_fd, src_name, claim_id, rel, arrived)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("cannot claim %s: %s", rel, exc.strerror)
            return None

    def _claim_from(self, src_fd: int, src_name: str, claim_id: str, rel: str,
                    arrived: float | None) -> Claim | None:
        name, folder = claim_name(self.mine, claim_id, rel), None
        if name is not None:
            dest_fd, dest_name, path = self.folder.mine_fd, name, self.mine / name
        else:
            parts = rel.split("/")
            folder, path = self.mine / claim_id, self.mine / claim_id / rel
            dest_fd, dest_name = make_folders(self.folder.mine_fd, [claim_id, *parts[:-1]]), parts[-1]
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
                    remove_empty_folders(folder)
        return Claim(id=claim_id, rel=rel, path=path, folder=folder, arrived=arrived, size=info.st_size)

    def put_back(self, claim: Claim) -> bool:
        """Return a claimed file to its place in the inbox (its writer is not done with it);
        False if something else is there now, or its folder is gone or is no folder now."""
        try:
            with (parent_of(self.folder.inbox_fd, claim.rel) as (fd, name),
                  self._held(claim) as (src_fd, src_name)):
                if exists_at(fd, name):
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
        return parent_of(self.folder.mine_fd, claim.path.relative_to(self.mine).as_posix())

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
