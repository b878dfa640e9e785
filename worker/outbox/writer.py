"""The outbox: durable records (``predictions.jsonl``, ``predictions.csv``), the archive of
inputs (``processed/``) and the quarantine of refused ones (``failed/`` with ``.error.json``).

Its verbs are the daemon's last steps for a batch: ``record`` the rows, then ``archive`` each
classified input and ``quarantine`` each refused one. Everything here is named once: readers
(``report.py``) take the file names from this module.

Durability: ``record`` appends a batch to the JSONL file and fsyncs, then to the CSV file and
fsyncs, and only then are its inputs moved out of ``.work/``. A crash can therefore leave, at
most, a torn last record (repaired at start by cutting the file back to its last whole record)
and inputs whose rows are already written (found again by their claim ``id`` and not written
twice). Since the JSONL file is always synced first, a row in the CSV implies the same row in the
JSONL. People read these files and save them back, so repair trusts nothing it finds: it cuts
only a torn record of our own format (of the CSV, only the start of a row the JSONL holds whole)
and sets aside whole, as ``<name>.unrecognised-<time>``, anything else in the files' place.
Daemons sharing an outbox take turns (an exclusive ``flock`` on the JSONL file) to write
the CSV header, append a batch to both files, or cut a torn tail, so the two files list rows in
the same order and no daemon ever mistakes another's half-written batch for a torn record.

Archiving never overwrites: a second ``x.png`` becomes ``x.<id>.png`` (see ``files.place``).
"""

from __future__ import annotations

import base64
import csv
import errno
import fcntl
import io
import json
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from worker.archive import Folder, is_disk_trouble, move_unique, place, relative_destinations
from worker.errors import ConfigError, InputError
from worker.files import unlink_quietly
from worker.link_or_copy import TooBig

if TYPE_CHECKING:  # readers such as report.py need no model code
    from worker.model.classifier import Prediction

log = logging.getLogger(__name__)
# A CSV cell may be as long as a relative path (--recursive reaches past PATH_MAX) or whatever a
# person pasted into the file: the csv module's default cell limit (128 Ki characters) would make
# reading our own outbox back fail, at every start.
csv.field_size_limit(2**31 - 1)

JSONL_NAME = "predictions.jsonl"
CSV_NAME = "predictions.csv"
PROCESSED_DIR = "processed"
FAILED_DIR = "failed"
ERROR_SUFFIX = ".error.json"

# Characters that str.splitlines() and some editors take for line ends, though JSON leaves them
# as they are in a string: escaped, so that one line of the JSONL is one row to any reader.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


# json.dumps with any option makes a new encoder per call: one, made once, for every row.
_ENCODER = json.JSONEncoder(ensure_ascii=False)


def json_line(record: dict) -> str:
    text = _ENCODER.encode(record)
    # The line breaks to escape are all outside ASCII: an ASCII row (most rows) has none.
    return (text if text.isascii() else text.translate(_LINE_BREAKS)) + "\n"


# The claim id as ``Row.to_json`` writes it (json.dumps' default separators).
JSON_ID = re.compile(r'"id": "([^"\\]+)"')
FIXED_COLUMNS = [
    "file", "label", "confidence", "class_index", "sha256", "model", "processed_at", "id",
]
# Columns added since, at the end, after the per-class probabilities, in the order they came.
LATER_COLUMNS = ["model_version", "review", "review_score"]
CHUNK = 1 << 20
# How every record of ours begins (``Row.to_json``'s first key, json's separators): a JSONL file
# starting otherwise is not ours, and a torn record starts so.
JSON_START = b'{"file": '
# A torn CSV record is the start of a row of the batch being written; the JSONL, written first,
# holds that batch whole at its end. Read this much of it to find the row.
RECENT_JSONL = 16 * CHUNK
# What a file of the outbox that is not ours (another program's, a symlink, a folder) is renamed
# to, after its own name and before the time it was set aside.
SET_ASIDE = ".unrecognised-"
# Both files are opened by name in the outbox's folder, never through a symlink; not blocking,
# so that a FIFO in their place is found out instead of waited on.
OPEN_FLAGS = (os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
              | os.O_CLOEXEC)
# Opening the files again after setting one aside: more rounds than that means someone keeps
# putting things in their place.
OPEN_ROUNDS = 5
# OWASP's CSV injection guidance: a cell starting with one of these is a formula to a
# spreadsheet (tab and carriage return too, as some strip them first).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Row ids already in the CSV and in the JSONL (``Outbox.written_ids``).
Written = tuple[set[str], set[str]]


