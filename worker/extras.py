"""The optional parts of worker (pip's "extras") and the one line that names a missing one.

    core        watch, predict, status, report, models, publish: PNG, JPEG, BMP, TIFF, WebP, GIF
    web         serve (the page)
    documents   PDF and HEIC files, wherever files are read
    broker      watch --broker, status --broker, classify-worker
    train       train, calibrate

A command that needs an extra checks for it before anything else (``require``): one line and
exit 78, which a unit's ``RestartPreventExitStatus=`` stops at, not an ImportError's traceback.
A file that needs a decoder of a missing extra is that file's error (``decoder``), recorded like
any other refused file: the daemon goes on with the rest.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from worker.errors import ConfigError, InputError

# The modules each extra installs that the code imports (their top-level names).
MODULES = {
    "web": ("fastapi", "starlette", "uvicorn"),
    "documents": ("pypdfium2", "pillow_heif"),
    "broker": ("celery", "kombu", "redis", "msgpack"),
    "train": ("tensorflow", "keras"),
}
# The package's folder: in a checkout (pyproject.toml beside it) the hint names the checkout.
SOURCE = Path(__file__).resolve().parent.parent


def install_hint(extra: str) -> str:
    """The pip command that adds the extra: from this checkout, or from worker's source where it
    was installed from a copy (PyPI's "worker" is another project: never the name alone)."""
    if (SOURCE / "pyproject.toml").is_file():
        return f"pip install -e '{SOURCE}[{extra}]'"
    return f"pip install '<worker's source>[{extra}]'"


def missing_extra(extra: str, what: str) -> ConfigError:
    return ConfigError(f"{what} needs the {extra} extra: {install_hint(extra)}")


def installed(extra: str) -> bool:
    """Whether every module of the extra is imported or can be found (found, not imported: the
    check is cheap)."""
    return all(_importable(name) for name in MODULES[extra])


def _importable(name: str) -> bool:
    if name in sys.modules:  # imported (kombu's module, replaced by a lazy one, has no spec), or None
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def require(extra: str, what: str) -> None:
    """ConfigError ``what needs the EXTRA extra: pip install ...`` unless it is installed."""
    if not installed(extra):
        raise missing_extra(extra, what)


def decoder(module: str, file_kind: str, name: str):
    """The documents extra's ``module``, imported, or the file's InputError saying it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError("unsupported", f"{name} is {file_kind}: reading it needs the documents extra: "
                                        f"{install_hint('documents')}") from None
