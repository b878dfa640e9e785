"""A person's decisions on predictions (the web page's review): ``outbox/reviews.jsonl``.

One JSON object a line: ``id`` (the row's), ``file``, ``predicted``, ``label`` (the right one,
as the person says), ``time`` and, from pages that know it, ``reviewer`` (who). A decision taken
back is a line of its own, ``undone`` naming the label it takes back instead of ``label``: it
withdraws the row's last decision standing, if that gave this label (an earlier one, if any,
stands again). Appended durably (fsynced, under the same kind of lock as the predictions),
never rewritten; the predictions themselves are never touched. Reports take the last decision
standing on a row as its truth. Lines of older pages (no ``reviewer``) read as ever.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import orjson

from worker.outbox.records import iso_utc

REVIEWS_NAME = "reviews.jsonl"
ROW_ID = re.compile(r"[0-9a-f]{20}(#[0-9]{1,4})?")
# The longest line read as a decision: a file path as long as the kernel takes (4096 bytes), each
# of its characters escaped at most 6 bytes long in JSON, and the other fields.
MAX_LINE = 32 * 1024


def append_review(outbox: Path, *, row_id: str, file: str, predicted: str, label: str, at: float,
                  reviewer: str | None = None) -> dict:
    decision = {"id": row_id, "file": file, "predicted": predicted, "label": label, "time": iso_utc(at),
                **({"reviewer": reviewer} if reviewer else {})}
    with _locked(outbox) as fd:
        _append(fd, decision)
    return decision


def undo_review(outbox: Path, *, row_id: str, file: str, predicted: str, label: str, at: float,
                reviewer: str | None = None) -> dict | None:
    """Take back the row's last decision standing, if it gave ``label``: the line written, or
    None (nothing written) if the row's last decision standing is none, or another."""
    with _locked(outbox) as fd:
        standing = _read(os.fdopen(os.dup(fd), "rb")).by_row.get(row_id)
        if standing is None or standing.label != label:
            return None
        undo = {"id": row_id, "file": file, "predicted": predicted, "undone": label, "time": iso_utc(at),
                **({"reviewer": reviewer} if reviewer else {})}
        _append(fd, undo)
    return undo


@contextmanager
def _locked(outbox: Path) -> Iterator[int]:
    """reviews.jsonl open for appending (and reading), under an exclusive lock."""
    fd = os.open(Path(outbox) / REVIEWS_NAME, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _append(fd: int, record: dict) -> None:
    os.write(fd, orjson.dumps(record) + b"\n")
    os.fsync(fd)


@dataclass(frozen=True)
class Decision:
    """One line of reviews.jsonl, checked: a row id of ours and a label; the file and the
    predicted label where given (a page's file is that page's)."""

    id: str
    label: str
    file: str | None = None
    predicted: str | None = None
    time: str | None = None
    reviewer: str | None = None

    @property
    def page(self) -> int | None:
        """The page of a document's row (its id ends ``#<page>``), else None."""
        return int(self.id.rpartition("#")[2]) if "#" in self.id else None


@dataclass(frozen=True)
class Decisions:
    by_row: dict[str, Decision]  # row id -> the last decision on it
    bad: int  # lines that were no decision (torn, foreign, not of the row they name, an undo of none)


@dataclass(frozen=True)
class Undo:
    """A line taking back the row's last decision standing, which gave ``undone``."""

    id: str
    undone: str


def parse_decision(line: bytes) -> Decision | Undo | None:
    """A line as a Decision (or an Undo), or None if it is neither. A page's decision (id
    ``<claim>#<n>``) that names a file must name that page's (``x.pdf#<n>``): export reads the
    file's name."""
    try:
        given = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(given, dict):
        return None
    row_id, label, undone = given.get("id"), given.get("label"), given.get("undone")
    if not (isinstance(row_id, str) and ROW_ID.fullmatch(row_id)):
        return None
    file, predicted, time, reviewer = (given.get(key) for key in ("file", "predicted", "time", "reviewer"))
    if not all(value is None or isinstance(value, str) for value in (file, predicted, time, reviewer)):
        return None
    if label is None and isinstance(undone, str) and undone:
        return Undo(row_id, undone)
    if not (isinstance(label, str) and label):
        return None
    decision = Decision(row_id, label, file or None, predicted, time, reviewer or None)
    if decision.page is not None and file is not None and not file.endswith(f"#{decision.page}"):
        return None
    return decision


def read_reviews(outbox: Path) -> dict[str, str]:
    """Row id -> the label a person gave it; a later decision on a row replaces an earlier."""
    return {row_id: decision.label for row_id, decision in read_decisions(outbox).by_row.items()}


def read_decisions(outbox: Path) -> Decisions:
    """The last decision standing on each row, and how many lines were none (an undo of no
    decision standing among them). A line longer than any decision is read no further than
    ``MAX_LINE`` (a damaged file costs no memory)."""
    try:
        fh = open(Path(outbox) / REVIEWS_NAME, "rb")
    except FileNotFoundError:
        return Decisions({}, 0)
    return _read(fh)


def _read(fh: BinaryIO) -> Decisions:
    """``read_decisions`` of an open file, which it closes."""
    stacks: dict[str, list[Decision]] = {}
    bad = 0
    with fh:
        for line in _lines(fh):
            given = parse_decision(line) if line is not None else None
            stack = stacks.setdefault(given.id, []) if given is not None else []
            if isinstance(given, Decision):
                stack.append(given)
            elif isinstance(given, Undo) and stack and stack[-1].label == given.undone:
                stack.pop()
            else:
                bad += 1
    return Decisions({row_id: stack[-1] for row_id, stack in stacks.items() if stack}, bad)


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