def page_id(claim_id: str, page: int, first: bool) -> str:
    """A document's row ids: its first page with ink has the claim's id, so that "this claim
    has a row" reads the same for images and documents; the others ``<claim id>#<page>``."""
    return claim_id if first else f"{claim_id}#{page}"


def claim_of(row_id: str) -> str:
    return row_id.partition("#")[0]


@dataclass(frozen=True)
class Row:
    id: str
    file: str  # relative to the inbox, "/" separated
    label: str
    confidence: float
    class_index: int
    sha256: str
    model: str
    processed_at: str
    probabilities: dict[str, float]
    model_version: str = ""
    page: int | None = None  # a document's page (``file`` then ends in ``#<page>``); JSONL only
    review: str = ""  # review_flag's reasons, space separated, as both files write them
    review_score: float | None = None

    @classmethod
    def of(cls, prediction: Prediction, *, claim_id: str, file: str, sha256: str, model: str,
           model_version: str, processed_at: str, class_names: list[str], page: int | None = None) -> Row:
        return cls(
            id=claim_id, file=file, label=prediction.label, confidence=prediction.confidence,
            class_index=prediction.class_index, sha256=sha256, model=model,
            processed_at=processed_at,
            probabilities=dict(zip(class_names, prediction.probabilities, strict=True)),
            model_version=model_version, page=page,
            review=" ".join(prediction.review), review_score=prediction.review_score,
        )

    def to_json(self) -> dict:
        record = {
            "file": self.file, "label": self.label, "confidence": round(self.confidence, 6),
            "class_index": self.class_index, "sha256": self.sha256, "model": self.model,
            "processed_at": self.processed_at, "id": self.id, "probabilities": self.probabilities,
            "model_version": self.model_version, "review": self.review,
            "review_score": self.review_score,
        }
        if self.page is not None:
            record["page"] = self.page
        return record if self.file.isascii() else {**record, **name_fields(self.file)}

    @classmethod
    def from_json(cls, record: dict) -> Row:
        """A JSONL record read back as a row (its ``file`` as ``readable`` shows it, which is
        what the CSV has): raises KeyError, TypeError or ValueError for anything else."""
        probabilities = {str(k): float(v) for k, v in record["probabilities"].items()}
        score, page = record.get("review_score"), record.get("page")
        return cls(
            id=str(record["id"]), file=str(record["file"]), label=str(record["label"]),
            confidence=float(record["confidence"]), class_index=int(record["class_index"]),
            sha256=str(record["sha256"]), model=str(record["model"]),
            processed_at=str(record["processed_at"]), probabilities=probabilities,
            model_version=str(record.get("model_version", "")), page=None if page is None else int(page),
            review=str(record.get("review", "")), review_score=None if score is None else float(score),
        )

    def to_csv(self, *, later: int = len(LATER_COLUMNS)) -> list:
        """The CSV fields; of ``LATER_COLUMNS`` the first ``later`` (what the file's header has)."""
        fields = [
            spreadsheet_safe(readable(self.file)), self.label, f"{self.confidence:.6f}",
            self.class_index, self.sha256,
            self.model, self.processed_at, self.id, *(f"{p:.6f}" for p in self.probabilities.values()),
        ]
        score = "" if self.review_score is None else f"{self.review_score:.3f}"
        return fields + [self.model_version, self.review, score][:later]


def readable(text: str) -> str:
    """A file name (or a message naming one) as the outbox writes it: bytes of the name that are
    not UTF-8, which Python keeps as surrogate escapes, shown as ``\\xNN``. The JSON records
    carry the exact name too, in ``file_bytes`` (see ``name_fields``)."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def spreadsheet_safe(cell: str) -> str:
    """A CSV cell whose text an inbox writer chose (a file name): one a spreadsheet would run as
    a formula (``=HYPERLINK(...)``) gets a leading ``'``, as OWASP recommends, which spreadsheets
    show as text. Labels and model names come from the model card, ours, and are written as they
    are. The JSONL keeps the exact name."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def name_fields(file: str) -> dict:
    """``file`` for a JSON record, plus ``file_bytes`` (base64 of the name's bytes) when the
    name is not UTF-8, so that it can be told apart from a name that contains ``\\x``."""
    shown = readable(file)
    if shown == file:
        return {"file": file}
    return {"file": shown, "file_bytes": base64.b64encode(os.fsencode(file)).decode("ascii")}


def iso_utc(timestamp: float) -> str:
    """How rows and error records give times: ISO 8601, UTC, to the millisecond."""
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def csv_columns(class_names: Iterable[str], *, later: int = len(LATER_COLUMNS)) -> list[str]:
    return FIXED_COLUMNS + [f"p_{name}" for name in class_names] + LATER_COLUMNS[:later]


