"""The answers read on this watcher's reply list, each given to the batch it answers.

Anything can be pushed on the reply list by anyone who can reach Redis (its name is in every
queued task). Each value read there is parsed and checked (``messages``): its seal with a shared
key, its fields, then against the batch it claims to answer (claim ids, model name and version,
one row of probabilities per input). What fails is dropped, counted in
``worker_broker_rejected_total{reason}`` and logged once a minute for each reason at most; it
never stops the watcher and never becomes a row. The first answer read for a batch is used; a
second one (the batch was sent twice) is dropped, so a batch answered twice writes its rows once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from worker.remote.answer_message import Answer, parse_answer
from worker.remote.flight import RemoteFlight
from worker.remote.messages import Rejected

if TYPE_CHECKING:  # prometheus_client is imported only with --metrics
    from worker.daemon.metrics import Metrics

log = logging.getLogger(__name__)

# A flood of bad answers is one log line a minute for each reason (the metric counts them all).
REJECT_LOG_SECONDS = 60.0
# Task ids of batches finished lately, to tell a second answer (a batch sent twice) from a forged one.
FINISHED_KEPT = 4096


class Replies:
    def __init__(self, key: bytes | None, *, retry: float, clock: Callable[[], float],
                 on_answer: Callable[[], None] = lambda: None, metrics: Metrics | None = None) -> None:
        self.key = key
        self.retry = retry  # a refused batch is sent again after this long
        self.clock = clock
        self.on_answer = on_answer  # told of each answer from a worker, a refusal too
        self.metrics = metrics
        self._finished: dict[str, None] = {}  # task ids, oldest first
        self._logged: dict[str, tuple[float, int]] = {}  # reason: when last logged, since

    def take(self, frames: list[bytes], flights: list[RemoteFlight]) -> None:
        """Give each answer, once checked, to its batch; what fails a check is dropped and
        counted, and so is a second answer for a batch finished already (it was sent twice)."""
        waiting = {f.task_id: f for f in flights if f.answer is None}
        for frame in frames:
            try:
                self._give(parse_answer(frame, self.key), waiting, flights)
            except Rejected as exc:
                self.rejected(exc)

    def finished(self, task_id: str) -> None:
        """The batch is finished: a later answer for it is a duplicate, not a forgery."""
        self._finished[task_id] = None
        if len(self._finished) > FINISHED_KEPT:
            del self._finished[next(iter(self._finished))]

    def rejected(self, exc: Rejected) -> None:
        """Count a dropped message; log the first of each reason, then once a minute at most."""
        if self.metrics is not None:
            self.metrics.broker_rejected(exc.reason)
        now = self.clock()
        logged, since = self._logged.get(exc.reason, (float("-inf"), 0))
        if exc.reason == "duplicate":
            log.debug("an answer dropped: %s", exc)
        elif now - logged >= REJECT_LOG_SECONDS:
            more = f" ({since} more of this kind since the last such line)" if since else ""
            log.warning("an answer from the broker dropped: %s%s", exc, more)
            self._logged[exc.reason] = (now, 0)
            return
        self._logged[exc.reason] = (logged, since + 1)

    def _give(self, answer: Answer, waiting: dict[str, RemoteFlight], flights: list[RemoteFlight]) -> None:
        flight = waiting.get(answer.task_id)
        if flight is None:
            late = answer.task_id in self._finished or any(f.task_id == answer.task_id for f in flights)
            raise Rejected("duplicate" if late else "unknown-task", f"an answer for batch {answer.task_id}, "
                           + ("finished already" if late else "which this watcher has not out"))
        self.on_answer()
        if answer.refused is not None:
            log.error("a batch of %d files was refused (%s); sent again in %.0f s",
                      len(flight.claims), answer.refused, self.retry)
            flight.sent, flight.send_after = False, self.clock() + self.retry
            return
        flight.take(answer)
        del waiting[answer.task_id]
