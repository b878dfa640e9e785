"""The answer a classify worker returns (``Answer``): a refusal, or per file its error or
its pages and, per model input, a row of probabilities and its review; checked at the edge as
``messages.py`` says, then against the batch it answers (``Answer.check``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from worker.model.review_flag import SHARE as REVIEW_REASONS
from worker.remote.messages import (
    CLAIM_ID,
    MAX_FILES,
    MAX_TEXT,
    TASK_ID,
    Rejected,
    check_int,
    check_list,
    check_model,
    check_text,
    get_field,
    open_frame,
    pack_frame,
)

# What an answer may be: enough for any real batch, little for a hostile one.
MAX_FRAME_BYTES = 256 * 1024 * 1024
MAX_PAGES = 10_000
# Each row of probabilities is a softmax: its sum is 1 up to float32 rounding over the classes.
SUM_TOLERANCE = 1e-3
ERROR_KIND = re.compile(r"[a-z][a-z0-9-]{0,39}")
ANSWER = b"answer"


@dataclass(frozen=True)
class FileAnswer:
    """One file's part of an answer: its error (kind, message, bytes read) or its pages."""

    claim_id: str
    error: tuple[str, str, int | None] | None = None
    pages: tuple[int, ...] = ()

    @property
    def inputs(self) -> int:
        """How many model inputs (rows of probabilities) this file has."""
        return 0 if self.error is not None else max(1, len(self.pages))


@dataclass(frozen=True)
class Answer:
    """An answer, its fields checked; ``check`` checks it against the batch it answers."""

    task_id: str
    refused: str | None = None
    model: tuple[str, str] | None = None
    files: tuple[FileAnswer, ...] = ()
    probabilities: bytes | None = None
    reviews: tuple[tuple[str, ...], ...] = ()
    scores: bytes | None = None

    def check(self, claim_ids: list[str], model: tuple[str, str], classes: int) -> Scores | None:
        """Against the batch: the claim ids it sent in their order, the model it asked for, one
        row of ``classes`` probabilities per model input. Returns the scores (None without a
        model input), or raises ``Rejected``."""
        if [f.claim_id for f in self.files] != claim_ids:
            raise Rejected("wrong-files", "claim ids are not those sent, in order, once each")
        if self.model != model:
            raise Rejected("wrong-model", f"answered by {self.model}, not the {model} asked for")
        inputs = sum(f.inputs for f in self.files)
        return _scores(self.probabilities, self.reviews, self.scores, inputs, classes)


@dataclass(frozen=True)
class Scores:
    probabilities: np.ndarray  # (inputs, classes) float32, each row finite in [0, 1], summing to 1
    reviews: list[list[str]]
    review_scores: np.ndarray | None


def pack_answer(task_id: str, key: bytes | None, *, refused: str | None = None,
                model: tuple[str, str] | None = None, files: list[dict] = (),
                probabilities: bytes | None = None, reviews: list = (), scores: bytes | None = None) -> bytes:
    import msgpack

    if refused is not None:
        values = {"task": task_id, "refused": refused[:MAX_TEXT]}
    else:
        values = {"task": task_id, "model": {"name": model[0], "version": model[1]}, "files": list(files),
                  "probabilities": probabilities, "reviews": list(reviews), "scores": scores}
    return msgpack.packb(pack_frame(ANSWER, values, key), use_bin_type=True)


def parse_answer(raw, key: bytes | None) -> Answer:
    """A value read from the reply list as an ``Answer``, or ``Rejected``."""
    import msgpack

    if not isinstance(raw, bytes) or len(raw) > MAX_FRAME_BYTES:
        raise Rejected("malformed", "not a frame of bytes")
    try:
        frame = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_bin_len=MAX_FRAME_BYTES)
    except Exception as exc:  # noqa: BLE001
        raise Rejected("malformed", f"not msgpack ({type(exc).__name__})") from None
    values = open_frame(ANSWER, frame, key)
    task_id = check_text(get_field(values, "task"), "task id", pattern=TASK_ID)
    if "refused" in values:
        return Answer(task_id, refused=check_text(values["refused"], "refusal"))
    files = tuple(_file_answer(item) for item in check_list(get_field(values, "files"), "files"))
    reviews = tuple(_review(item) for item in check_list(get_field(values, "reviews"), "reviews",
                                                      limit=MAX_FILES * MAX_PAGES))
    return Answer(task_id, model=check_model(get_field(values, "model")), files=files,
                  probabilities=_optional_bytes(get_field(values, "probabilities"), "probabilities"),
                  reviews=reviews, scores=_optional_bytes(get_field(values, "scores"), "scores"))


def _file_answer(item) -> FileAnswer:
    if not isinstance(item, dict):
        raise Rejected("schema", "a file's answer is not a map")
    claim_id = check_text(item.get("id"), "claim id", pattern=CLAIM_ID)
    if "error" in item:
        error = item["error"]
        if not (isinstance(error, list) and len(error) == 3):
            raise Rejected("schema", "an error is not [kind, message, bytes read]")
        bytes_read = None if error[2] is None else check_int(error[2], "bytes read")
        return FileAnswer(claim_id, error=(check_text(error[0], "error kind", pattern=ERROR_KIND),
                                           check_text(error[1], "error message"), bytes_read))
    pages = check_list(item.get("pages"), "pages", limit=MAX_PAGES)
    numbers = tuple(check_int(n, "page", low=1, high=MAX_PAGES) for n in pages)
    if any(a >= b for a, b in zip(numbers, numbers[1:], strict=False)):
        raise Rejected("schema", "page numbers are not increasing")
    return FileAnswer(claim_id, pages=numbers)


def _review(item) -> tuple[str, ...]:
    reasons = check_list(item, "review", limit=len(REVIEW_REASONS))
    if not all(isinstance(r, str) and r in REVIEW_REASONS for r in reasons):
        raise Rejected("schema", "a review reason that is none of the review flag's")
    return tuple(reasons)


def _optional_bytes(value, what: str) -> bytes | None:
    if value is not None and not isinstance(value, bytes):
        raise Rejected("schema", f"{what} is neither bytes nor nil")
    return value


def _scores(probabilities: bytes | None, reviews, scores: bytes | None, inputs: int,
            classes: int) -> Scores | None:
    if inputs == 0:
        if probabilities is not None or scores is not None or reviews:
            raise Rejected("bad-scores", "scores for a batch without a model input")
        return None
    if probabilities is None or len(probabilities) != inputs * classes * 4:
        raise Rejected("bad-scores", f"not {inputs} rows of {classes} float32 probabilities")
    rows = np.frombuffer(probabilities, np.float32).reshape(inputs, classes)
    if not (np.isfinite(rows).all() and (rows >= 0).all() and (rows <= 1).all()
            and (np.abs(rows.sum(axis=1) - 1) <= SUM_TOLERANCE).all()):
        raise Rejected("bad-scores", "probabilities not finite in [0, 1] or not summing to 1")
    if len(reviews) != inputs:
        raise Rejected("bad-scores", f"not {inputs} reviews")
    review_scores = None
    if scores is not None:
        if len(scores) != inputs * 4:
            raise Rejected("bad-scores", f"not {inputs} float32 review scores")
        review_scores = np.frombuffer(scores, np.float32)
        if not (np.isfinite(review_scores).all() and (review_scores >= 0).all()):
            raise Rejected("bad-scores", "review scores not finite and positive")
    return Scores(rows, [list(r) for r in reviews], review_scores)
