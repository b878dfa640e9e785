"""The page's reviews: ``/api/reviews`` (a person's decision on a row, appended to
reviews.jsonl) and ``/api/reviews/undo`` (one taken back). A review must name a row of the
outbox, with that row's file and label."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from worker.outbox.reviews import ROW_ID, append_review, undo_review
from worker.web import outbox_view


class Decision(BaseModel):
    id: str = Field(pattern=f"^{ROW_ID.pattern}$", max_length=30)
    file: str = Field(max_length=4096)
    predicted: str = Field(max_length=100)
    label: str = Field(max_length=100)

    def fields(self) -> dict:
        """As ``append_review`` and ``undo_review`` take them."""
        return {"row_id": self.id, "file": self.file, "predicted": self.predicted, "label": self.label}


def add_review_routes(app: FastAPI, outbox: Path, classes: list[str], reviewer: str | None) -> None:
    @app.post("/api/reviews", status_code=201)
    def decide(decision: Decision) -> dict:
        """A person's decision on a row of the outbox: appended to reviews.jsonl, durably, with
        who (``--reviewer``) and when."""
        if decision.label not in classes:
            raise HTTPException(422, f"{decision.label!r} is not one of the model's classes")
        _check_against_row(outbox, decision)
        return append_review(outbox, **decision.fields(), at=time.time(), reviewer=reviewer)

    @app.post("/api/reviews/undo", status_code=201)
    def undo(decision: Decision) -> dict:
        """Take back the decision standing on a row, which gave ``label``: a line of its own
        (``undone``) in reviews.jsonl; the row goes back to the review queue. 409 if the row's
        decision standing is none, or another (someone decided on it since)."""
        _check_against_row(outbox, decision)
        undone = undo_review(outbox, **decision.fields(), at=time.time(), reviewer=reviewer)
        if undone is None:
            raise HTTPException(409, f"row {decision.id} has no decision {decision.label!r} standing to undo")
        return undone


def _check_against_row(outbox: Path, decision: Decision) -> None:
    """404 unless the outbox has the row the decision names; 422 unless its file and predicted
    label are that row's."""
    row = outbox_view.row_by_id(outbox, decision.id)
    if row is None:
        raise HTTPException(404, f"the outbox has no row {decision.id}")
    if (row.get("file"), row.get("label")) != (decision.file, decision.predicted):
        raise HTTPException(422, f"row {decision.id} is {row.get('file')!r}, predicted {row.get('label')!r}")
