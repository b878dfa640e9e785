"""Liveness the watcher can see: which classify worker took a batch, and whether it still lives.

Redis' transport alone brings a batch back only when its worker's process dies cleanly (Celery
puts the task back) or after the visibility timeout; a worker killed just as it takes a task
can lose it for good. So each classify worker process keeps a **heartbeat** (``ALIVE_KEY``,
refreshed every ``BEAT_SECONDS``, expiring after ``ALIVE_SECONDS``: its host, pid, the batch in
hand or how long it has been idle) and, as it starts a batch, leaves a **taken** record
(``TAKEN_KEY``, deleted with its answer) naming itself. Each value is sealed and checked like
any message (``broker_messages``).

The watcher, which holds every claim, looks once a second (``look``) and sends a batch again
(``to_resend``):

    worker-gone  the worker that took it has no heartbeat any more (killed, frozen, cut off):
                 after at most ``ALIVE_SECONDS``;
    untaken      nobody took it ``UNTAKEN_SECONDS`` after it was sent while a live worker sat
                 idle that long (the transport lost it on its way).

A batch sent twice is answered twice at worst; the first answer is used, the claim ids keep each
row single. A stopped worker (SIGTERM) deletes its heartbeat, so a batch it held is sent again
at once rather than after ``ALIVE_SECONDS``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from worker.remote.liveness_messages import (
    HOST,
    Heartbeat,
    Taken,
    pack_heartbeat,
    pack_taken,
    parse_heartbeat,
    parse_taken,
)
from worker.remote.messages import Rejected

log = logging.getLogger(__name__)

ALIVE_PREFIX = "worker:alive:"
ALIVE_KEY = ALIVE_PREFIX + "{}:{}"  # by worker host and pid
TAKEN_KEY = "worker:taken:{}"  # by task id
# A heartbeat a second; a worker silent for five is gone. Five beats missed is no scheduling
# hiccup (the model and the decoders release the GIL), and it bounds how long a batch held by
# a dead or frozen worker waits.
BEAT_SECONDS = 1.0
ALIVE_SECONDS = 5
# A taken record outlives any batch (its answer deletes it); this only bounds what a watcher
# that died leaves.
TAKEN_SECONDS = 3600
# A batch not taken this long after it was sent, while a worker has been idle this long, was
# lost by the transport (an idle worker takes a queued batch within milliseconds).
UNTAKEN_SECONDS = 5.0
SCAN_COUNT = 1000


def host_name() -> str:
    """This host's name as a heartbeat spells it (characters outside ``HOST`` as ``-``)."""
    name = "".join(c if HOST.fullmatch(c) else "-" for c in socket.gethostname()[:253])
    return name or "host"


