"""The outbox commands: ``report`` (a summary of an outbox) and ``export-reviewed`` (the
reviewed inputs as a dataset)."""

import json
from pathlib import Path
from typing import Annotated

import typer

from worker import defaults
from worker.cli.options import _env
from worker.cli.running import EXIT_CONFIG, _fail, _run


def export_reviewed(
    folder: Annotated[Path, typer.Argument(help="Where to write a folder per label of the reviewed images.")],
    outbox: Annotated[Path, typer.Option(envvar=_env("outbox"), help="The outbox whose reviews.jsonl to export.")] = defaults.OUTBOX,
) -> None:
    """Write the inputs people reviewed as a folder per (corrected) label, a dataset for
    'worker train --extra'."""
    from worker.training.reviewed import export_reviewed as export

    done = _run(export, outbox, folder)
    typer.echo(f"exported {done.images} image(s) under {done.labels} label(s) into {folder}"
               + (f"; {done.missing} reviewed input(s) were not kept" if done.missing else "")
               + (f"; {done.bad_lines} line(s) of reviews.jsonl were not decisions and were skipped"
                  if done.bad_lines else ""))


def report(
    outbox: Annotated[Path, typer.Option(envvar=_env("outbox"), readable=False, help="Outbox to report on.")] = defaults.OUTBOX,
    as_json: Annotated[bool, typer.Option("--json", help="The report as one JSON object.")] = False,
    low_confidence: Annotated[float, typer.Option(envvar=_env("low_confidence"), min=0.0, max=1.0, help="Count predictions below this confidence as unsure.")] = defaults.LOW_CONFIDENCE,
    since: Annotated[str | None, typer.Option(envvar=_env("since"), help="Only from this date or time on (ISO 8601; UTC unless it says).")] = None,
    until: Annotated[str | None, typer.Option(envvar=_env("until"), help="Only before this time (a date alone: through that day).")] = None,
    model: Annotated[str | None, typer.Option(envvar=_env("report_model"), help="Only rows of this model: a name, a version, or a model file (its name). Not WORKER_MODEL, which names the model watch serves.")] = None,
    label: Annotated[str | None, typer.Option(envvar=_env("label"), help="Only rows predicted as this label.")] = None,
    folder: Annotated[str | None, typer.Option(envvar=_env("folder"), help="Only files in this folder of the inbox (and below).")] = None,
    truth: Annotated[str | None, typer.Option(envvar=_env("truth"), help="The right labels: 'folders' (a file's first folder is its label) or a CSV of file,label lines. Reviews count too.")] = None,
    review: Annotated[int, typer.Option(envvar=_env("review"), min=0, max=100_000, help="How many of the least sure rows to list for review.")] = 20,
    html: Annotated[Path | None, typer.Option(envvar=_env("html"), help="Also write the report as one self-contained HTML file here, with pictures.")] = None,
) -> None:
    """Summarise an outbox: how many came in, what they were classified as, how sure, what to
    review, what failed; with --truth, how often it was right."""
    from worker.report import HTML_CAPS, Caps, Filters, format_report, gather, to_dict

    if model and model.endswith(".keras"):
        model = Path(model).stem
    filters = _run(Filters.parse, since=since, until=until, model=model, label=label, folder=folder)
    if html is not None and not html.parent.is_dir():
        raise _fail(f"--html {html}: its folder does not exist", EXIT_CONFIG)
    caps = Caps(review=review) if html is None else Caps(**{**HTML_CAPS.__dict__, "review": max(review, HTML_CAPS.review)})
    summary, skipped = _run(gather, outbox, filters=filters, truth=truth, caps=caps, low_confidence=low_confidence)
    report = to_dict(outbox, filters, summary, skipped, review=review)
    typer.echo(json.dumps(report, indent=2, ensure_ascii=False) if as_json else format_report(report))
    if html is not None:
        from worker.report.html import write_html

        _run(write_html, html, report, summary, outbox)
        typer.echo(f"wrote {html}", err=True)
