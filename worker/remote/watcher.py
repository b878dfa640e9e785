"""The watcher's side of ``--broker``: the pipeline with its model on other hosts.

What comes before and after the model is the same as without a broker, and keeps its
guarantees: files are claimed by rename, rows made durable before an input leaves ``.work/``,
claims a crash left are replayed by claim id. The middle changes: a batch's files are read
here (not decoded: no decoder runs in the watcher) and sent, bytes and all, as Celery tasks
(``flight``); up to ``in_flight`` batches are out at a time, each finished here when its answer
comes (``replies``: every answer checked, what fails dropped and counted). A batch with no
answer is sent again under the same task id (``resend``); a long silence of all the workers is
said (``silence``). After a watcher's restart the claim ids see to it, as they do without a
broker, that no row is written twice.

The command line builds this pipeline (``remote_pipeline``) and hands it to the daemon, which
never imports the remote mode.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from worker.daemon.claim import Claim
from worker.daemon.pipeline import Pipeline
from worker.daemon.settings import Settings
from worker.outbox.predictions import Written
from worker.remote.answer_message import Answer
from worker.remote.connection import Broker
from worker.remote.flight import RemoteFlight, chunks, read_flight
from worker.remote.replies import Replies
from worker.remote.resend import Resender
from worker.remote.silence import Silence
from worker.remote.task_message import Task, pack_task

log = logging.getLogger(__name__)

# At a stop, answers are awaited this long (well inside systemd's TimeoutStopSec=30); the
# batches still out replay at the next start.
CLOSE_WAIT_SECONDS = 10.0


def remote_pipeline(broker: Broker, settings: Settings) -> Callable[..., RemotePipeline]:
    """The daemon's pipeline factory with ``--broker``: batches go out through ``broker``."""
    return functools.partial(RemotePipeline, broker=broker, in_flight=settings.in_flight,
                             retry=settings.retry, resend_after=settings.resend_after)


class RemotePipeline(Pipeline):
    """The pipeline with the model call replaced by a Celery task per batch."""

    def __init__(self, *args, broker: Broker, in_flight: int, retry: float, resend_after: float,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.broker = broker
        self.in_flight = in_flight
        self.flights: list[RemoteFlight] = []
        self.silence = Silence(resend_after, self.clock)
        self.replies = Replies(broker.key, retry=retry, clock=self.clock, on_answer=self.silence.heard,
                               metrics=self.metrics)
        self.resender = Resender(broker, resend_after=resend_after, clock=self.clock, metrics=self.metrics)

    def overlap(self) -> None:
        """Nothing to overlap here: the model runs elsewhere."""

    def room(self) -> bool:
        return len(self.flights) < self.in_flight

    def reachable(self) -> bool:
        """Whether Redis answered at the last try (the batches cannot go out while it does not)."""
        return self.broker.up

    def busy(self) -> bool:
        return bool(self.flights) or super().busy()

    def in_hand(self) -> set:
        return {c.path for f in self.flights for c in f.claims} | super().in_hand()

    def note(self) -> str:
        if not self.flights:
            return ""
        oldest = self.clock() - min(f.started for f in self.flights)
        files = sum(len(f.claims) for f in self.flights)
        broker = "" if self.broker.up else ", broker unreachable"
        return f"; {len(self.flights)} batches ({files} files) with workers, oldest {oldest:.0f} s{broker}"

    def process(self, claims: list[Claim], *, written: Written | None = None, alone: bool = False) -> int:
        """Read the claimed files and send them, in tasks of about ``TASK_BYTES``."""
        for chunk in chunks(claims):
            flight = read_flight(chunk, written, limits=self.limits, classifier=self.classifier,
                                 clock=self.clock)
            self.flights.append(flight)
            if flight.files:
                self._send(flight)
            else:  # nothing readable: nothing to send, the answer is known
                flight.answer = Answer(flight.task_id, model=flight.model)
        return len(claims)

    def process_alone(self, claim: Claim, written: Written) -> int:
        """A claim a watcher died holding is not suspect here: the watcher decodes nothing."""
        return self.process([claim], written=written)

    def collect(self) -> int:
        """Finish the batches answered; send those waiting to go. Returns the files finished."""
        self.resender.after_restart(self.flights)
        # First the answers: a batch just answered has no taken record left.
        self.replies.take(self.broker.answers(), self.flights)
        self.resender.overdue(self.flights)
        self.resender.lost(self.flights, self.replies.rejected)
        finished = 0
        for flight in list(self.flights):
            if flight.answer is not None:
                self.flights.remove(flight)  # before finishing: a failed finish replays from .work/
                self.replies.finished(flight.task_id)
                self.finisher.finish(flight)
                finished += len(flight.claims)
            elif not flight.sent:
                self._send(flight)
        self._count()
        return finished

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for an answer; False at once if no batch is out."""
        if not self.flights:
            return False
        self.replies.take(self.broker.answers(timeout), self.flights)
        return True

    def finish_pending(self) -> None:
        self.collect()

    def drop_pending(self) -> None:
        """After a failed write: the batches out stay claimed and are replayed after the repair."""
        self.flights.clear()

    def close(self) -> None:
        deadline = self.clock() + CLOSE_WAIT_SECONDS
        while self.flights and self.clock() < deadline:
            self.settle_pending()
            self.wait(0.1)
        if self.flights:
            log.warning("stopping with %d batches unanswered: their files stay claimed and are sent "
                        "again at the next start", len(self.flights))
            self.flights.clear()
        super().close()

    def _send(self, flight: RemoteFlight) -> None:
        if self.clock() < flight.send_after:
            return
        task = Task(flight.task_id, flight.model, tuple(flight.files), self.limits, self.broker.replies)
        flight.sent = self.broker.send(flight.task_id, pack_task(task, self.broker.key))
        flight.sent_at = self.clock()

    def _count(self) -> None:
        now = self.clock()  # one reading: the age of the oldest is 0, never below, when none is out
        self.silence.watch(now, self.flights, self.broker.up)
        if self.metrics is not None:
            oldest = now - min((f.started for f in self.flights), default=now)
            self.metrics.remote(len(self.flights), sum(len(f.claims) for f in self.flights), oldest,
                                self.broker.up, self.resender.alive)
