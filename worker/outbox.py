"""Durable records in the outbox: ``predictions.jsonl`` and ``predictions.csv``, and the
archive folders ``processed/`` and ``failed/``.

Durability: a batch is appended to the JSONL file and fsynced, then to the CSV file and fsynced,
and only then are its inputs moved out of ``.work/``. A crash can therefore leave, at most, a
torn last record (repaired at start by cutting the file back to its last whole record) and inputs
whose rows are already written (found again by their claim ``id`` and not written twice). Since
the JSONL file is always synced first, a row in the CSV implies the same row in the JSONL.
Daemons sharing an outbox take turns (an exclusive ``flock`` on the JSONL file) to write the CSV
header, append a batch to both files, or cut a torn tail, so the two files list rows in the same
order and no daemon ever mistakes another's half-written batch for a torn record.

Moves into ``processed/`` and ``failed/`` never overwrite: a second ``x.png`` becomes
``x.<id>.png``. The move is a hard link then an unlink, so a replay can tell by inode whether
the input already reached its (deterministic) destination.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from worker.errors import ConfigError

log = logging.getLogger(__name__)

# The claim id as ``Row.to_json`` writes it (json.dumps' default separators).
JSON_ID = re.compile(r'"id": "([^"\\]+)"')
FIXED_COLUMNS = [
    "file", "label", "confidence", "class_index", "sha256", "model", "processed_at", "id",
]


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

    def to_json(self) -> dict:
        return {
            "file": self.file, "label": self.label, "confidence": round(self.confidence, 6),
            "class_index": self.class_index, "sha256": self.sha256, "model": self.model,
            "processed_at": self.processed_at, "id": self.id, "probabilities": self.probabilities,
        }


def csv_columns(class_names: Iterable[str]) -> list[str]:
    return FIXED_COLUMNS + [f"p_{name}" for name in class_names]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


CHUNK = 1 << 20


def _csv_end(fh, size: int) -> int:
    """Where the last whole CSV record ends, streaming. Fast path: a file ending in CRLF with
    an even number of quotes ends on a record boundary (inside quotes the count is odd)."""
    quotes = 0
    while chunk := fh.read(CHUNK):
        quotes += chunk.count(b'"')
    fh.seek(max(0, size - 2))
    if quotes % 2 == 0 and fh.read(2) == b"\r\n":
        return size
    end = offset = quotes = 0
    fh.seek(0)
    for line in fh:  # split at b"\n"; a record ends at a CRLF with the quotes paired
        offset += len(line)
        quotes += line.count(b'"')
        if line.endswith(b"\r\n") and quotes % 2 == 0:
            end = offset
    return end


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


def repair_tail(path: Path, kind: str) -> int:
    """Cut a torn last record off ``path``; return the number of bytes removed."""
    if not path.exists():
        return 0
    with open(path, "rb+") as fh:
        size = os.fstat(fh.fileno()).st_size
        end = _csv_end(fh, size) if kind == "csv" else _jsonl_end(fh, size)
        if end == size:
            return 0
        fh.truncate(end)
        fh.flush()
        os.fsync(fh.fileno())
    log.warning("repaired %s: removed a torn last record (%d bytes)", path, size - end)
    return size - end


class Outbox:
    """The outbox folder. ``append`` makes a batch of rows durable in both files."""

    def __init__(self, root: Path, class_names: list[str]) -> None:
        self.root = Path(root)
        self.processed = self.root / "processed"
        self.failed = self.root / "failed"
        self.jsonl_path = self.root / "predictions.jsonl"
        self.csv_path = self.root / "predictions.csv"
        self.columns = csv_columns(class_names)
        try:
            for folder in (self.root, self.processed, self.failed):
                folder.mkdir(parents=True, exist_ok=True)
            self._jsonl = os.open(self.jsonl_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._csv = os.open(self.csv_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            with self._locked():
                self._repair_tails()
                self._check_header()
                if os.fstat(self._csv).st_size == 0:
                    self._write(self._csv, self._csv_text([], header=True))
        except OSError as exc:
            raise ConfigError(f"outbox {self.root} is not writable: {exc.strerror or exc}") from exc

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive use of both files among the daemons sharing this outbox."""
        fcntl.flock(self._jsonl, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._jsonl, fcntl.LOCK_UN)

    def _check_header(self) -> None:
        if not self.csv_path.exists() or self.csv_path.stat().st_size == 0:
            return
        with open(self.csv_path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
        if header != self.columns:
            raise ConfigError(
                f"{self.csv_path} has columns for another model ({', '.join(header[8:11])}…); "
                "use another --outbox for this model, or move the old files away"
            )

    def repair(self) -> None:
        """Cut torn tails after a failed write (disk full), so the next append starts clean."""
        with self._locked():
            self._repair_tails()

    def _repair_tails(self) -> None:
        repair_tail(self.jsonl_path, "jsonl")
        repair_tail(self.csv_path, "csv")

    def close(self) -> None:
        for fd in (self._jsonl, self._csv):
            os.close(fd)

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
        for row in rows:
            writer.writerow(
                [row.file, row.label, f"{row.confidence:.6f}", row.class_index, row.sha256,
                 row.model, row.processed_at, row.id,
                 *(f"{p:.6f}" for p in row.probabilities.values())]
            )
        return buffer.getvalue()

    def append(self, rows: list[Row], *, skip_csv: frozenset[str] = frozenset(),
               skip_jsonl: frozenset[str] = frozenset()) -> None:
        """Write rows durably: JSONL (fsync), then CSV (fsync). Ids in skip_* are already there."""
        jsonl_rows = [r for r in rows if r.id not in skip_jsonl]
        csv_rows = [r for r in rows if r.id not in skip_csv]
        lines = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in jsonl_rows)
        records = self._csv_text(csv_rows)
        with self._locked():
            if lines:
                self._write(self._jsonl, lines)
            if records:
                self._write(self._csv, records)

    def written_ids(self, wanted: set[str]) -> tuple[frozenset[str], frozenset[str]]:
        """Which of ``wanted`` claim ids already have a row in the CSV and in the JSONL."""
        if not wanted:
            return frozenset(), frozenset()
        in_jsonl = set()
        with open(self.jsonl_path, encoding="utf-8") as fh:
            for line in fh:
                match = JSON_ID.search(line)
                if match and match.group(1) in wanted:
                    in_jsonl.add(match.group(1))
        in_csv = set()
        id_column = self.columns.index("id")
        with open(self.csv_path, newline="", encoding="utf-8") as fh:
            for record in csv.reader(fh):
                if len(record) > id_column and record[id_column] in wanted:
                    in_csv.add(record[id_column])
        return frozenset(in_csv), frozenset(in_jsonl)


