"""Prediction reports from an outbox: counts per label, confidence, failures by kind."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from worker import defaults
from worker.errors import ConfigError
from worker.outbox import ERROR_SUFFIX, FAILED_DIR, JSONL_NAME


def _predictions(outbox: Path):
    path = outbox / JSONL_NAME
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.endswith("\n"):  # a torn last line (crash mid-write) is not a record
                yield json.loads(line)


def _errors(outbox: Path):
    for path in sorted((outbox / FAILED_DIR).rglob(f"*{ERROR_SUFFIX}")):
        try:
            yield json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            yield {"file": path.name, "kind": "unreadable-record"}


def build_report(outbox: Path, *, low_confidence: float = defaults.LOW_CONFIDENCE) -> dict:
    outbox = Path(outbox)
    if not outbox.is_dir():
        raise ConfigError(f"outbox {outbox} does not exist")
    labels: Counter[str] = Counter()
    confidences: list[float] = []
    unsure = []
    models: Counter[str] = Counter()
    first = last = None
    for record in _predictions(outbox):
        labels[record["label"]] += 1
        models[record["model"]] += 1
        confidences.append(record["confidence"])
        if record["confidence"] < low_confidence:
            unsure.append({"file": record["file"], "label": record["label"],
                           "confidence": record["confidence"]})
        first = min(first or record["processed_at"], record["processed_at"])
        last = max(last or record["processed_at"], record["processed_at"])
    errors = list(_errors(outbox))
    confidences.sort()
    return {
        "outbox": str(outbox),
        "predictions": len(confidences),
        "failed": len(errors),
        "first": first,
        "last": last,
        "models": dict(models),
        "labels": dict(sorted(labels.items())),
        "mean_confidence": round(sum(confidences) / len(confidences), 4) if confidences else None,
        "median_confidence": confidences[len(confidences) // 2] if confidences else None,
        "low_confidence_threshold": low_confidence,
        "low_confidence": unsure,
        "failures_by_kind": dict(Counter(e.get("kind", "?") for e in errors)),
        "failures": [{"file": e.get("file"), "kind": e.get("kind"), "message": e.get("message")}
                     for e in errors],
    }


def format_report(report: dict) -> str:
    lines = [
        f"outbox {report['outbox']}: {report['predictions']} predictions, {report['failed']} failed",
    ]
    if report["first"]:
        lines.append(f"from {report['first']} to {report['last']}")
    if report["labels"]:
        lines.append("label     count")
        lines += [f"{label:<9} {count}" for label, count in report["labels"].items()]
        lines.append(
            f"confidence: mean {report['mean_confidence']}, median {report['median_confidence']}; "
            f"{len(report['low_confidence'])} below {report['low_confidence_threshold']}"
        )
    for item in report["low_confidence"][:20]:
        lines.append(f"  unsure: {item['file']} -> {item['label']} ({item['confidence']:.3f})")
    for kind, count in report["failures_by_kind"].items():
        lines.append(f"failed ({kind}): {count}")
    for item in report["failures"][:20]:
        lines.append(f"  {item['file']}: {item['message']}")
    return "\n".join(lines)
