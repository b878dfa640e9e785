"""What the web page shows of an outbox, read cheaply enough to poll: the newest rows from the
JSONL's tail (never the whole file), a file's row or error record, the newest failures, and a
review queue of the least sure among the recent rows not yet reviewed. Every line and record
is checked by ``outbox_lines`` as the report checks it: what is no row is passed over."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import orjson

from worker.outbox.lines import MAX_LINE_BYTES, RowRecord, error_record_from, row_from
from worker.outbox.records import ERROR_SUFFIX, FAILED_DIR, JSONL_NAME
from worker.outbox.reviews import read_reviews
from worker.report.summary import Caps, Summary, brief
from worker.report.truth import Truth

# ``row_by_id`` reads the JSONL backwards this much at a time.
BLOCK_BYTES = 1 << 20
# The newest rows are looked for in this much of the JSONL's end (a row is about 400 bytes).
TAIL_BYTES = 4 * 2**20


def newest_rows(outbox: Path, limit: int, tail_bytes: int = TAIL_BYTES) -> list[RowRecord]:
    """Up to ``limit`` rows, newest first."""
    return list(reversed(_tail(outbox / JSONL_NAME, tail_bytes)))[:limit]


def _tail(path: Path, tail_bytes: int, needle: bytes = b"") -> list[RowRecord]:
    """The rows in the last ``tail_bytes`` of the JSONL (those holding ``needle``, if given)."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - tail_bytes))
            data = fh.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if size > tail_bytes:
        lines = lines[1:]  # the first is cut
    rows = (row_from(line) for line in lines[:-1] if needle in line)  # the last is empty, or torn
    return [row for row in rows if row is not None]


def record_of(outbox: Path, name: str, sha256: str | None = None, *, largest: int = 2**30) -> dict | None:
    """The row (``{"row": ...}``) or error record (``{"error": ...}``) of an inbox file dropped
    from the page (``name``: a plain name, no path), once there is one. Given ``sha256``, only a
    record of those bytes is the file's (a row's ``sha256``; the quarantined input beside an
    error record); one of that name and other bytes (the file was replaced in the inbox before
    the daemon took it) is ``{"other": ...}``; an input over ``largest`` bytes (the upload
    limit) is not hashed, it is no upload. Polled: only lines that hold the name are parsed,
    and ``failed/`` is listed, never searched by pattern."""
    needle = orjson.dumps(name)[1:-1]  # the name as the JSONL spells it
    for row in reversed(_tail(outbox / JSONL_NAME, TAIL_BYTES, needle)):
        if row["file"] == name or row["file"].startswith(f"{name}#"):
            return {"row": row} if sha256 in (None, row.get("sha256")) else {"other": {"file": name}}
    other = None
    for path in _error_records_of(outbox / FAILED_DIR, name):
        record = _error_record(path)
        if record is None or record["file"] != name:
            continue
        if sha256 is None or _sha256_of(path.with_name(path.name[: -len(ERROR_SUFFIX)]), largest) == sha256:
            return {"error": record}
        other = {"other": {"file": name}}
    return other


def _sha256_of(path: Path, limit: int) -> str | None:
    """The sha256 of a regular file of at most ``limit`` bytes, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with open(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        digest = hashlib.sha256()
        while chunk := fh.read(BLOCK_BYTES):
            digest.update(chunk)
        return digest.hexdigest()


def _error_records_of(failed: Path, name: str) -> list[Path]:
    """The error records in ``failed/`` that may be of ``name``: its own, then those of the
    names the daemon gives a quarantined file when its own is taken (``x.<claim id>.png``)."""
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix else name
    try:
        with os.scandir(failed) as entries:
            found = [failed / e.name for e in entries
                     if e.name.endswith(ERROR_SUFFIX) and e.name.startswith(f"{stem}.")]
    except (FileNotFoundError, NotADirectoryError):
        return []
    own = failed / f"{name}{ERROR_SUFFIX}"
    return sorted(found, key=lambda path: path != own)


def row_by_id(outbox: Path, row_id: str) -> RowRecord | None:
    """The row with id ``row_id``, looked for from the JSONL's end (where the rows a person is
    shown are) back to its start, a block at a time: nothing is read whole, and a file cut
    short meanwhile (a torn tail repaired) only ends the search early."""
    needle = orjson.dumps(row_id)
    try:
        with open(outbox / JSONL_NAME, "rb") as fh:
            for line in lines_backwards(fh):
                if needle in line:
                    row = row_from(line)
                    if row is not None and row["id"] == row_id:
                        return row
    except FileNotFoundError:
        return None
    return None


def lines_backwards(fh, block: int = BLOCK_BYTES):
    """The newline-ended lines of ``fh``, last first (what follows the last newline is a torn
    line, left out); a line longer than ``MAX_LINE_BYTES`` (no row is) is dropped, not held."""
    end = os.fstat(fh.fileno()).st_size
    pending = b""  # the end of a line whose start lies in an earlier block
    in_tail, too_long = True, False
    while end > 0:
        start = max(0, end - block)
        fh.seek(start)
        parts = (fh.read(end - start) + pending).split(b"\n")
        end = start
        if in_tail:  # the last element is (part of) the torn tail
            in_tail = len(parts) == 1
            parts.pop()
        elif too_long:  # the last element is the start of a line already dropped
            too_long = len(parts) == 1
            parts.pop()
        if not parts:
            pending = b""
            continue
        pending = parts.pop(0) if start > 0 else b""
        if len(pending) > MAX_LINE_BYTES:
            pending, too_long = b"", True
        for line in reversed(parts):
            if len(line) <= MAX_LINE_BYTES:
                yield line + b"\n"
        if start == 0 and pending:
            yield pending + b"\n"


def newest_failures(outbox: Path, limit: int) -> list[dict]:
    failed = outbox / FAILED_DIR
    if not failed.is_dir():
        return []
    paths = sorted(failed.rglob(f"*{ERROR_SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True)[:limit]
    return [record for record in map(_error_record, paths) if record is not None]


def _error_record(path: Path) -> dict | None:
    try:
        return error_record_from(path.read_bytes())
    except OSError:
        return None


def review_queue(outbox: Path, limit: int) -> list[dict]:
    """The least sure of the recent rows that no one has reviewed yet."""
    reviewed = read_reviews(outbox)
    summary = Summary(Truth(None, outbox), Caps(review=limit))
    for row in _tail(outbox / JSONL_NAME, TAIL_BYTES):
        if row["id"] not in reviewed:
            summary.add_row(row)
    return summary.review_queue()


def brief_row(row: RowRecord) -> dict:
    return {**brief(row), "processed_at": row["processed_at"]}