def _same_inode(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except FileNotFoundError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def destinations(folder: Path, rel: str, claim_id: str) -> Iterator[Path]:
    """The plain destination, then the one used if the plain one is taken (made only then:
    this runs once per archived file)."""
    plain = folder / rel
    yield plain
    suffix = "".join(plain.suffixes[-1:])
    stem = plain.name[: len(plain.name) - len(suffix)] if suffix else plain.name
    yield plain.with_name(f"{stem}.{claim_id}{suffix}")


_made_folders: set[str] = set()


def _make_parent(path: Path) -> None:
    """mkdir -p the parent once per process (a syscall per file adds up at 5,000 files/s).
    Keyed by string: making and hashing a Path's parent cost ~5 us a file, a sixth of the link."""
    parent = os.path.dirname(path)
    if parent not in _made_folders:
        os.makedirs(parent, exist_ok=True)
        _made_folders.add(parent)


def place(src: Path, folder: Path, rel: str, claim_id: str) -> Path:
    """Link ``src`` into ``folder/rel`` without overwriting (``x.<id>.png`` if taken) and
    return where it is; ``src`` stays. Idempotent: a replay finds the link it made before."""
    tried = []
    for dest in destinations(folder, rel, claim_id):
        tried.append(dest)
        _make_parent(dest)  # once per folder: both destinations share it
        try:
            os.link(src, dest, follow_symlinks=False)
            return dest
        except FileExistsError:
            if _same_inode(src, dest):  # a replay: the previous attempt got this far
                return dest
        except FileNotFoundError:  # the folder was removed under us: make it again
            _made_folders.discard(os.path.dirname(dest))
            _make_parent(dest)
            os.link(src, dest, follow_symlinks=False)
            return dest
        except OSError as exc:
            if exc.errno != errno.EXDEV:  # only "the outbox is on another file system" is ok
                raise
            if not dest.exists():
                shutil.copy2(src, dest, follow_symlinks=False)
                return dest
    raise FileExistsError(f"both {tried[0]} and {tried[1]} exist")


def move_unique(src: Path, folder: Path, rel: str, claim_id: str) -> Path:
    """Move ``src`` to ``folder/rel`` without overwriting; idempotent after a crash."""
    dest = place(src, folder, rel, claim_id)
    os.unlink(src)
    return dest


def write_error_record(path: Path, record: dict) -> None:
    """``<archived name>.error.json``, written atomically and synced."""
    target = path.with_name(path.name + ".error.json")
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh, ensure_ascii=False, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
