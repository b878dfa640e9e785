"""Prediction reports from an outbox: ``build_report`` streams it once into a dict (the
``--json`` form), ``format_report`` makes the text of that, ``write_html`` one self-contained
HTML file with pictures.

    records.py    rows and error records, streamed and filtered (a damaged line is skipped;
                  each line checked by ``worker.outbox.lines``)
    truth.py      the right labels, where known: folders, a labels CSV, reviews
    summary.py    one pass's counts, and the capped lists (review queue, galleries, mistakes)
    text.py       the text report
    html.py       the HTML report (Jinja2 template), with thumbnails.py for its pictures
"""

from __future__ import annotations

from pathlib import Path

from worker import defaults
from worker.errors import ConfigError, unreadable
from worker.outbox.records import JSONL_NAME
from worker.report.parallel import FORK, FROM_THREADS, summarise
from worker.report.records import Filters, Skipped, error_records
from worker.report.summary import HISTOGRAM_BINS, Caps, Summary
from worker.report.text import format_report
from worker.report.truth import Truth

__all__ = ["FROM_THREADS", "HTML_CAPS", "Caps", "Filters", "build_report", "format_report", "gather",
           "to_dict"]


EVERYTHING = Filters()
TEXT_CAPS = Caps()
# The HTML report's pictures: enough to look through, few enough that a million-row outbox
# still makes a report of a few MB in seconds (each thumbnail is a few KB).
HTML_CAPS = Caps(review=200, gallery=24, mistakes=24, failures=200)


def gather(outbox: Path, *, filters: Filters = EVERYTHING, truth: str | None = None, caps: Caps = TEXT_CAPS,
           low_confidence: float = defaults.LOW_CONFIDENCE,
           start_method: str = FORK) -> tuple[Summary, Skipped]:
    """One pass over the outbox; a ConfigError if this user may not read it. A caller with
    threads running gives ``start_method=FROM_THREADS`` (see ``parallel``)."""
    try:
        return _gather(Path(outbox), filters, truth, caps, low_confidence, start_method)
    except PermissionError as exc:
        raise unreadable(exc) from None


def _gather(outbox: Path, filters: Filters, truth: str | None, caps: Caps,
            low_confidence: float, start_method: str) -> tuple[Summary, Skipped]:
    if not outbox.is_dir():
        raise ConfigError(f"outbox {outbox} does not exist")
    summary, skipped = Summary(Truth(truth, outbox), caps, low_confidence), Skipped()
    jsonl = outbox / JSONL_NAME
    if jsonl.exists():
        for part, part_skipped in summarise(jsonl, summary, filters, start_method):
            summary.merge(part)
            skipped.merge(part_skipped)
        skipped.warn(jsonl)
    for record in error_records(outbox, filters):
        summary.add_error(record)
    return summary, skipped


def build_report(outbox: Path, *, filters: Filters = EVERYTHING, truth: str | None = None,
                 caps: Caps = TEXT_CAPS, low_confidence: float = defaults.LOW_CONFIDENCE,
                 start_method: str = FORK) -> dict:
    summary, skipped = gather(outbox, filters=filters, truth=truth, caps=caps, low_confidence=low_confidence,
                              start_method=start_method)
    return to_dict(Path(outbox), filters, summary, skipped)


def to_dict(outbox: Path, filters: Filters, s: Summary, skipped: Skipped, *,
            review: int | None = None) -> dict:
    """The report as data (``--json``); ``review`` cuts the review list shorter than gathered."""
    queue = s.review_queue()[:review]
    failed = sum(s.failure_kinds.values())
    return {
        "outbox": str(outbox),
        "filters": filters.describe(),
        "predictions": s.rows,
        "failed": failed,
        "skipped_lines": skipped.lines,
        "first": s.first,
        "last": s.last,
        "models": [{"model": m, "version": v, "rows": n} for (m, v), n in s.models.most_common()],
        "labels": {label: s.labels[label] for label in s.ordered(s.labels)},
        "mean_confidence": round(sum(s.confidences) / s.rows, 4) if s.rows else None,
        "median_confidence": s.median(),
        "low_confidence_threshold": s.low_confidence,
        "low_confidence": s.unsure,
        "flagged": s.flagged,
        "flagged_by_reason": dict(s.reasons.most_common()),
        "confidence_histogram": [
            {"from": i / HISTOGRAM_BINS, "to": (i + 1) / HISTOGRAM_BINS, "rows": n}
            for i, n in enumerate(s.histogram)
        ],
        "throughput": s.throughput(),
        "review": queue,
        "review_more": max(0, s.rows - len(queue)),
        "failures_by_kind": dict(s.failure_kinds.most_common()),
        "failures": s.failures,
        "failures_more": failed - len(s.failures),
        "truth": _truth(s),
    }


def _truth(s: Summary) -> dict | None:
    """Accuracy, per-class precision/recall/F1 (as scikit-learn's classification_report) and
    the confusion matrix, over the rows with a known label."""
    if not s.truth:
        return None
    known = sum(s.confusion.values())
    labels = s.ordered({t for t, _ in s.confusion} | {p for _, p in s.confusion})
    matrix = [[s.confusion[(t, p)] for p in labels] for t in labels]
    classes = []
    for i, label in enumerate(labels):
        tp, predicted, support = matrix[i][i], sum(row[i] for row in matrix), sum(matrix[i])
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        classes.append({"label": label, "precision": round(precision, 4), "recall": round(recall, 4),
                        "f1": round(f1, 4), "support": support})
    correct = sum(matrix[i][i] for i in range(len(labels)))
    return {
        "source": s.truth.describe(),
        "rows": known,
        "accuracy": round(correct / known, 4) if known else None,
        "classes": classes,
        "macro_avg": _average(classes, lambda c: 1),
        "weighted_avg": _average(classes, lambda c: c["support"]),
        "confusion": {"labels": labels, "matrix": matrix},
    }


def _average(classes: list[dict], weight) -> dict:
    total = sum(weight(c) for c in classes if c["support"])
    if not total:
        return {"precision": None, "recall": None, "f1": None}
    return {key: round(sum(c[key] * weight(c) for c in classes if c["support"]) / total, 4)
            for key in ("precision", "recall", "f1")}

