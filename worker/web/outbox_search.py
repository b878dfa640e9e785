"""Searching the outbox from the web page: rows by label, flag, folder and name, newest first, a
page at a time; one row with its review history; error records by kind, folder and name; rows
per minute for the page's chart.

Every search is bounded whatever the outbox holds: a page of rows reads at most ``SCAN_BYTES``
of the JSONL backwards from its cursor (a byte offset, given back as ``next``) and says where
to go on; the failures listed are the newest ``FAILURES_LISTED`` records' names at most. Only
the outbox's own files are read: nothing of a request is ever part of a path.
"""

from __future__ import annotations

import csv
import io
import os
import stat
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

from worker.outbox.lines import MAX_LINE_BYTES, RowRecord, error_record_from, row_from
from worker.outbox.records import ERROR_SUFFIX, FAILED_DIR, JSONL_NAME
from worker.outbox.reviews import MAX_LINE, REVIEWS_NAME, parse_decision
from worker.web.outbox_view import TAIL_BYTES, brief_row

# One page of a search reads at most this much of the JSONL (a row is about 400 bytes).
SCAN_BYTES = 4 * 2**20
# A CSV download holds at most this many rows (the newest of the view).
CSV_ROWS = 10_000
# The failures looked through: the newest this many error records' names.
FAILURES_LISTED = 20_000
# An error record is a few hundred bytes; a file bigger than this in failed/ is none.
ERROR_RECORD_BYTES = 64 * 1024
HISTORY_KEPT = 50


@dataclass(frozen=True)
class RowFilter:
    """What a row must be to be shown; None: anything. ``folder`` matches the folders of the
    row's file (``a`` matches ``a/x.png`` and ``a/b/x.png``), ``name`` any part of its path,
    in any case."""

    label: str | None = None
    flagged: bool | None = None
    folder: str | None = None
    name: str | None = None

    def matches(self, row: RowRecord) -> bool:
        return ((self.label is None or row["label"] == self.label)
                and (self.flagged is None or bool(row.get("review")) is self.flagged)
                and self.path_matches(row["file"]))

    def path_matches(self, file: str) -> bool:
        return ((self.folder is None or file.startswith(self.folder.strip("/") + "/"))
                and (self.name is None or self.name.casefold() in file.casefold()))


@dataclass(frozen=True)
class Found:
    rows: list[dict]
    next: int | None  # the cursor of the next page; None: the start of the file was reached


def search_rows(outbox: Path, wanted: RowFilter, limit: int, cursor: int | None = None,
                scan_bytes: int = SCAN_BYTES) -> Found:
    """Up to ``limit`` rows that match, newest first, from those that end before ``cursor``
    (the JSONL's end when None), reading at most ``scan_bytes``."""
    rows: list[dict] = []
    try:
        with open(outbox / JSONL_NAME, "rb") as fh:
            for start, line in _lines_before(fh, cursor, scan_bytes):
                if start is None:  # the scan's budget is spent: go on from here next time
                    return Found(rows, line)
                row = row_from(line)
                if row is not None and wanted.matches(row):
                    rows.append(brief_row(row))
                    if len(rows) == limit:
                        return Found(rows, start or None)
    except FileNotFoundError:
        pass
    return Found(rows, None)


def all_rows(outbox: Path, wanted: RowFilter, most: int = CSV_ROWS) -> Iterator[RowRecord]:
    """The rows that match, newest first, ``most`` at most (the whole JSONL read if need be,
    a block at a time)."""
    cursor, given = None, 0
    while True:
        try:
            with open(outbox / JSONL_NAME, "rb") as fh:
                lines = list(_lines_before(fh, cursor, SCAN_BYTES))
        except FileNotFoundError:
            return
        for start, line in lines:
            if start is None:
                cursor = line
                break
            row = row_from(line)
            if row is not None and wanted.matches(row):
                yield row
                given += 1
                if given == most:
                    return
        else:
            return


def _lines_before(fh, cursor: int | None, budget: int) -> Iterator[tuple[int | None, bytes | int]]:
    """(where each line starts, the line) for the whole lines that end before ``cursor``, last
    first, from at most ``budget`` bytes (more when the line before the cursor is longer, up to
    a row's longest); then, if the file goes on before them, (None, the cursor to go on from).
    What follows the last newline before the cursor is a line cut by it (or the JSONL's torn
    tail): never a row here. A line longer than any row is passed over, never held."""
    size = os.fstat(fh.fileno()).st_size
    end = size if cursor is None else max(0, min(cursor, size))
    while end > 0:
        start = max(0, end - budget)
        fh.seek(start)
        data = fh.read(end - start)
        last = data.rfind(b"\n")
        first = 0 if start == 0 else data.find(b"\n") + 1  # a line cut by ``start``: the next page's
        if last >= 0 and first <= last:
            break
        if start == 0:
            return  # only a line cut by the cursor
        if last + 1 > MAX_LINE_BYTES or end - start > 2 * MAX_LINE_BYTES + 2:
            yield None, start  # within a line longer than any row: go on before it
            return
        budget = end - start + MAX_LINE_BYTES + 1  # a row longer than the budget: read it whole
    else:
        return
    offset, position = start + first, last + 1 - first
    for line in reversed(data[first:last].split(b"\n")):
        position -= len(line) + 1
        yield offset + position, line
    if offset > 0:
        yield None, offset


