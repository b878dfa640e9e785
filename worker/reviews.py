"""A person's decisions on predictions (the web page's review): ``outbox/reviews.jsonl``.

One JSON object a line: ``id`` (the row's), ``file``, ``predicted``, ``label`` (the right one,
as the person says) and ``time``. Appended durably (fsynced, under the same kind of lock as the
predictions), never rewritten; the predictions themselves are never touched. Reports take the
last decision on a row as its truth.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import orjson

from worker.outbox import iso_utc

REVIEWS_NAME = "reviews.jsonl"
ROW_ID = re.compile(r"[0-9a-f]{20}(#[0-9]{1,4})?")
# The longest line read as a decision: a file path as long as the kernel takes (4096 bytes), each
# of its characters escaped at most 6 bytes long in JSON, and the other fields.
MAX_LINE = 32 * 1024


def append_review(outbox: Path, *, row_id: str, file: str, predicted: str, label: str, at: float) -> dict:
    decision = {"id": row_id, "file": file, "predicted": predicted, "label": label, "time": iso_utc(at)}
    fd = os.open(Path(outbox) / REVIEWS_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, orjson.dumps(decision) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return decision


@dataclass(frozen=True)
class Decision:
    """One line of reviews.jsonl, checked: a row id of ours and a label; the file and the
    predicted label where given (a page's file is that page's)."""

    id: str
    label: str
    file: str | None = None
    predicted: str | None = None
    time: str | None = None

    @property
    def page(self) -> int | None:
        """The page of a document's row (its id ends ``#<page>``), else None."""
        return int(self.id.rpartition("#")[2]) if "#" in self.id else None


@dataclass(frozen=True)
class Decisions:
    by_row: dict[str, Decision]  # row id -> the last decision on it
    bad: int  # lines that were no decision (torn, foreign, or not of the row they name)


def parse_decision(line: bytes) -> Decision | None:
    """A line as a Decision, or None if it is not one. A page's decision (id ``<claim>#<n>``)
    that names a file must name that page's (``x.pdf#<n>``): export reads the file's name."""
    try:
        given = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(given, dict):
        return None
    row_id, label = given.get("id"), given.get("label")
    if not (isinstance(row_id, str) and ROW_ID.fullmatch(row_id) and isinstance(label, str) and label):
        return None
    file, predicted, time = (given.get(key) for key in ("file", "predicted", "time"))
    if not all(value is None or isinstance(value, str) for value in (file, predicted, time)):
        return None
    decision = Decision(row_id, label, file or None, predicted, time)
    if decision.page is not None and file is not None and not file.endswith(f"#{decision.page}"):
        return None
    return decision


def read_reviews(outbox: Path) -> dict[str, str]:
    """Row id -> the label a person gave it; a later decision on a row replaces an earlier."""
    return {row_id: decision.label for row_id, decision in read_decisions(outbox).by_row.items()}


def read_decisions(outbox: Path) -> Decisions:
    """The last decision on each row, and how many lines were none. A line longer than any
    decision is read no further than ``MAX_LINE`` (a damaged file costs no memory)."""
    by_row: dict[str, Decision] = {}
    bad = 0
    try:
        with open(Path(outbox) / REVIEWS_NAME, "rb") as fh:
            for line in _lines(fh):
                decision = parse_decision(line) if line is not None else None
                if decision is None:
                    bad += 1
                else:
                    by_row[decision.id] = decision
    except FileNotFoundError:
        pass
    return Decisions(by_row, bad)


def _lines(fh: BinaryIO) -> Iterator[bytes | None]:
    """Each line (None for one longer than MAX_LINE, whose rest is skipped); a blank line is
    no line."""
    while line := fh.readline(MAX_LINE):
        if not line.endswith(b"\n") and len(line) == MAX_LINE:
            while (rest := fh.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass
            yield None
        elif line.strip():
            yield line
