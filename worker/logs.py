"""Logging set-up: diagnostics to stderr, called once from the CLI callback.

Under systemd with stderr connected to the journal (``JOURNAL_STREAM`` names our stderr), each
line starts with its syslog priority (``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>``
debug) and carries no timestamp of ours (the journal adds its own). Elsewhere, lines start with
the local time in ISO 8601 with its zone. An exception that escapes any thread is logged as one
error line (its traceback at debug level), never printed bare.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from datetime import datetime

log = logging.getLogger("worker")

PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class JournalFormatter(logging.Formatter):
    """``<priority>name: message``, the priority on every line so a traceback keeps its level."""

    def format(self, record: logging.LogRecord) -> str:
        priority = PRIORITIES.get(record.levelno, 6)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


class LocalTimeFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="seconds")


def to_journal(stream=None) -> bool:
    """True when ``stream`` (stderr) is the journal stream systemd connected us to."""
    stream = stream or sys.stderr
    expected = os.environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{info.st_dev}:{info.st_ino}"


class _StandardError(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a line is logged, not as it was at set-up: a
    caller (a test runner, an embedding program) may swap it, and close the old one."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(level: int = logging.INFO) -> None:
    handler = _StandardError()
    if to_journal():
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(LocalTimeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("watchdog", "tensorflow", "absl", "PIL"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    threading.excepthook = _log_thread_exception


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread else "?"
    log.error("unexpected error in thread %s: %s: %s", name, args.exc_type.__name__, args.exc_value)
    log.debug("traceback", exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
