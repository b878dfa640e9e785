"""The HTML report: one self-contained file (styles and pictures inline, nothing fetched), so
it opens offline and from a mail attachment. Its one script, inline, shows times in the
reader's time zone; without it they read in UTC. Rendered by Jinja2 with escaping on: no HTML
is built by joining strings."""

from __future__ import annotations

from datetime import datetime
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
# How a moment reads in UTC, by the precision its place needs (an axis of 10-second columns
# needs seconds; one of days, the date).
_UTC_FORMATS = {"second": "%Y-%m-%d %H:%M:%S UTC", "minute": "%Y-%m-%d %H:%M UTC", "day": "%Y-%m-%d"}


def utc_text(iso: str, precision: str = "minute") -> str:
    """``2026-12-03T05:00:30.000Z`` as a person reads it, to ``precision``."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime(_UTC_FORMATS[precision])


def axis_labels(periods: list[str]) -> list[str]:
    """The periods named under a chart: the first, the middle and the last (each once)."""
    picked = [periods[0], periods[len(periods) // 2], periods[-1]] if periods else []
    return list(dict.fromkeys(picked))


_environment.filters["utc"] = utc_text
_environment.globals["axis_labels"] = axis_labels


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
