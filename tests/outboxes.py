"""Outboxes for tests of what reads one (report, web page, review): rows with the
probabilities a model would give, written by the real ``Outbox``."""

from __future__ import annotations

import json
from pathlib import Path

from worker.daemon.claim import new_id
from worker.errors import InputError
from worker.outbox.records import Row, error_record
from worker.outbox.writer import Outbox

DIGITS = [str(d) for d in range(10)]


def row(file: str, label: str, confidence: float, *, second: str | None = None, second_p: float = 0.0,
        at: str = "2026-11-20T10:00:00.000Z", model: str = "mnist", version: str = "v1",
        review: tuple[str, ...] = ()) -> Row:
    """A row whose top class is ``label`` at ``confidence``, ``second`` at ``second_p``, the
    rest spread over the others."""
    others = [d for d in DIGITS if d not in (label, second)]
    probs = {d: (1 - confidence - second_p) / len(others) for d in others}
    probs[label] = confidence
    if second is not None:
        probs[second] = second_p
    probs = {d: probs[d] for d in DIGITS}  # in class order, as the daemon writes them
    return Row(id=new_id(), file=file, label=label, confidence=confidence, class_index=int(label),
               sha256="ab" * 32, model=model, processed_at=at, probabilities=probs, model_version=version,
               review=" ".join(review), review_score=2.0 if review else 0.5)


def outbox_with(tmp_path: Path, rows: list[Row], failures: list[tuple[str, str]] = ()) -> Path:
    outbox = tmp_path / "outbox"
    box = Outbox(outbox, DIGITS)
    box.record(rows)
    for file, kind in failures:
        record = error_record(InputError(kind, f"{file} is bad"), claim_id=new_id(), file=file,
                              time="2026-11-20T10:00:00.000Z", model="mnist", model_version="v1")
        path = outbox / "failed" / f"{file}.error.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    box.close()
    return outbox