def error_record(error: InputError, *, claim_id: str, file: str, time: str, model: str,
                 model_version: str = "") -> dict:
    """What ``<name>.error.json`` holds: the file, why it was refused, when, by which model."""
    return {"file": readable(file), "kind": error.kind, "message": readable(error.message),
            "time": time, "id": claim_id, "model": model, "model_version": model_version,
            **name_fields(file)}


def _csv_end(fh, size: int) -> int:
    """Where the last whole CSV record ends, streaming: just past a line end outside quotes,
    CRLF as we write it or LF as a spreadsheet or pandas saves the file back on Linux. Fast
    path: a file ending in a line end with an even number of quotes ends on a record boundary
    (inside quotes the count is odd)."""
    quotes = 0
    fh.seek(0)
    while chunk := fh.read(CHUNK):
        quotes += chunk.count(b'"')
    fh.seek(max(0, size - 1))
    if quotes % 2 == 0 and fh.read(1) == b"\n":
        return size
    end = offset = quotes = 0
    fh.seek(0)
    for line in fh:  # split at b"\n"; a record ends at a line end with the quotes paired
        offset += len(line)
        quotes += line.count(b'"')
        if line.endswith(b"\n") and quotes % 2 == 0:
            end = offset
    return end


def _first_record(fh) -> bytes | None:
    """The CSV's first record (its header) with its line end, or None if no whole record
    starts the file within the longest header a model of ours could have."""
    fh.seek(0)
    quotes = offset = 0
    for line in io.BytesIO(fh.read(CHUNK)):
        offset += len(line)
        quotes += line.count(b'"')
        if line.endswith(b"\n") and quotes % 2 == 0:
            fh.seek(0)
            return fh.read(offset)
    return None


def _parsed(record: bytes) -> list[str]:
    try:
        return next(csv.reader(io.StringIO(record.decode("utf-8"), newline="")), [])
    except (UnicodeDecodeError, csv.Error):
        return []


