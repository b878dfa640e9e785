"""Sending a batch again, under the same task id: when Redis restarted since it was sent (a Redis
without persistence forgets its queue and its answers), when the worker that took it has no
heartbeat any more or nobody took it while workers sat idle (``liveness``: Redis' transport is not
airtight, a worker killed between taking a task off the queue and noting it as unacknowledged
loses it), and, as the last resort, when it has had no answer for ``resend_after`` seconds. (A
worker's refusal is ``replies``'.) Each is counted in ``worker_remote_resent_total{reason}``; a
batch sent twice costs a second run, never a second row."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from worker.remote.flight import RemoteFlight
from worker.remote.liveness import to_resend
from worker.remote.messages import Rejected

if TYPE_CHECKING:  # prometheus_client is imported only with --metrics
    from worker.daemon.metrics import Metrics
    from worker.remote.connection import Broker

log = logging.getLogger(__name__)


class Resender:
    def __init__(self, broker: Broker, *, resend_after: float, clock: Callable[[], float],
                 metrics: Metrics | None = None) -> None:
        self.broker = broker
        self.resend_after = resend_after
        self.clock = clock
        self.metrics = metrics
        self.alive: int | None = None  # classify worker processes with a heartbeat, at the last look

    def after_restart(self, flights: list[RemoteFlight]) -> None:
        """Redis restarted (looked at most once a second): every batch unanswered goes again."""
        if not self.broker.restarted():
            return
        log.warning("the broker restarted: %d unanswered batches are sent again", len(flights))
        for flight in flights:
            if flight.answer is None:
                self._again(flight, "redis-restart")

    def overdue(self, flights: list[RemoteFlight]) -> None:
        now = self.clock()
        for flight in flights:
            if flight.sent and flight.answer is None and now - flight.sent_at > self.resend_after:
                log.warning("a batch of %d files has had no answer for %.0f s: sent again",
                            len(flight.claims), now - flight.sent_at)
                self._again(flight, "timeout")

    def lost(self, flights: list[RemoteFlight], rejected: Callable[[Rejected], None]) -> None:
        """Send again the batches whose worker is gone, or which nobody took while a worker sat
        idle (``liveness.to_resend``); a bad heartbeat or taken record goes to ``rejected``."""
        out = {f.task_id: f for f in flights if f.sent and f.answer is None}
        snapshot = self.broker.liveness(list(out), rejected)
        if snapshot is None:
            return
        self.alive = len(snapshot.alive)
        for task_id, reason in to_resend({t: f.sent_at for t, f in out.items()}, snapshot,
                                         self.clock()).items():
            flight = out[task_id]
            taker = snapshot.taken.get(task_id)
            log.warning("a batch of %d files %s: sent again", len(flight.claims),
                        f"was taken by {taker.host} pid {taker.pid}, which has no heartbeat any more"
                        if taker else "was taken by no worker while one sat idle")
            self.broker.forget(task_id)
            self._again(flight, reason)

    def _again(self, flight: RemoteFlight, reason: str) -> None:
        flight.sent = False
        if self.metrics is not None:
            self.metrics.remote_resent(reason)
