"""Every error the worker raises on purpose derives from ``WorkerError``.

    WorkerError                  one red line in the CLI, exit code 1 (a retry may help)
    ├── ConfigError              a setting is invalid (bad folder, bad number, ...): exit 78
    ├── DatasetError             a dataset cannot be found, fetched or verified: exit 78
    ├── ModelError               the model file or its card is missing or does not fit: exit 78
    ├── NotPublished             a model kept as a version but not served: worse than what
    │                            serves (the gate, ``gate.py``): exit 1
    └── InputError               one input file cannot be classified; has a ``kind``
                                 (empty, not-an-image, truncated, too-large, unsupported,
                                 no-ink, not-a-regular-file, permission-denied, ...)

Messages say what to do next. An ``InputError`` never stops the daemon: the file is
quarantined with its ``kind`` and message. A folder or file of ours that the user running a
reader (``report``, ``status``) may not read is a ``ConfigError`` (``unreadable``).
"""

from __future__ import annotations

import grp
import os


class WorkerError(Exception):
    """Root of the worker's own errors."""


class ConfigError(WorkerError):
    """A setting is invalid."""


class DatasetError(WorkerError):
    """A dataset cannot be loaded or verified."""


class ModelError(WorkerError):
    """The model or its card is missing, corrupt or inconsistent."""


class NotPublished(WorkerError):
    """A model did not pass the gate: kept as a version, not served."""


class InputError(WorkerError):
    """One input cannot be classified. ``kind`` is a short machine-readable reason."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.bytes_read: int | None = None  # how much of the file there was when it failed


def unreadable(exc: OSError) -> ConfigError:
    """The error for a file or folder of the worker's that this user may not read (the service
    makes them readable by its group only)."""
    where = exc.filename or "a file of the outbox"
    try:
        group = grp.getgrgid(os.stat(where).st_gid).gr_name
    except (OSError, KeyError):
        group = "its group"
    return ConfigError(f"{where}: cannot read it ({exc.strerror or exc}); run this as its owner, "
                       f"as root or as a member of {group}")