def _jsonl_end(fh, size: int) -> int:
    """Where the last whole JSON line ends: just past the last newline (JSON escapes its own)."""
    position = size
    while position > 0:
        start = max(0, position - CHUNK)
        fh.seek(start)
        newline = fh.read(position - start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        position = start
    return 0


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


def _torn_json(tail: bytes) -> bool:
    """Whether ``tail`` (what follows the JSONL's last newline) can be a torn record of ours:
    the start of a line as ``json_line`` writes it, and not a whole record (a whole one that
    merely lacks its newline is not ours to cut)."""
    if tail[:len(JSON_START)] != JSON_START[:len(tail)] or len(tail) > CHUNK:
        return False
    try:
        json.loads(tail)
    except ValueError:
        return True
    return False


def _recent_rows(fh, size: int) -> Iterator[Row]:
    """The JSONL's last rows, newest first, parsed into typed rows; lines that are not rows of
    ours are skipped. Only the last ``RECENT_JSONL`` bytes are read."""
    start = max(0, size - RECENT_JSONL)
    fh.seek(start)
    lines = fh.read(size - start).split(b"\n")
    for line in reversed(lines[1:] if start else lines):
        try:
            yield Row.from_json(json.loads(line))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue


def _cut(fd: int, end: int, name: str) -> None:
    removed = os.fstat(fd).st_size - end
    os.ftruncate(fd, end)
    os.fsync(fd)
    log.warning("repaired %s: removed a torn last record (%d bytes)", name, removed)


def _set_aside(dir_fd: int, name: str, why: str) -> None:
    """Rename ``name`` in the outbox to ``<name>.unrecognised-<time>`` beside it, whatever it
    is (a file, a symlink, a folder), never reading or writing through it; a new file starts
    in its place. Nothing a person or program left there is cut or overwritten."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    aside, n = f"{name}{SET_ASIDE}{stamp}", 0
    while _exists(aside, dir_fd):
        n += 1
        aside = f"{name}{SET_ASIDE}{stamp}-{n}"
    try:
        os.rename(name, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except FileNotFoundError:
        return  # another daemon of this outbox set it aside first
    log.warning("outbox %s %s: set aside as %s, a new one starts", name, why, aside)


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


class Outbox:
    """The outbox folder, opened for one model's rows (``class_names`` make the CSV columns)."""

    def __init__(self, root: Path, class_names: list[str], *, on_success: str = "keep") -> None:
        self.root = Path(root)
        self.processed = self.root / PROCESSED_DIR
        self.failed = self.root / FAILED_DIR
        self.jsonl_path = self.root / JSONL_NAME
        self.csv_path = self.root / CSV_NAME
        self.class_names = list(class_names)
        self.columns = csv_columns(class_names)
        self.later = len(LATER_COLUMNS)  # fewer for an outbox started before some (_check_header)
        self.keep_inputs = on_success == "keep"
        try:
            self._open()
        except OSError as exc:
            raise ConfigError(f"outbox {self.root} is not writable: {exc.strerror or exc}") from exc

    def _open(self) -> None:
        self.columns, self.later = csv_columns(self.class_names), len(LATER_COLUMNS)
        self.root.mkdir(parents=True, exist_ok=True)
        self._processed_folder = _own_folder(self.processed)
        self._failed_folder = _own_folder(self.failed)
        self._open_files()

    def close(self) -> None:
        self._close_files()
        os.close(self._dir)
        self._processed_folder.close()
        self._failed_folder.close()

    def reopen(self) -> None:
        """Open the files again by name: after log rotation moved them away, new ones start
        (with the CSV header); rows never go on into the moved files."""
        self.close()
        self._open()

    # --- the verbs ------------------------------------------------------------------------

    def record(self, rows: list[Row], *, written: Written = (set(), set())) -> None:
        """Write rows durably: JSONL (fsync), then CSV (fsync). On a replay (claims a crash
        left), ``written`` are the ids already in the CSV and in the JSONL (``written_ids``):
        they are not written to that file again."""
        skip_csv, skip_jsonl = written
        lines = "".join(
            json_line(r.to_json()) for r in rows if r.id not in skip_jsonl
        )
        records = self._csv_text([r for r in rows if r.id not in skip_csv])
        with self._locked():
            if lines:
                self._write(self._jsonl, lines)
            if records:
                self._write(self._csv, records)

    def archive(self, src: Path, rel: str, claim_id: str) -> None:
        """A classified input leaves ``.work/``: into ``processed/``, or deleted (--on-success)."""
        if self.keep_inputs:
            move_unique(src, self._processed_folder, rel, claim_id)
        else:
            os.unlink(src)

    def quarantine(self, src: Path, rel: str, claim_id: str, record: dict, *,
                   too_big: Path | None = None) -> Path:
        """A refused input goes to ``failed/`` with its ``.error.json`` beside it. One larger
        than the outbox's whole file system (a 2 GB file, a small outbox disk) goes to the
        ``too_big`` folder on its own file system instead, its error record saying where."""
        reserve = len(os.fsencode(ERROR_SUFFIX))
        try:
            beside = [self._failed_folder.place(src, rel, claim_id, reserve=reserve)]
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
                self._failed_folder.write_atomic(dest + ERROR_SUFFIX, text)
                return dest
            except OSError as exc:
                if is_disk_trouble(exc):
                    raise
        self._failed_folder.write_atomic(beside[-1] + ERROR_SUFFIX, text)
        return beside[-1]

    # --- recovery -------------------------------------------------------------------------

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
        id_column = self.columns.index("id")
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
        if not kept:
            self._close_files()
            os.close(self._dir)
            self._open_files()

    # --- inside -----------------------------------------------------------------------------

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
        self._jsonl = self._open_file(JSONL_NAME)
        self._csv = self._open_file(CSV_NAME)
        with self._locked():
            if self._checked():
                if os.fstat(self._csv).st_size == 0:
                    self._write(self._csv, self._csv_text([], header=True))
                return True
        self._close_files()
        return False

    def _open_file(self, name: str) -> int:
        """``name`` in the outbox's folder, opened (made if missing) never through a symlink.
        Anything in its place that is not a regular file (a symlink, a folder, a FIFO) is set
        aside unopened: its target is never read or written."""
        for _ in range(OPEN_ROUNDS):
            try:
                found = os.lstat(name, dir_fd=self._dir)
            except FileNotFoundError:
                found = None
            if found is not None and not stat.S_ISREG(found.st_mode):
                kind = "a symlink" if stat.S_ISLNK(found.st_mode) else "not a regular file"
                _set_aside(self._dir, name, f"is {kind}")
                continue
            try:
                fd = os.open(name, OPEN_FLAGS, 0o644, dir_fd=self._dir)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):  # replaced since lstat
                    continue
                raise
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return fd
            os.close(fd)
        raise OSError(errno.EBUSY, f"{name} keeps being replaced by something not a file")

    def _close_files(self) -> None:
        for fd in (self._jsonl, self._csv):
            if fd >= 0:
                os.close(fd)
        self._jsonl = self._csv = -1

    def _checked(self) -> bool:
        """Under the lock: both names still lead to the files we hold (another daemon of this
        outbox may have set one aside meanwhile), each in our format with a torn last record
        cut. One that is not ours is set aside; False then, and the files are opened anew."""
        if not (self._named(JSONL_NAME, self._jsonl) and self._named(CSV_NAME, self._csv)):
            return False
        for name, ours in ((JSONL_NAME, self._jsonl_repaired), (CSV_NAME, self._csv_repaired)):
            if not ours():
                _set_aside(self._dir, name, "is not in the outbox's format (or not only a torn record)")
                return False
        return True

    def _named(self, name: str, fd: int) -> bool:
        try:
            found = os.lstat(name, dir_fd=self._dir)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino)

    def _jsonl_repaired(self) -> bool:
        """Whether the JSONL is ours: empty, or starting as our records do; a torn last line
        (``_torn_json``) is cut. Anything else after the last newline makes it not ours."""
        size = os.fstat(self._jsonl).st_size
        with open(self._jsonl, "rb", closefd=False) as fh:
            fh.seek(0)
            start = fh.read(len(JSON_START))
            if start != JSON_START[:len(start)]:
                return False
            end = _jsonl_end(fh, size)
            if end == size:
                return True
            fh.seek(end)
            if not _torn_json(fh.read(min(size - end, CHUNK + 1))):
                return False
        _cut(self._jsonl, end, JSONL_NAME)
        return True

    def _csv_repaired(self) -> bool:
        """Whether the CSV is ours: empty, a torn header of ours (cut, then written again), or
        our header (``_check_header``) and whole records, CRLF or LF ended (a spreadsheet saves
        LF). A torn last record is cut only if it is the start of a row the JSONL holds whole
        (``_torn_csv``); anything else after the last whole record makes the file not ours."""
        size = os.fstat(self._csv).st_size
        if size == 0:
            return True
        with open(self._csv, "rb", closefd=False) as fh:
            header = _first_record(fh)
            if header is None:
                return self._torn_header(fh, size)
            if not self._check_header(_parsed(header)):
                return False
            end = _csv_end(fh, size)
            if end == size:
                return True
            fh.seek(end)
            if size - end > CHUNK or not self._torn_csv(fh.read(size - end)):
                return False
        _cut(self._csv, end, CSV_NAME)
        return True

    def _torn_header(self, fh, size: int) -> bool:
        """A CSV holding only the start of our header (a crash as the first daemon wrote it):
        cut, to be written again."""
        fh.seek(0)
        if size > CHUNK or not self._csv_text([], header=True).encode().startswith(fh.read(size)):
            return False
        _cut(self._csv, 0, CSV_NAME)
        return True

    def _torn_csv(self, tail: bytes) -> bool:
        """Whether ``tail`` is the start of the CSV record of one of the JSONL's last rows: only
        a batch cut short can leave that (the JSONL is written and synced first). A whole
        record short of its line end only may as well be another program's last line, which
        a spreadsheet may save without one: not cut."""
        with open(self._jsonl, "rb", closefd=False) as fh:
            for row in _recent_rows(fh, os.fstat(self._jsonl).st_size):
                record = self._csv_text([row]).encode()
                if record.startswith(tail) and len(tail) != len(record) - len(b"\r\n"):
                    return True
        return False

    def _check_header(self, header: list[str]) -> bool:
        """Whether the CSV's header is ours, by the header upgrade rule: a CSV started before
        some of the later columns keeps its header and gets rows without those (its readers
        keep working; the JSONL has every field); a new CSV gets them all. A header of our
        columns for other classes is another model's outbox: refused. Any other header is
        another program's file (False)."""
        known = [k for k in range(len(LATER_COLUMNS) + 1)
                 if header == csv_columns(self.class_names, later=k)]
        if known:
            self.columns, self.later = header, known[0]
            if known[0] < len(LATER_COLUMNS):
                log.info("%s predates the %s column(s): kept as it is (the JSONL has them)",
                         self.csv_path, ", ".join(LATER_COLUMNS[known[0]:]))
            return True
        if header[:len(FIXED_COLUMNS)] == FIXED_COLUMNS:
            raise ConfigError(
                f"{self.csv_path} has columns for another model ({', '.join(header[8:11])}…); "
                "use another --outbox for this model, or move the old files away"
            )
        return False

    @staticmethod
    def _write(fd: int, text: str) -> None:
        data = text.encode("utf-8")
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)

    def _csv_text(self, rows: list[Row], *, header: bool = False) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        if header:
            writer.writerow(self.columns)
        writer.writerows(row.to_csv(later=self.later) for row in rows)
        return buffer.getvalue()
