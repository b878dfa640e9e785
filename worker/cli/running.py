"""Running a command: calling into the library and how a command ends.

Errors of ours become one red line on stderr and exit code 1, or 78 for a configuration error
(restarting will not help); Ctrl-C exits 130. The whole error policy is ``_run`` here and the
exception tree in ``worker.errors``.
"""

import logging
from pathlib import Path

import typer
from typer.core import TyperCommand

try:  # typer 0.2x carries its own copy of click; earlier ones use click itself
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, UsageError

from worker.errors import ConfigError, DatasetError, ModelError, WorkerError

# sysexits.h's EX_CONFIG: the unit's RestartPreventExitStatus= names it, so systemd stops
# restarting a daemon that cannot start as configured (a missing folder, model or dataset).
EXIT_CONFIG = 78
# LSB's "program is not running", as `systemctl status` and init scripts' status answer.
EXIT_NOT_RUNNING = 3
CONFIGURATION_ERRORS = (ConfigError, ModelError, DatasetError)


class ConfigUsageError(ClickException):
    """A bad option value given to a long-running command: a configuration error like any other."""

    exit_code = EXIT_CONFIG

    def show(self, file=None) -> None:
        _error_line(self.format_message())


class LongRunning(TyperCommand):
    """A command that runs as a service or for a long time (``watch``, ``serve``,
    ``classify-worker``, ``train``): an option it cannot parse, from the command line or the
    environment (``WORKER_BATCH_SIZE=abc``), is one line and exit 78, which a unit's
    ``RestartPreventExitStatus=`` stops at, not click's usage text and exit 2, which a unit
    would restart for ever. Help (``--help``) is unchanged."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as exc:
            raise ConfigUsageError(" ".join(exc.format_message().splitlines())) from None


def _fail(message: str, code: int = 1) -> typer.Exit:
    _error_line(message)
    return typer.Exit(code)


def _error_line(message: str) -> None:
    """``error: ...`` on stderr; under systemd with the priority the journal files it under
    (``<3>``, error), as the log lines have theirs, so that ``journalctl -p err`` finds it."""
    from worker.logs import PRIORITIES, to_journal

    prefix = f"<{PRIORITIES[logging.ERROR]}>" if to_journal() else ""
    typer.secho(f"{prefix}error: {message}", fg="red", err=True)


def _run(func, *args, **kwargs):
    """Call into the library, turning our errors into one red line and an exit code (78 for
    a configuration error, which a restart would not mend; 1 for the rest), Ctrl-C into 130."""
    try:
        return func(*args, **kwargs)
    except CONFIGURATION_ERRORS as exc:
        raise _fail(str(exc), EXIT_CONFIG) from None
    except WorkerError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise _fail("interrupted", 130) from None


def _need(extra: str, command: str) -> None:
    """Exit 78 with one line naming the extra if ``command`` needs one that is not installed."""
    from worker.extras import require

    _run(require, extra, command)


def _load_classifier(model: Path, threads: int):
    from worker.model.classifier import Classifier

    return _run(Classifier, model, threads=threads)


def _check_folder(option: str, folder: Path) -> None:
    """Exit 78 unless ``folder``, given as ``option``, is a folder."""
    if not folder.is_dir():
        raise _fail(f"{option} {folder} is not a folder", EXIT_CONFIG)
