"""Options several commands share, declared once. Every option also reads ``WORKER_<OPTION>``
from the environment (CLI > environment > default)."""

from pathlib import Path
from typing import Annotated

import typer


def _env(name: str) -> str:
    return f"WORKER_{name.upper().replace('-', '_')}"


BROKER_URL_FILE_HELP = ("A file holding the Redis URL (one line; its password stays out of ps), "
                        "instead of --broker.")
BROKER_KEY_FILE_HELP = ("A file holding the key shared by the watcher and the classify workers: every task "
                        "and answer is sealed with it (HMAC-SHA256) and one without its seal is dropped. "
                        "Or WORKER_BROKER_KEY.")

BrokerUrlFileOption = Annotated[Path | None, typer.Option(envvar=_env("broker_url_file"), help=BROKER_URL_FILE_HELP)]
BrokerKeyFileOption = Annotated[Path | None, typer.Option(envvar=_env("broker_key_file"), help=BROKER_KEY_FILE_HELP)]
# The model a command classifies with (predict, watch).
ModelFileOption = Annotated[Path, typer.Option(envvar=_env("model"), help="Model file (.keras; its .tflite and .json beside it).")]
