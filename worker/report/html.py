"""The HTML report: one self-contained file (styles and pictures inline, no script, nothing
fetched), so it opens offline and from a mail attachment. Rendered by Jinja2 with escaping on:
no HTML is built by joining strings."""

from __future__ import annotations

from pathlib import Path

import jinja2

from worker.errors import ConfigError
from worker.files import write_atomic
from worker.report.summary import Summary
from worker.report.thumbnails import Thumbnails

_environment = jinja2.Environment(
    loader=jinja2.PackageLoader("worker.report", "templates"),
    autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
)


def render_html(report: dict, summary: Summary, outbox: Path) -> str:
    pictures = Thumbnails(outbox)
    classes = summary.class_order

    def with_pictures(rows: list[dict]) -> list[dict]:
        return [{**row, "picture": pictures.of(row, classes)} for row in rows]

    galleries = [(label, with_pictures(summary.galleries[label]))
                 for label in summary.ordered(summary.galleries)]
    return _environment.get_template("report.html").render(
        report=report,
        review=with_pictures(summary.review_queue()),
        galleries=galleries,
        mistakes=_mistakes(report, summary, with_pictures),
        peak=_peaks(report),
    )


def write_html(path: Path, report: dict, summary: Summary, outbox: Path) -> None:
    try:
        write_atomic(Path(path), render_html(report, summary, outbox))
    except OSError as exc:
        raise ConfigError(f"--html {path}: cannot write it ({exc.strerror or exc})") from None


def _mistakes(report: dict, summary: Summary, with_pictures) -> list[dict]:
    """Each confusion cell off the diagonal that has rows: its anchor (the matrix links to it)
    and the pictures of its first rows."""
    truth = report["truth"]
    if not truth:
        return []
    labels = truth["confusion"]["labels"]
    cells = []
    for i, true in enumerate(labels):
        for j, predicted in enumerate(labels):
            count = truth["confusion"]["matrix"][i][j]
            if i != j and count:
                rows = with_pictures(summary.mistakes.get((true, predicted), []))
                cells.append({"true": true, "predicted": predicted, "count": count,
                              "anchor": cell_anchor(i, j), "rows": rows})
    return cells


def cell_anchor(i: int, j: int) -> str:
    return f"mistakes-{i}-{j}"


def _peaks(report: dict) -> dict:
    """The largest value of each chart, so bars are drawn as shares of it."""
    return {
        "labels": max(report["labels"].values(), default=0) or 1,
        "histogram": max((b["rows"] for b in report["confidence_histogram"]), default=0) or 1,
        "throughput": max(report["throughput"]["counts"].values(), default=0) or 1,
    }
