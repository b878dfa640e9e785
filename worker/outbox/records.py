"""The records of the outbox and their names: a row as both files write it (``Row``: a line of
``predictions.jsonl``, a record of ``predictions.csv`` under ``CsvLayout``'s header), the error
record beside a refused input (``error_record``), and the names of the files and folders.
Everything here is named once: readers (``report``, the web page) take the names from this module.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from worker.errors import ConfigError, InputError

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
# How every record of ours begins (``Row.to_json``'s first key, json's separators): a JSONL file
# starting otherwise is not ours, and a torn record starts so.
JSON_START = b'{"file": '
# OWASP's CSV injection guidance: a cell starting with one of these is a formula to a
# spreadsheet (tab and carriage return too, as some strip them first).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


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



class CsvLayout:
    """The CSV's columns for one model's classes, as the file's header has them (``check_header``):
    all of ``LATER_COLUMNS`` for a new file, fewer for one started before some."""

    def __init__(self, class_names: list[str], csv_path: Path) -> None:
        self.class_names = list(class_names)
        self.csv_path = csv_path
        self.reset()

    def reset(self) -> None:
        """The columns of a new file, until a header is checked."""
        self.columns, self.later = csv_columns(self.class_names), len(LATER_COLUMNS)

    def check_header(self, header: list[str]) -> bool:
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

    def text(self, rows: list[Row], *, header: bool = False) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        if header:
            writer.writerow(self.columns)
        writer.writerows(row.to_csv(later=self.later) for row in rows)
        return buffer.getvalue()
