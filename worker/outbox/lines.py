"""Lines of our own predictions.jsonl read back: the edge every reader of the outbox (the
report, the web page, ``worker status``) goes through.

The outbox is ours, but a person, another program or a disk can damage it: a line may be torn,
not JSON, JSON but no row (a field of the wrong type, a confidence of 7, one class), or a
gigabyte long. A reader never holds more than ``MAX_LINE_BYTES`` of a line (``skip_line``
passes over the rest); ``parse_row`` gives a row whose every field a reader uses has its type
and range, or None. Code behind them never sees raw input,
and a damaged line is counted and skipped, never fatal.

The checks are plain type tests on what orjson made, in one function: a report runs them a
million times, so they must cost little beside the parse.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from datetime import datetime
from typing import BinaryIO, NotRequired, TypedDict

import orjson

# The longest line read as a row. A row is a few hundred bytes; a name of PATH_MAX bytes,
# escaped, and a thousand classes stay far below this. Longer is damage: it is skipped without
# being held, so a line with no end costs no more memory than this.
MAX_LINE_BYTES = 2**20
# What a longer line is passed over with, a piece at a time.
SKIP_CHUNK = 2**20

ERROR_FIELDS = ("file", "kind", "message")  # what every error record has, as strings
_NUMBERS = (int, float)  # tested with type(), so not bool: True is no confidence
_from_iso = datetime.fromisoformat
# What the per-class probabilities of a row add up to: 1, give or take each one's rounding.
PROBABILITY_SUM = (0.99, 1.01)
# Hours (``2026-11-20T10``) already seen in a real moment: a few years' worth.
HOURS_KEPT = 100_000
_hours: set[str] = set()


class RowRecord(TypedDict):
    """A row as ``Row.to_json`` writes it, checked: the fields a reader uses. The rest
    (``class_index``, ``sha256``, ``review_score``, new columns) are read by no reader and
    left as they are."""

    file: str
    label: str  # one of the keys of ``probabilities``
    confidence: float  # in [0, 1]
    processed_at: str  # ISO 8601 UTC to the millisecond, as ``records.iso_utc`` writes it
    id: str
    probabilities: dict[str, float]  # two classes or more, numbers that add up to 1
    model: NotRequired[str]
    model_version: NotRequired[str]
    review: NotRequired[str]  # the review flag's reasons, space separated
    page: NotRequired[int]  # a document's page; ``file`` then ends in ``#<page>``
    file_bytes: NotRequired[str]  # base64 of a name that is not UTF-8


def skip_line(fh: BinaryIO) -> int:
    """Read past the rest of the current line, a piece at a time; how many bytes that was."""
    skipped = 0
    while True:
        piece = fh.readline(SKIP_CHUNK)
        skipped += len(piece)
        if not piece or piece.endswith(b"\n"):
            return skipped


def parse_row(line: bytes | None) -> RowRecord | None:
    """The row on a whole line (ending in a newline), or None if it is none: torn, not JSON,
    or a field missing, of the wrong type or out of range."""
    if line is None or not line.endswith(b"\n"):
        return None  # too long, or a torn last line (a crash mid-write)
    return row_from(line)


def row_from(data: bytes) -> RowRecord | None:
    """The row in ``data``, one whole record (its newline or not), or None."""
    if len(data) > MAX_LINE_BYTES:
        return None
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return row_of(record)


def row_of(record: object) -> RowRecord | None:
    """``record`` (parsed JSON) if it is a row, else None. Straight-line type tests, few calls:
    this runs once per row of every report."""
    if type(record) is not dict:
        return None
    try:
        file, label, row_id = record["file"], record["label"], record["id"]
        confidence, at, probabilities = record["confidence"], record["processed_at"], record["probabilities"]
    except KeyError:
        return None
    if not (type(file) is str and type(label) is str and type(row_id) is str
            and type(confidence) in _NUMBERS and 0 <= confidence <= 1
            and type(probabilities) is dict and len(probabilities) > 1 and label in probabilities
            and type(at) is str and len(at) == 24 and at[10] == "T" and at[23] == "Z"
            and type(record.get("model", "")) is str and type(record.get("model_version", "")) is str
            and type(record.get("review", "")) is str):
        return None
    try:
        # Softmax outputs, each rounded: a value that is no number fails the sum.
        if not PROBABILITY_SUM[0] <= sum(probabilities.values()) <= PROBABILITY_SUM[1]:
            return None
    except (TypeError, OverflowError):
        return None
    if at[:13] not in _hours and not _new_hour(at):
        return None
    if ("page" in record or "file_bytes" in record) and not _names(record):
        return None
    return record  # type: ignore[return-value]: every field a reader uses checked above


def _new_hour(at: str) -> bool:
    """Whether ``at`` is a real moment; its hour is remembered, so that the rows of an hour
    after the first cost a set lookup (reports count rows by that hour)."""
    try:
        _from_iso(at)
    except ValueError:
        return False
    if len(_hours) >= HOURS_KEPT:
        _hours.clear()
    _hours.add(at[:13])
    return True


def _names(record: dict) -> bool:
    """A document page's name ends in ``#<page>``; ``file_bytes`` is base64 of a name."""
    page = record.get("page")
    if page is not None and not (type(page) is int and page > 0 and record["file"].endswith(f"#{page}")):
        return False
    if "file_bytes" in record:
        try:
            b64decode(record["file_bytes"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            return False
    return True


def error_record_from(data: bytes) -> dict | None:
    """An error record (``failed/<name>.error.json``) whose fields a reader shows: ``file``,
    ``kind`` and ``message`` strings, ``time`` one too where it is given; else None."""
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if type(record) is not dict or not all(type(record.get(key)) is str for key in ERROR_FIELDS):
        return None
    return record if type(record.get("time", "")) is str else None
