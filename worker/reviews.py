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
from pathlib import Path

import orjson

from worker.outbox import iso_utc

REVIEWS_NAME = "reviews.jsonl"
ROW_ID = re.compile(r"[0-9a-f]{20}(#[0-9]{1,4})?")


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


def read_reviews(outbox: Path) -> dict[str, str]:
    """Row id -> the label a person gave it; a later decision on a row replaces an earlier."""
    return {row_id: decision["label"] for row_id, decision in read_decisions(outbox).items()}


def read_decisions(outbox: Path) -> dict[str, dict]:
    """Row id -> the last decision on it, whole."""
    decisions: dict[str, dict] = {}
    try:
        with open(Path(outbox) / REVIEWS_NAME, "rb") as fh:
            for line in fh:
                try:
                    decision = orjson.loads(line)
                    if isinstance(decision.get("label"), str):
                        decisions[decision["id"]] = decision
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                    continue  # a torn or foreign line
    except FileNotFoundError:
        pass
    return decisions
