"""Reading an outbox for a report: rows and error records streamed one at a time, filtered.

A million-row outbox is never held in memory: ``predictions`` yields one row at a time (each
line parsed and checked by ``outbox_lines``), and a line that is torn, too long or not a row is
counted in ``Skipped`` and passed over.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import orjson
from orjson import JSONDecodeError, loads

from worker.errors import ConfigError
from worker.outbox.lines import MAX_LINE_BYTES, RowRecord, row_of, skip_line
from worker.outbox.records import ERROR_SUFFIX, FAILED_DIR, iso_utc

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Filters:
    """Which records a report covers. Times are the outbox's (ISO 8601 UTC, millisecond)."""

    since: str | None = None  # inclusive
    until: str | None = None  # exclusive
    model: str | None = None  # a model's name or version
    label: str | None = None  # the predicted label (error records have none: left out)
    folder: str | None = None  # a prefix of the inbox-relative path, folder by folder

    @classmethod
    def parse(cls, *, since: str | None = None, until: str | None = None, model: str | None = None,
              label: str | None = None, folder: str | None = None) -> Filters:
        """From the command line: ``--since 2026-11-01`` is from that day's start, ``--until
        2026-11-30`` through that day's end; a time without a zone is UTC."""
        folder = folder.strip("/") + "/" if folder and folder.strip("/") else None
        return cls(_when(since, "--since"), _when(until, "--until", end_of_day=True), model, label, folder)

    @property
    def active(self) -> bool:
        return any(value is not None for value in self.__dict__.values())

    def describe(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def keeps_time(self, when: str) -> bool:
        return (self.since is None or when >= self.since) and (self.until is None or when < self.until)

    def keeps_file(self, file: str) -> bool:
        return self.folder is None or file.startswith(self.folder)

    def keeps_row(self, row: RowRecord) -> bool:
        return (
            self.keeps_time(row["processed_at"]) and self.keeps_file(row["file"])
            and (self.label is None or row["label"] == self.label)
            and (self.model is None or self.model in (row.get("model"), row.get("model_version")))
        )

    def keeps_error(self, record: dict) -> bool:
        return (
            self.label is None and self.keeps_time(str(record.get("time", "")))
            and self.keeps_file(str(record.get("file", "")))
            and (self.model is None or self.model in (record.get("model"), record.get("model_version")))
        )


def _when(text: str | None, option: str, *, end_of_day: bool = False) -> str | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not a date or time "
                          "(e.g. 2026-11-30 or 2026-11-30T14:00)") from None
    if end_of_day and len(text) == 10:  # a date alone: through the end of that day
        moment = datetime.combine(moment.date() + timedelta(days=1), time())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return iso_utc(moment.timestamp())


@dataclass
class Skipped:
    """Lines of the JSONL that are no rows: a torn last line, or damage."""

    lines: int = 0
    first: list[int] = field(default_factory=list)  # byte offsets of the first few

    def add(self, offset: int) -> None:
        self.lines += 1
        if len(self.first) < 5:
            self.first.append(offset)

    def merge(self, other: Skipped) -> None:
        self.lines += other.lines
        self.first = (self.first + other.first)[:5]

    def warn(self, path: Path) -> None:
        if self.lines:
            log.warning("%s: %d line(s) skipped, not rows (torn or damaged; the first at byte %s)",
                        path, self.lines, ", ".join(map(str, self.first)))


def parts(path: Path, count: int) -> list[tuple[int, int]]:
    """``count`` byte ranges of the file that together cover it, each ending at a line's end."""
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as fh:
        for k in range(1, count):
            fh.seek(max(size * k // count, cuts[-1]))
            skip_line(fh)
            cuts.append(min(fh.tell(), size))
    cuts.append(size)
    return [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def predictions(path: Path, filters: Filters, skipped: Skipped, start: int = 0,
                end: int | None = None) -> Iterator[RowRecord]:
    """The rows that pass ``filters``, in file order: those of the lines that begin in
    [``start``, ``end``) bytes of the JSONL at ``path`` (all of them by default). Each line is
    checked by ``outbox_lines`` (spelled out here, not called line by line: a million pass)."""
    keeps = filters.keeps_row if filters.active else None
    end = float("inf") if end is None else end
    offset = start
    with open(path, "rb") as fh:
        fh.seek(start)
        readline = fh.readline
        while offset < end:
            line = readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            length = len(line)
            if line[-1:] != b"\n":  # too long (passed over), or a torn last line
                length += skip_line(fh)
                row = None
            else:
                try:
                    row = row_of(loads(line))
                except JSONDecodeError:
                    row = None
            if row is None:
                skipped.add(offset)
            elif keeps is None or keeps(row):
                yield row
            offset += length


def error_records(outbox: Path, filters: Filters) -> Iterator[dict]:
    """The error records that pass ``filters``, in path order; an unreadable one as such."""
    for path in sorted((outbox / FAILED_DIR).rglob(f"*{ERROR_SUFFIX}")):
        try:
            record = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            record = {"file": path.name, "kind": "unreadable-record", "message": f"{path} cannot be read"}
        if isinstance(record, dict) and filters.keeps_error(record):
            yield record
