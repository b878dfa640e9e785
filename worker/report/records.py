"""Reading an outbox for a report: rows and error records streamed one at a time, filtered.

A million-row outbox is never held in memory: ``predictions`` yields one row at a time (parsed
with orjson), and a line that is torn or not a row is counted in ``Skipped`` and passed over.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import orjson

from worker.errors import ConfigError
from worker.outbox import ERROR_SUFFIX, FAILED_DIR, JSONL_NAME, iso_utc

log = logging.getLogger(__name__)

ROW_FIELDS = ("file", "label", "confidence", "processed_at", "id", "probabilities")


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

    def describe(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def keeps_time(self, when: str) -> bool:
        return (self.since is None or when >= self.since) and (self.until is None or when < self.until)

    def keeps_file(self, file: str) -> bool:
        return self.folder is None or file.startswith(self.folder)

    def keeps_row(self, row: dict) -> bool:
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
    first: list[int] = field(default_factory=list)  # line numbers of the first few

    def add(self, number: int) -> None:
        self.lines += 1
        if len(self.first) < 5:
            self.first.append(number)


def predictions(outbox: Path, filters: Filters, skipped: Skipped) -> Iterator[dict]:
    """The rows that pass ``filters``, in file order."""
    path = outbox / JSONL_NAME
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            row = _row(line)
            if row is None:
                skipped.add(number)
            elif filters.keeps_row(row):
                yield row
    if skipped.lines:
        log.warning("%s: %d line(s) skipped, not rows (torn or damaged; first at line %s)",
                    path, skipped.lines, ", ".join(map(str, skipped.first)))


def _row(line: bytes) -> dict | None:
    if not line.endswith(b"\n"):
        return None  # a torn last line (a crash mid-write)
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(row, dict) or any(key not in row for key in ROW_FIELDS):
        return None
    return row


def error_records(outbox: Path, filters: Filters) -> Iterator[dict]:
    """The error records that pass ``filters``, in path order; an unreadable one as such."""
    for path in sorted((outbox / FAILED_DIR).rglob(f"*{ERROR_SUFFIX}")):
        try:
            record = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            record = {"file": path.name, "kind": "unreadable-record", "message": f"{path} cannot be read"}
        if isinstance(record, dict) and filters.keeps_error(record):
            yield record