class Heart:
    """One classify worker process's heartbeat and taken records. ``taking`` and ``done`` are
    called around each batch; ``start`` beats from a thread until ``stop``."""

    def __init__(self, redis, key: bytes | None, *, host: str | None = None, pid: int | None = None,
                 clock=time.monotonic) -> None:
        self.redis = redis
        self.key = key
        self.host = host or host_name()
        self.pid = os.getpid() if pid is None else pid
        self.clock = clock
        self.task: str | None = None
        self.idle_since = clock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    @property
    def alive_key(self) -> str:
        return ALIVE_KEY.format(self.host, self.pid)

    def taking(self, task_id: str) -> None:
        """Record the batch as ours before any work on it. Redis being away raises (the task
        goes back on the queue)."""
        pipe = self.redis.pipeline()
        pipe.set(TAKEN_KEY.format(task_id), pack_taken(Taken(task_id, self.host, self.pid), self.key),
                 ex=TAKEN_SECONDS)
        pipe.set(self.alive_key, self._beat_value(task_id), ex=ALIVE_SECONDS)
        pipe.execute()
        self.task = task_id

    def done(self, task_id: str) -> None:
        """The batch answered: its taken record is no longer needed."""
        self.task, self.idle_since = None, self.clock()
        try:
            self.redis.delete(TAKEN_KEY.format(task_id))
        except Exception as exc:  # noqa: BLE001 - it expires anyway
            log.debug("taken record of %s not deleted: %s", task_id, exc)

    def beat(self) -> None:
        """Refresh the heartbeat; Redis away is logged once (the worker waits it out)."""
        try:
            self.redis.set(self.alive_key, self._beat_value(self.task), ex=ALIVE_SECONDS)
        except Exception as exc:  # noqa: BLE001 - redis raises many kinds for one outage
            if not self._failing:
                log.warning("heartbeat not written (%s); retried every %.0f s", exc, BEAT_SECONDS)
            self._failing = True
            return
        self._failing = False

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """No more beats, and the heartbeat deleted: the watcher need not wait for it to expire."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(BEAT_SECONDS * 2)
        try:
            self.redis.delete(self.alive_key)
        except Exception as exc:  # noqa: BLE001 - it expires anyway
            log.debug("heartbeat not deleted: %s", exc)

    def _run(self) -> None:
        while not self._stopped.wait(BEAT_SECONDS):
            self.beat()

    def _beat_value(self, task: str | None) -> bytes:
        idle = 0.0 if task is not None else max(0.0, self.clock() - self.idle_since)
        return pack_heartbeat(Heartbeat(self.host, self.pid, task, idle), self.key)


@dataclass(frozen=True)
class Snapshot:
    """What the watcher saw at one look: live workers by (host, pid), taken records by task id."""

    alive: dict[tuple[str, int], Heartbeat]
    taken: dict[str, Taken]

    def idle_for(self, seconds: float) -> bool:
        return any(b.task is None and b.idle >= seconds for b in self.alive.values())


def look(redis, key: bytes | None, task_ids: list[str], rejected=lambda exc: None) -> Snapshot:
    """The heartbeats and the taken records of ``task_ids``; a value that fails its check is
    left out and given to ``rejected``."""
    names = [n.decode() if isinstance(n, bytes) else n
             for n in redis.scan_iter(match=ALIVE_PREFIX + "*", count=SCAN_COUNT)]
    alive: dict[tuple[str, int], Heartbeat] = {}
    for name, raw in zip(names, redis.mget(names) if names else [], strict=True):
        worker = _worker_of(name)
        if raw is None or worker is None:
            continue  # expired between the scan and the read, or not a key we write
        try:
            alive[worker] = parse_heartbeat(raw, key, worker)
        except Rejected as exc:
            rejected(exc)
    taken: dict[str, Taken] = {}
    raws = redis.mget([TAKEN_KEY.format(t) for t in task_ids]) if task_ids else []
    for task_id, raw in zip(task_ids, raws, strict=True):
        if raw is None:
            continue
        try:
            taken[task_id] = parse_taken(raw, key, task_id)
        except Rejected as exc:
            rejected(exc)
    return Snapshot(alive, taken)


def _worker_of(name: str) -> tuple[str, int] | None:
    host, _, pid = name.removeprefix(ALIVE_PREFIX).rpartition(":")
    if not (HOST.fullmatch(host) and pid.isdigit() and len(pid) <= 10):
        return None
    return (host, int(pid))


def forget(redis, task_id: str) -> None:
    """Delete a batch's taken record as it is sent again, so that who takes it next is seen
    (and nobody taking it is too)."""
    redis.delete(TAKEN_KEY.format(task_id))


def to_resend(out: dict[str, float], snapshot: Snapshot, now: float) -> dict[str, str]:
    """The batches to send again, with why: ``out`` maps each batch sent and unanswered to
    when it was sent."""
    resend = {}
    for task_id, sent_at in out.items():
        taken = snapshot.taken.get(task_id)
        if taken is not None:
            if taken.worker not in snapshot.alive:
                resend[task_id] = "worker-gone"
        elif now - sent_at >= UNTAKEN_SECONDS and snapshot.idle_for(UNTAKEN_SECONDS):
            resend[task_id] = "untaken"
    return resend
