"""The daemon's settings: one frozen dataclass, validated once, logged at start."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path

from worker import defaults
from worker.errors import ConfigError
from worker.preprocess import Limits
from worker.urls import safe_url


@dataclass(frozen=True)
class Settings:
    inbox: Path = defaults.INBOX
    outbox: Path = defaults.OUTBOX
    model: Path = defaults.MODEL
    once: bool = False
    poll: float | None = None  # seconds between polls; None: inotify events
    rescan: float = defaults.RESCAN_SECONDS
    settle: float = defaults.SETTLE_SECONDS
    settle_open: float = defaults.SETTLE_OPEN_SECONDS  # quiet time of a file still open for writing
    close_settle: float = defaults.CLOSE_SETTLE_SECONDS  # time a closed file must stay closed, unchanged
    ignore: tuple[str, ...] = ()  # globs of file names ignored besides the built-in list
    recursive: bool = False
    batch_size: int = defaults.BATCH_SIZE
    max_delay_ms: int = defaults.MAX_DELAY_MS
    on_success: str = "keep"
    decode_threads: int = defaults.DECODE_THREADS
    queue_limit: int = defaults.QUEUE_LIMIT
    retry: float = defaults.RETRY_SECONDS  # seconds between tries after a failed write
    broker: str | None = None  # Redis URL: batches go to classify workers (the remote mode)
    in_flight: int = defaults.IN_FLIGHT  # with a broker: most batches out at a time
    resend_after: float = defaults.RESEND_SECONDS  # with a broker: a batch unanswered this long is sent again
    limits: Limits = field(default_factory=Limits)

    def validate(self) -> Settings:
        if not self.inbox.is_dir():
            raise ConfigError(f"inbox {self.inbox} is not a folder; create it or pass --inbox")
        inbox, outbox = self.inbox.resolve(), self.outbox.resolve()
        if outbox == inbox:
            raise ConfigError(f"the inbox and the outbox are the same folder ({inbox}); give each its own")
        if outbox.is_relative_to(inbox):
            raise ConfigError("the outbox must not be inside the inbox")
        if inbox.is_relative_to(outbox):  # its archive would be read again as new drops, for ever
            raise ConfigError(f"the inbox {inbox} must not be inside the outbox {outbox}")
        check_writable("inbox", self.inbox)
        check_writable("outbox", self.outbox)
        if self.settle < 0:
            raise ConfigError("--settle must not be negative")
        if self.close_settle < 0:
            raise ConfigError("--close-settle must not be negative")
        for glob in self.ignore:
            if not glob or "/" in glob:
                raise ConfigError(f"--ignore takes a pattern of file names such as '*.bak', not {glob!r}: "
                                  "it is matched on a file's name, never its folders")
        if self.rescan <= 0:
            raise ConfigError("--rescan must be a positive number of seconds")
        if self.poll is not None and self.poll <= 0:
            raise ConfigError("--poll must be a positive number of seconds")
        if self.batch_size < 1 or self.decode_threads < 1 or self.queue_limit < 1:
            raise ConfigError("--batch-size and --decode-threads must be at least 1")
        if self.in_flight < 1:
            raise ConfigError("--in-flight must be at least 1")
        if self.resend_after <= 0:
            raise ConfigError("--resend-after must be a positive number of seconds")
        if self.broker is not None and not self.broker.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"--broker must be a Redis URL (redis://HOST:6379/0), not {self.broker!r}")
        if self.max_delay_ms < 0:
            raise ConfigError("--max-delay must not be negative")
        if self.limits.decode_seconds <= 0 or self.limits.decode_memory < 64 * 2**20:
            raise ConfigError("--decode-timeout must be positive and --decode-memory at least 64 (MiB)")
        if self.on_success not in defaults.ON_SUCCESS:
            raise ConfigError(f"--on-success must be one of: {', '.join(defaults.ON_SUCCESS)}")
        return self

    def describe(self) -> str:
        mode = "once" if self.once else (f"poll every {self.poll}s" if self.poll else "inotify")
        return (
            f"mode={mode} inbox={self.inbox} outbox={self.outbox} model={self.model} "
            f"recursive={self.recursive} settle={self.settle}s close_settle={self.close_settle}s "
            f"rescan={self.rescan}s "
            f"batch={self.batch_size} max_delay={self.max_delay_ms}ms on_success={self.on_success} "
            f"decode_threads={self.decode_threads} max_pixels={self.limits.max_pixels} "
            f"decode_timeout={self.limits.decode_seconds:g}s "
            f"decode_memory={self.limits.decode_memory // 2**20}MiB"
            + (f" ignore={list(self.ignore)}" if self.ignore else "")
            + (f" broker={safe_url(self.broker)} in_flight={self.in_flight}" if self.broker else "")
        )


def check_writable(what: str, folder: Path) -> None:
    """A ConfigError unless this process may make files in ``folder`` (or, if it is not made
    yet, in the nearest folder above it that is): said at start, before the model loads, and
    not as a traceback at the first claim. Opening the folders stays the final word (``Claims``,
    ``Outbox``): an access check cannot see every refusal (an LSM's, a lease's)."""
    existing = next((p for p in (folder, *folder.absolute().parents) if p.is_dir()), None)
    if existing is not None and os.statvfs(existing).f_flag & os.ST_RDONLY:
        # Under systemd, a folder the unit's ReadWritePaths= does not name is mounted read-only
        # whatever its modes are.
        raise ConfigError(f"{what} {folder} is on a file system mounted read-only (Read-only file system); "
                          "under systemd, the unit's ReadWritePaths= must name it (a drop-in)")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        try:
            user = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            user = f"uid {os.geteuid()}"
        where = "" if existing == folder else f" (it would be made in {existing})"
        raise ConfigError(f"{what} {folder} is not writable by {user}{where}: give that user write access "
                          "to it, or run the worker as a user who has it")

