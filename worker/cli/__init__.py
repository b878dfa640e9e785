"""The command line: the only package that imports typer, prints results or exits.

``app`` and its global options are here, and the commands in the order ``worker --help`` lists
them; each command is in the module of its part: ``model`` (train, calibrate, publish, models,
predict), ``daemon`` (watch, classify-worker, status), ``serve`` (the web page) and ``outbox``
(export-reviewed, report). ``options`` holds the options several commands share, ``running``
how a command calls the library and how it ends (one red line; exit 1, 78 or 130).

No ``from __future__ import annotations`` in this package: typer reads every command's
annotations at each start, and as strings each would be evaluated anew (``eval``); as objects
they are made once, at import. Image and model code is imported inside the commands that use it.
"""

import logging
from typing import Annotated

import typer

from worker import __version__
from worker.cli import daemon, model, outbox, serve
from worker.cli.running import LongRunning

app = typer.Typer(
    help="Classify scanned images dropped into a folder. Predictions go to the outbox as CSV and JSONL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's plain help and errors: rich's rendering cost every command a third of its start
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"worker {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="Log every file, not just every batch.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """worker: a folder-watching image classification worker."""
    from worker.logs import setup_logging

    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 0 else logging.INFO)
    setup_logging(level)


# Long-running commands (services, training) take LongRunning: an option they cannot parse is
# a configuration error, one line and exit 78.
app.command()(model.calibrate)
app.command(cls=LongRunning)(model.train)
app.command()(model.publish)
app.command()(model.models)
app.command()(model.predict)
app.command(cls=LongRunning)(daemon.watch)
app.command("classify-worker", cls=LongRunning)(daemon.classify_worker)
app.command(cls=LongRunning)(serve.serve)
app.command("export-reviewed")(outbox.export_reviewed)
app.command()(daemon.status)
app.command()(outbox.report)
