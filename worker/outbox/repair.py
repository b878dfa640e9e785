"""Checking that the outbox's two files are ours, and cutting a torn last record.

A crash or a full disk can leave, at most, a torn last record: repair cuts the file back to its
last whole record. Since the JSONL file is always synced first, a row in the CSV implies the
same row in the JSONL. People read these files and save them back, so repair trusts nothing it
finds: it cuts only a torn record of our own format (of the CSV, only the start of a row the
JSONL holds whole) and sets aside whole, as ``<name>.unrecognised-<time>``, anything else in
the files' place. A batch cut short between its two writes (in the JSONL, not yet in the CSV)
is found at the next open (``csv_missing``) and its rows go to the CSV before anything else
does, so both files keep the same rows in the same order. The caller holds the outbox's lock
(``PredictionFiles``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime, timezone

from worker.outbox.records import CSV_NAME, JSON_START, JSONL_NAME, CsvLayout, Row
from worker.safe_paths import exists_at

log = logging.getLogger(__name__)
CHUNK = 1 << 20
# A torn CSV record is the start of a row of the batch being written; the JSONL, written first,
# holds that batch whole at its end. Read this much of it to find the row.
RECENT_JSONL = 16 * CHUNK
# What a file of the outbox that is not ours (another program's, a symlink, a folder) is renamed
# to, after its own name and before the time it was set aside.
SET_ASIDE = ".unrecognised-"


def jsonl_repaired(jsonl: int) -> bool:
    """Whether the JSONL is ours: empty, or starting as our records do; a torn last line
    (``_torn_json``) is cut. Anything else after the last newline makes it not ours."""
    size = os.fstat(jsonl).st_size
    with open(jsonl, "rb", closefd=False) as fh:
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
    _cut(jsonl, end, JSONL_NAME)
    return True


def csv_repaired(csv_fd: int, jsonl: int, layout: CsvLayout) -> bool:
    """Whether the CSV is ours: empty, a torn header of ours (cut, then written again), or
    our header (``layout.check_header``) and whole records, CRLF or LF ended (a spreadsheet
    saves LF). A torn last record is cut only if it is the start of a row the JSONL holds whole
    (``_torn_csv``); anything else after the last whole record makes the file not ours."""
    size = os.fstat(csv_fd).st_size
    if size == 0:
        return True
    with open(csv_fd, "rb", closefd=False) as fh:
        header = _first_record(fh)
        if header is None:
            return _torn_header(fh, size, csv_fd, layout)
        if not layout.check_header(_parsed(header)):
            return False
        end = _csv_end(fh, size)
        if end == size:
            return True
        fh.seek(end)
        if size - end > CHUNK or not _torn_csv(fh.read(size - end), jsonl, layout):
            return False
    _cut(csv_fd, end, CSV_NAME)
    return True


def csv_missing(csv_fd: int, jsonl: int, layout: CsvLayout) -> list[Row]:
    """The rows at the JSONL's end that the CSV lacks, oldest first: those after the newest
    row whose CSV record ends the CSV. None when no recent row ends it: a CSV of only its
    header (new, or rotated away alone), a file saved back in another way, a row deleted by
    hand. Nothing can be said then; the replay by claim id still writes each row once."""
    size = os.fstat(csv_fd).st_size
    with open(csv_fd, "rb", closefd=False) as fh:
        fh.seek(max(0, size - CHUNK))
        tail = fh.read()
    if tail == layout.text([], header=True).encode():
        return []  # no row to end on: the JSONL's rows are not read at all
    missing = []
    with open(jsonl, "rb", closefd=False) as fh:
        for row in _recent_rows(fh, os.fstat(jsonl).st_size):
            try:
                record = layout.text([row]).encode()
            except (KeyError, ValueError):
                return []  # a row of another model's classes: not this CSV's
            if tail.endswith(record) or tail.endswith(record.replace(b"\r\n", b"\n")):
                return missing[::-1]
            missing.append(row)
    return []


def _torn_header(fh, size: int, csv_fd: int, layout: CsvLayout) -> bool:
    """A CSV holding only the start of our header (a crash as the first daemon wrote it):
    cut, to be written again."""
    fh.seek(0)
    if size > CHUNK or not layout.text([], header=True).encode().startswith(fh.read(size)):
        return False
    _cut(csv_fd, 0, CSV_NAME)
    return True


def _torn_csv(tail: bytes, jsonl: int, layout: CsvLayout) -> bool:
    """Whether ``tail`` is the start of the CSV record of one of the JSONL's last rows: only
    a batch cut short can leave that (the JSONL is written and synced first). A whole
    record short of its line end only may as well be another program's last line, which
    a spreadsheet may save without one: not cut."""
    with open(jsonl, "rb", closefd=False) as fh:
        for row in _recent_rows(fh, os.fstat(jsonl).st_size):
            record = layout.text([row]).encode()
            if record.startswith(tail) and len(tail) != len(record) - len(b"\r\n"):
                return True
    return False


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


def set_aside(dir_fd: int, name: str, why: str) -> None:
    """Rename ``name`` in the outbox to ``<name>.unrecognised-<time>`` beside it, whatever it
    is (a file, a symlink, a folder), never reading or writing through it; a new file starts
    in its place. Nothing a person or program left there is cut or overwritten."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    aside, n = f"{name}{SET_ASIDE}{stamp}", 0
    while exists_at(dir_fd, aside):
        n += 1
        aside = f"{name}{SET_ASIDE}{stamp}-{n}"
    try:
        os.rename(name, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except FileNotFoundError:
        return  # another daemon of this outbox set it aside first
    log.warning("outbox %s %s: set aside as %s, a new one starts", name, why, aside)
