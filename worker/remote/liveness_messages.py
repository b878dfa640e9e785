"""The liveness messages of a classify worker (``worker/remote/liveness.py``): its **heartbeat**
(host, pid and the batch in hand) and the **taken** record of a batch, naming who took it.
Small values read from Redis, checked at the edge as ``messages.py`` says."""

from __future__ import annotations

import re
from dataclasses import dataclass

from worker.remote.messages import (
    MAX_TEXT,
    TASK_ID,
    Rejected,
    check_int,
    check_text,
    get_field,
    open_frame,
    pack_frame,
)

HOST = re.compile(r"[0-9A-Za-z._-]{1,253}")
MAX_PID = 2**22  # Linux's pid_max at most
HEARTBEAT, TAKEN = b"heartbeat", b"taken"


@dataclass(frozen=True)
class Heartbeat:
    """A classify worker process alive: ``task`` the batch in hand (None: idle), ``idle`` the
    seconds since it last had one."""

    host: str
    pid: int
    task: str | None
    idle: float

    @property
    def worker(self) -> tuple[str, int]:
        return (self.host, self.pid)


@dataclass(frozen=True)
class Taken:
    """A batch taken, by the worker process that took it."""

    task_id: str
    host: str
    pid: int

    @property
    def worker(self) -> tuple[str, int]:
        return (self.host, self.pid)


def pack_heartbeat(beat: Heartbeat, key: bytes | None) -> bytes:
    import msgpack

    values = {"host": beat.host, "pid": beat.pid, "task": beat.task, "idle": float(beat.idle)}
    return msgpack.packb(pack_frame(HEARTBEAT, values, key), use_bin_type=True)


def parse_heartbeat(raw, key: bytes | None, worker: tuple[str, int]) -> Heartbeat:
    """The value of the heartbeat key of ``worker`` (host, pid), or ``Rejected``: the body must
    name the same worker (a sealed heartbeat copied under another's key keeps nobody alive)."""
    values = open_frame(HEARTBEAT, _frame(raw), key)
    host = check_text(get_field(values, "host"), "host", pattern=HOST)
    pid = check_int(get_field(values, "pid"), "pid", high=MAX_PID)
    if (host, pid) != worker:
        raise Rejected("schema", "a heartbeat naming another worker than its key")
    task = get_field(values, "task")
    idle = get_field(values, "idle")
    if isinstance(idle, bool) or not isinstance(idle, int | float) or not 0 <= idle < 1e9:
        raise Rejected("schema", "idle is not a number of seconds")
    task = None if task is None else check_text(task, "task id", pattern=TASK_ID)
    return Heartbeat(host, pid, task, float(idle))


def pack_taken(taken: Taken, key: bytes | None) -> bytes:
    import msgpack

    values = {"task": taken.task_id, "host": taken.host, "pid": taken.pid}
    return msgpack.packb(pack_frame(TAKEN, values, key), use_bin_type=True)


def parse_taken(raw, key: bytes | None, task_id: str) -> Taken:
    """The taken record of batch ``task_id``, or ``Rejected`` (the body must name that batch)."""
    values = open_frame(TAKEN, _frame(raw), key)
    if get_field(values, "task") != task_id:
        raise Rejected("schema", "a taken record naming another batch than its key")
    return Taken(task_id, check_text(get_field(values, "host"), "host", pattern=HOST),
                 check_int(get_field(values, "pid"), "pid", high=MAX_PID))


def _frame(raw, limit: int = MAX_TEXT) -> list:
    """A small value read from Redis as the frame ``[body, seal]`` (still unopened)."""
    import msgpack

    if not isinstance(raw, bytes) or len(raw) > limit:
        raise Rejected("malformed", "not a small frame of bytes")
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001
        raise Rejected("malformed", f"not msgpack ({type(exc).__name__})") from None
