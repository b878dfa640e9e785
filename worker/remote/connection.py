"""The watcher's connection to Redis (``--broker``): send a task, take the answers, notice a
restart, look at the workers' heartbeats. Celery is imported when a ``Broker`` is made
(``broker.make_app``), and this module only with ``--broker``."""

from __future__ import annotations

import logging
import time
import uuid

from worker.remote.broker import REPLY_KEY, TASK, check_version, make_app, redis_client
from worker.remote.liveness import Snapshot, forget, look
from worker.urls import safe_url

log = logging.getLogger(__name__)

RESTART_CHECK_SECONDS = 1.0
LIVENESS_CHECK_SECONDS = 1.0  # heartbeats and taken records are read this often
ANSWERS_AT_ONCE = 64


class Broker:
    """The watcher's connection to Redis: send a task, take the answers, notice a restart.
    Redis being unreachable is never an error here: it is logged once, and the caller tries
    again later."""

    def __init__(self, url: str, *, key: bytes | None = None, clock=time.monotonic, redis=None) -> None:
        self.url = url
        self.key = key
        self.app = make_app(url)
        # A send fails at once while Redis is away (kombu would otherwise retry for seconds,
        # with the loop stopped); the batch is sent again at the next turn.
        self.app.conf.broker_transport_options.update(max_retries=0)
        self.redis = redis if redis is not None else redis_client(url)
        self.replies = REPLY_KEY.format(uuid.uuid4().hex)  # this watcher's answers
        self.clock = clock
        self.up = True
        self._run_id: str | None = None
        self._checked = float("-inf")
        self._looked = float("-inf")
        self.restarted()  # a first look: says at once if Redis cannot be reached

    def send(self, task_id: str, args: list) -> bool:
        try:
            self.app.send_task(TASK, args=args, task_id=task_id, retry=False)
        except Exception as exc:  # noqa: BLE001 - kombu and redis raise many kinds for one outage
            return self._lost(exc)
        return self._reached()

    def answers(self, timeout: float = 0) -> list[bytes]:
        """The values pushed on our list since the last call, unread (``parse_answer`` reads
        them); with a ``timeout``, waits that long for the first. Empty while Redis cannot be
        reached."""
        try:
            packed = self.redis.lpop(self.replies, ANSWERS_AT_ONCE) or []
            if not packed and timeout > 0:
                first = self.redis.blpop([self.replies], timeout=timeout)
                packed = [first[1]] if first else []
        except Exception as exc:  # noqa: BLE001
            self._lost(exc)
            if timeout > 0:
                time.sleep(timeout)  # not a busy loop while Redis is away
            return []
        self._reached()
        return packed

    def restarted(self) -> bool:
        """Whether Redis restarted since the last look (at most once a second): its queue and
        answers may be gone."""
        now = self.clock()
        if now - self._checked < RESTART_CHECK_SECONDS:
            return False
        self._checked = now
        try:
            info = self.redis.info("server")
        except Exception as exc:  # noqa: BLE001
            self._lost(exc)
            return False
        self._reached()
        run_id = info["run_id"]
        if run_id != self._run_id:  # a Redis first reached, or another since: is it new enough?
            check_version(self.redis, self.url)
        restarted = self._run_id is not None and run_id != self._run_id
        self._run_id = run_id
        return restarted

    def liveness(self, task_ids: list[str], rejected) -> Snapshot | None:
        """The heartbeats and the taken records of ``task_ids`` (at most once a second; None
        between looks and while Redis cannot be reached)."""
        now = self.clock()
        if now - self._looked < LIVENESS_CHECK_SECONDS:
            return None
        self._looked = now
        try:
            return look(self.redis, self.key, task_ids, rejected)
        except Exception as exc:  # noqa: BLE001
            self._lost(exc)
            return None

    def forget(self, task_id: str) -> None:
        """Delete a batch's taken record as it is sent again (Redis away: it is sent anyway)."""
        try:
            forget(self.redis, task_id)
        except Exception as exc:  # noqa: BLE001
            self._lost(exc)

    def _lost(self, exc: Exception) -> bool:
        if self.up:
            log.error("broker %s unreachable (%s); batches wait and are sent when it is back",
                      safe_url(self.url), exc)
        self.up = False
        return False

    def _reached(self) -> bool:
        if not self.up:  # good news: info, not a warning (journalctl -p warning shows the outage alone)
            log.info("broker %s reachable again", safe_url(self.url))
        self.up = True
        return True