def row_history(outbox: Path, row_id: str) -> list[dict]:
    """The decisions and undos on a row in reviews.jsonl, oldest first (the last
    ``HISTORY_KEPT``): label or undone, time, reviewer."""
    needle = orjson.dumps(row_id)
    kept: deque[dict] = deque(maxlen=HISTORY_KEPT)
    try:
        fh = open(outbox / REVIEWS_NAME, "rb")
    except FileNotFoundError:
        return []
    with fh:
        while line := fh.readline(MAX_LINE):
            if needle not in line or not line.endswith(b"\n") or parse_decision(line) is None:
                continue
            given = orjson.loads(line)
            if given["id"] == row_id:
                kept.append({key: given[key] for key in ("label", "undone", "time", "reviewer")
                             if isinstance(given.get(key), str)})
    return list(kept)


def search_failures(outbox: Path, *, kind: str | None, folder: str | None, name: str | None,
                    limit: int) -> list[dict]:
    """The newest error records that match (``kind`` exactly; ``folder`` and ``name`` as
    ``RowFilter`` takes them, against the quarantined file's path)."""
    wanted = RowFilter(folder=folder, name=name)
    found = []
    for _, rel in _error_record_names(outbox / FAILED_DIR):
        if not wanted.path_matches(rel[: -len(ERROR_SUFFIX)]):
            continue
        record = _read_error_record(outbox / FAILED_DIR / rel)
        if record is not None and kind in (None, record["kind"]):
            found.append(record)
            if len(found) == limit:
                break
    return found


def _error_record_names(failed: Path) -> list[tuple[float, str]]:
    """(mtime, path under ``failed``) of its error records, the newest ``FAILURES_LISTED``;
    symbolic links are not followed."""
    found: list[tuple[float, str]] = []
    for root, _dirs, files in os.walk(failed):
        for file in files:
            if file.endswith(ERROR_SUFFIX):
                path = os.path.join(root, file)
                try:
                    found.append((os.lstat(path).st_mtime, os.path.relpath(path, failed)))
                except OSError:
                    continue
        if len(found) > 2 * FAILURES_LISTED:
            found = sorted(found, reverse=True)[:FAILURES_LISTED]
    return sorted(found, reverse=True)[:FAILURES_LISTED]


def _read_error_record(path: Path) -> dict | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with open(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        data = fh.read(ERROR_RECORD_BYTES + 1)
    return error_record_from(data) if len(data) <= ERROR_RECORD_BYTES else None


def activity(outbox: Path, minutes: int, now: datetime | None = None) -> list[dict]:
    """Rows and flagged rows in each of the last ``minutes`` minutes (the current one last),
    from the JSONL's last ``TAIL_BYTES``."""
    now = now or datetime.now(timezone.utc)
    last = now.replace(second=0, microsecond=0)
    keys = [(last - timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M") for m in range(minutes - 1, -1, -1)]
    counts = {key: [0, 0] for key in keys}
    try:
        with open(outbox / JSONL_NAME, "rb") as fh:
            for _, line in _lines_before(fh, None, TAIL_BYTES):
                if isinstance(line, int):
                    break
                row = row_from(line)
                if row is not None and (count := counts.get(row["processed_at"][:16])) is not None:
                    count[0] += 1
                    count[1] += bool(row.get("review"))
    except FileNotFoundError:
        pass
    return [{"minute": f"{key}:00Z", "rows": rows, "flagged": flagged}
            for key, (rows, flagged) in counts.items()]


# A cell a spreadsheet would take for a formula starts with one of these: it gets a quote.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_lines(rows: Iterator[RowRecord], classes: list[str]) -> Iterator[str]:
    """The rows as CSV (RFC 4180), the model's classes' probabilities after the outbox's first
    columns; text that a spreadsheet would run as a formula starts with a quote."""
    head = ["file", "label", "confidence", "processed_at", "review", "model", "model_version", "id"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def line(values: list) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([_inert(v) for v in values])
        return buffer.getvalue()

    yield line(head + classes)
    for row in rows:
        probabilities = row["probabilities"]
        yield line([row.get(key, "") for key in head] + [probabilities.get(c, "") for c in classes])


def _inert(value: object) -> object:
    return f"'{value}" if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value
