"""The text report: what ``worker report`` prints."""

from __future__ import annotations


def format_report(report: dict) -> str:
    lines = [f"outbox {report['outbox']}: {report['predictions']} predictions, {report['failed']} failed"]
    if report["filters"]:
        lines.append("only " + ", ".join(f"{k} {v}" for k, v in report["filters"].items()))
    if report["skipped_lines"]:
        lines.append(f"{report['skipped_lines']} line(s) of predictions.jsonl skipped: "
                     "not rows (torn or damaged)")
    if report["first"]:
        lines.append(f"from {report['first']} to {report['last']}")
    lines += [f"model {m['model']} {m['version'] or '(no version)'}: {m['rows']} rows"
              for m in report["models"]]
    if report["labels"]:
        width = max(len("label"), *map(len, report["labels"]))
        lines.append(f"{'label':<{width}}  count")
        lines += [f"{label:<{width}}  {count}" for label, count in report["labels"].items()]
        lines.append(
            f"confidence: mean {report['mean_confidence']}, median {report['median_confidence']:.4f}; "
            f"{report['low_confidence']} below {report['low_confidence_threshold']}"
        )
        reasons = ", ".join(f"{n} {reason}" for reason, n in report["flagged_by_reason"].items())
        lines.append(f"flagged for review: {report['flagged']}" + (f" ({reasons})" if reasons else ""))
    lines += _review(report)
    lines += _truth(report["truth"])
    for kind, count in report["failures_by_kind"].items():
        lines.append(f"failed ({kind}): {count}")
    lines += [f"  {item['file']}: {item['message']}" for item in report["failures"]]
    if report["failures_more"]:
        lines.append(f"  ... and {report['failures_more']} more")
    return "\n".join(lines)


def _review(report: dict) -> list[str]:
    if not report["review"]:
        return []
    lines = ["to review, flagged first, then least sure (confidence; margin over the second guess):"]
    lines += [f"  {r['file']} -> {r['label']} ({r['confidence']:.3f}; {r['second']} by {r['margin']:.3f})"
              + (f" [{r['review']}]" if r.get("review") else "") for r in report["review"]]
    if report["review_more"]:
        lines.append(f"  ... and {report['review_more']} more")
    return lines


def _truth(truth: dict | None) -> list[str]:
    if not truth:
        return []
    if not truth["rows"]:
        return [f"truth ({truth['source']}): no row has a known label"]
    lines = [f"truth ({truth['source']}): {truth['rows']} rows, accuracy {truth['accuracy']:.4f}"]
    width = max(len("label"), *(len(c["label"]) for c in truth["classes"]))
    lines.append(f"  {'label':<{width}}  precision  recall  f1      support")
    for c in truth["classes"]:
        lines.append(f"  {c['label']:<{width}}  {c['precision']:<9.4f}  {c['recall']:<6.4f}  "
                     f"{c['f1']:<6.4f}  {c['support']}")
    labels, matrix = truth["confusion"]["labels"], truth["confusion"]["matrix"]
    cell = max(5, *(len(str(n)) for row in matrix for n in row), *map(len, labels))
    lines.append("  confusion (rows: true, columns: predicted)")
    lines.append("  " + " " * width + "".join(f" {label:>{cell}}" for label in labels))
    for label, row in zip(labels, matrix, strict=True):
        lines.append(f"  {label:<{width}}" + "".join(f" {n:>{cell}}" for n in row))
    return lines
