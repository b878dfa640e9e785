"""The task a watcher sends (``Task``): a batch of files, the model asked for, the limits
of reading them and the list to answer on. Checked at the edge as ``messages.py`` says."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields

from worker.preprocess import Limits
from worker.remote.messages import (
    CLAIM_ID,
    MAX_NAME,
    TASK_ID,
    Rejected,
    check_list,
    check_model,
    check_text,
    get_field,
    open_frame,
    pack_frame,
)

REPLY_TO = re.compile(r"worker:answers:[0-9a-f]{32}")
TASK = b"task"


@dataclass(frozen=True)
class TaskFile:
    claim_id: str
    name: str
    data: bytes


@dataclass(frozen=True)
class Task:
    task_id: str
    model: tuple[str, str]  # name, version
    files: tuple[TaskFile, ...]
    limits: Limits
    reply_to: str


def pack_task(task: Task, key: bytes | None) -> list[bytes]:
    values = {"task": task.task_id, "model": {"name": task.model[0], "version": task.model[1]},
              "files": [[f.claim_id, f.name, f.data] for f in task.files],
              "limits": {f.name: getattr(task.limits, f.name) for f in fields(Limits)},
              "reply_to": task.reply_to}
    return pack_frame(TASK, values, key)


def parse_task(args, task_id: str, key: bytes | None) -> Task:
    """A Celery task's arguments as a ``Task``, or ``Rejected``. ``task_id`` is Celery's: the
    body must name the same (a sealed body cannot be replayed under another id)."""
    if not isinstance(args, list | tuple):
        raise Rejected("malformed", "arguments are not a list")
    values = open_frame(TASK, list(args), key)
    if get_field(values, "task") != task_id:
        raise Rejected("schema", "the body names another task id")
    files = tuple(_task_file(item) for item in check_list(get_field(values, "files"), "files"))
    return Task(task_id=check_text(task_id, "task id", pattern=TASK_ID),
                model=check_model(get_field(values, "model")), files=files,
                limits=_limits(get_field(values, "limits")),
                reply_to=check_text(get_field(values, "reply_to"), "reply_to", pattern=REPLY_TO))


def _task_file(item) -> TaskFile:
    if not (isinstance(item, list) and len(item) == 3 and isinstance(item[2], bytes)):
        raise Rejected("schema", "a file is not [claim id, name, bytes]")
    return TaskFile(check_text(item[0], "claim id", pattern=CLAIM_ID),
                    check_text(item[1], "name", limit=MAX_NAME), item[2])


def _limits(value) -> Limits:
    if not isinstance(value, dict):
        raise Rejected("schema", "limits is not a map")
    default = Limits()
    chosen = {}
    for f in fields(Limits):
        if f.name not in value:
            continue
        kind = type(getattr(default, f.name))
        number = value[f.name]
        if isinstance(number, bool) or not isinstance(number, int | float) or \
                (kind is int and not isinstance(number, int)) or not math.isfinite(number) or number <= 0:
            raise Rejected("schema", f"limit {f.name} is not a positive {kind.__name__}")
        chosen[f.name] = min(kind(number), getattr(default, f.name))  # a task may tighten, never loosen
    return Limits(**chosen)
