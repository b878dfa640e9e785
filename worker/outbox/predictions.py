"""The two files of predictions, ``predictions.jsonl`` and ``predictions.csv``, appended durably.

``append`` writes a batch to the JSONL file and fsyncs, then to the CSV file and fsyncs, and
only then are its inputs moved out of ``.work/``. A crash can therefore leave, at most, a torn
last record (cut at start, see ``repair.py``) and inputs whose rows are already written (found
again by their claim ``id``, ``written_ids``, and not written twice). Daemons sharing an outbox
take turns (an exclusive ``flock`` on the JSONL file) to write the CSV header, append a batch to
both files, or cut a torn tail, so the two files list rows in the same order and no daemon ever
mistakes another's half-written batch for a torn record.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from worker.outbox.records import CSV_NAME, JSON_ID, JSONL_NAME, CsvLayout, Row, claim_of, json_line
from worker.outbox.repair import csv_missing, csv_repaired, jsonl_repaired, set_aside

log = logging.getLogger(__name__)

# Both files are opened by name in the outbox's folder, never through a symlink; not blocking,
# so that a FIFO in their place is found out instead of waited on.
OPEN_FLAGS = (os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
              | os.O_CLOEXEC)
# Opening the files again after setting one aside: more rounds than that means someone keeps
# putting things in their place.
OPEN_ROUNDS = 5
# Row ids already in the CSV and in the JSONL (``PredictionFiles.written_ids``).
Written = tuple[set[str], set[str]]


class PredictionFiles:
    """Both files of the outbox folder ``root``, opened (made if missing) and checked; the CSV's
    columns are ``layout``'s, as its header has them."""

    def __init__(self, root: Path, layout: CsvLayout) -> None:
        self.root = root
        self.jsonl_path = root / JSONL_NAME
        self.csv_path = root / CSV_NAME
        self.layout = layout
        self._open_files()

    def close(self) -> None:
        self._close_files()
        os.close(self._dir)

    def append(self, rows: list[Row], *, written: Written = (set(), set())) -> None:
        """Write rows durably: JSONL (fsync), then CSV (fsync). On a replay (claims a crash
        left), ``written`` are the ids already in the CSV and in the JSONL (``written_ids``):
        they are not written to that file again."""
        skip_csv, skip_jsonl = written
        lines = "".join(
            json_line(r.to_json()) for r in rows if r.id not in skip_jsonl
        )
        records = self.layout.text([r for r in rows if r.id not in skip_csv])
        with self._locked():
            if lines:
                _write(self._jsonl, lines)
            if records:
                _write(self._csv, records)

    def written_ids(self, wanted: set[str]) -> Written:
        """The row ids of ``wanted`` claims (a document's pages too) already in the CSV and in
        the JSONL."""
        if not wanted:
            return set(), set()
        in_jsonl = set()
        with open(self.jsonl_path, encoding="utf-8") as fh:
            for line in fh:
                match = JSON_ID.search(line)
                if match and claim_of(match.group(1)) in wanted:
                    in_jsonl.add(match.group(1))
        in_csv = set()
        id_column = self.layout.columns.index("id")
        with open(self.csv_path, newline="", encoding="utf-8") as fh:
            for record in csv.reader(fh):
                if len(record) > id_column and claim_of(record[id_column]) in wanted:
                    in_csv.add(record[id_column])
        return in_csv, in_jsonl

    def repair(self) -> None:
        """Cut torn tails after a failed write (disk full), so the next append starts clean; a
        file that is not ours by now is set aside and new ones are opened."""
        with self._locked():
            kept = self._checked()
            if kept:
                self._complete_csv()
        if not kept:
            self._close_files()
            os.close(self._dir)
            self._open_files()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive use of both files among the daemons sharing this outbox."""
        fcntl.flock(self._jsonl, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._jsonl, fcntl.LOCK_UN)

    def _open_files(self) -> None:
        """Both files, opened by name in the outbox's folder (``_open_file``) and checked under
        the lock (``_checked``); a new CSV gets its header. A file set aside on the way leaves
        its name free: the files are opened again."""
        self._dir = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._jsonl = self._csv = -1
        try:
            for _ in range(OPEN_ROUNDS):
                if self._opened_and_checked():
                    return
            raise OSError(errno.EBUSY, f"{JSONL_NAME} or {CSV_NAME} keeps being replaced")
        except BaseException:
            self._close_files()
            os.close(self._dir)
            raise

    def _opened_and_checked(self) -> bool:
        self._jsonl = _open_file(self._dir, JSONL_NAME)
        self._csv = _open_file(self._dir, CSV_NAME)
        with self._locked():
            if self._checked():
                if os.fstat(self._csv).st_size == 0:
                    _write(self._csv, self.layout.text([], header=True))
                self._complete_csv()
                return True
        self._close_files()
        return False

    def _complete_csv(self) -> None:
        """Under the lock: a batch cut short after its JSONL write goes to the CSV now, before
        any later batch, so that both files hold the same rows in the same order."""
        missing = csv_missing(self._csv, self._jsonl, self.layout)
        if missing:
            _write(self._csv, self.layout.text(missing))
            log.warning("outbox %s: %d rows of a batch cut short were in %s only; written to %s too",
                        self.root, len(missing), JSONL_NAME, CSV_NAME)

    def _close_files(self) -> None:
        for fd in (self._jsonl, self._csv):
            if fd >= 0:
                os.close(fd)
        self._jsonl = self._csv = -1

    def _checked(self) -> bool:
        """Under the lock: both names still lead to the files we hold (another daemon of this
        outbox may have set one aside meanwhile), each in our format with a torn last record
        cut. One that is not ours is set aside; False then, and the files are opened anew."""
        if not (_named(self._dir, JSONL_NAME, self._jsonl) and _named(self._dir, CSV_NAME, self._csv)):
            return False
        checks = ((JSONL_NAME, lambda: jsonl_repaired(self._jsonl)),
                  (CSV_NAME, lambda: csv_repaired(self._csv, self._jsonl, self.layout)))
        for name, ours in checks:
            if not ours():
                set_aside(self._dir, name, "is not in the outbox's format (or not only a torn record)")
                return False
        return True


def _open_file(dir_fd: int, name: str) -> int:
    """``name`` in the outbox's folder, opened (made if missing) never through a symlink.
    Anything in its place that is not a regular file (a symlink, a folder, a FIFO) is set
    aside unopened: its target is never read or written."""
    for _ in range(OPEN_ROUNDS):
        try:
            found = os.lstat(name, dir_fd=dir_fd)
        except FileNotFoundError:
            found = None
        if found is not None and not stat.S_ISREG(found.st_mode):
            kind = "a symlink" if stat.S_ISLNK(found.st_mode) else "not a regular file"
            set_aside(dir_fd, name, f"is {kind}")
            continue
        try:
            fd = os.open(name, OPEN_FLAGS, 0o644, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):  # replaced since lstat
                continue
            raise
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        os.close(fd)
    raise OSError(errno.EBUSY, f"{name} keeps being replaced by something not a file")


def _named(dir_fd: int, name: str, fd: int) -> bool:
    try:
        found = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino)


def _write(fd: int, text: str) -> None:
    data = text.encode("utf-8")
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)
