"""The watcher's side of ``--broker``: the pipeline with its model on other hosts.

What comes before and after the model is the same as without a broker, and keeps its
guarantees: files are claimed by rename, rows made durable before an input leaves ``.work/``,
claims a crash left are replayed by claim id. The middle changes: a batch's files are read
here (not decoded: no decoder runs in the watcher) and sent, bytes and all, as one Celery
task; up to ``in_flight`` batches are out at a time, each finished here when its answer comes.

A batch is sent again, under the same task id, when Redis restarted since it was sent (a
Redis without persistence forgets its queue and its answers), when a worker refused it (it
had not the model version), when the worker that took it has no heartbeat any more or nobody
took it while workers sat idle (``liveness``: Redis' transport is not airtight, a worker killed
between taking a task off the queue and noting it as unacknowledged loses it), and, as the last
resort, when it has had no answer for ``resend_after`` seconds. Each is counted in
``worker_remote_resent_total{reason}``; a batch sent twice costs a second run, never a second
row. The first answer read is used
and the batch is finished; a second answer for it is dropped. So a batch answered twice
writes its rows once, and after a watcher's restart the claim ids see to it as they do
without a broker.

Anything can be pushed on the reply list by anyone who can reach Redis (its name is in every
queued task). Each value read there is parsed and checked (``broker_messages``): its seal with
a shared key, its fields, then against the batch it claims to answer (claim ids, model name
and version, one row of probabilities per input). What fails is dropped, counted in
``worker_broker_rejected_total{reason}`` and logged once a minute for each reason at most; it
never stops the watcher and never becomes a row. A file's sha256 is computed here from the bytes
sent, never taken from an answer.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass

from worker.daemon.claim import Claim, claim_size
from worker.daemon.classify import Outcome, outcomes_of
from worker.daemon.pipeline import Pipeline
from worker.errors import InputError
from worker.model.classifier import Classifier, Scored
from worker.outbox.predictions import Written
from worker.preprocess import LoadedInput, read_bytes
from worker.remote.answer_message import Answer, Scores, parse_answer
from worker.remote.broker import REPLY_KEY, TASK, check_version, make_app, redis_client, safe_url
from worker.remote.liveness import Snapshot, forget, look, to_resend
from worker.remote.messages import Rejected
from worker.remote.task_message import Task, TaskFile, pack_task

log = logging.getLogger(__name__)

# A batch's files are cut into tasks of about this much: a few pages each, so the pages of one
# batch spread over the workers (a task costs the watcher about a millisecond).
TASK_BYTES = 1024 * 1024
RESTART_CHECK_SECONDS = 1.0
LIVENESS_CHECK_SECONDS = 1.0  # heartbeats and taken records are read this often
ANSWERS_AT_ONCE = 64
# At a stop, answers are awaited this long (well inside systemd's TimeoutStopSec=30); the
# batches still out replay at the next start.
CLOSE_WAIT_SECONDS = 10.0
# A flood of bad answers is one log line a minute for each reason (the metric counts them all).
REJECT_LOG_SECONDS = 60.0
# Task ids of batches finished lately, to tell a second answer (a batch sent twice) from a forged one.
FINISHED_KEPT = 4096
# No answer to any batch out for this share of --resend-after is logged: by default that is the
# classify workers' visibility timeout (resend_after is twice it), and a worker answers a batch it
# took well within it (its batch deadline), so a silence that long means no worker takes them.
SILENCE_SHARE = 0.5


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


def broker_status(url: str, key: bytes | None = None) -> dict:
    """For ``worker status --broker``: the classify worker processes alive by their heartbeat
    (what the watcher sees), and the batches queued for them."""
    from worker.remote.broker import QUEUE

    report = {"url": safe_url(url), "reachable": False, "workers": [], "queued": None, "error": None}
    try:
        client = redis_client(url)
        queued = client.llen(QUEUE)
        alive = look(client, key, []).alive
    except Exception as exc:  # noqa: BLE001 - redis raises many kinds for one outage
        report["error"] = str(exc)
        return report
    workers = [{"host": b.host, "pid": b.pid, "batch": b.task, "idle_seconds": round(b.idle, 1)}
               for _, b in sorted(alive.items())]
    report.update(reachable=True, queued=queued, workers=workers)
    return report


@dataclass
class RemoteFlight:
    """A batch out with the classify workers. ``unread`` are the files that could not be read
    here (their errors, by position); the others travel as ``files``, with the sha256 of
    their bytes kept here (``digests``, in the same order)."""

    claims: list[Claim]
    files: list[TaskFile]
    digests: list[str]
    unread: dict[int, InputError]
    written: Written | None
    started: float
    classifier: Classifier
    task_id: str
    sent: bool = False
    sent_at: float = 0.0
    send_after: float = float("-inf")  # a refused batch is sent again after the retry time
    answer: Answer | None = None
    scores: Scores | None = None

    @property
    def model(self) -> tuple[str, str]:
        return (self.classifier.name, self.classifier.version)

    def take(self, answer: Answer) -> None:
        """The answer, once checked against this batch (``Rejected`` if it does not fit)."""
        ids = [f.claim_id for f in self.files]
        self.scores = answer.check(ids, self.model, len(self.classifier.class_names))
        self.answer = answer

    def outcomes(self) -> list[Outcome]:
        remote = iter(zip(self.answer.files, self.digests, strict=True))
        loaded = [self.unread[i] if i in self.unread else _loaded(*next(remote))
                  for i in range(len(self.claims))]
        scored = None if self.scores is None else \
            Scored(self.scores.probabilities, self.scores.reviews, self.scores.review_scores)
        return outcomes_of([c.path for c in self.claims], loaded, self.classifier, scored)


def _loaded(answer, sha256: str) -> LoadedInput | InputError:
    """A file's answer as what ``outcomes_of`` takes: its error, or its pages without pixels
    and the digest of the bytes sent."""
    if answer.error is not None:
        kind, message, bytes_read = answer.error
        error = InputError(kind, message)
        error.bytes_read = bytes_read
        return error
    return LoadedInput(pixels=None, sha256=sha256, pages=tuple((n, None) for n in answer.pages))


class RemotePipeline(Pipeline):
    """The pipeline with the model call replaced by a Celery task per batch."""

    def __init__(self, *args, broker: Broker, in_flight: int, retry: float, resend_after: float,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.broker = broker
        self.in_flight = in_flight
        self.retry = retry
        self.resend_after = resend_after
        self.flights: list[RemoteFlight] = []
        self.alive: int | None = None  # classify worker processes with a heartbeat, at the last look
        self._finished: dict[str, None] = {}  # task ids, oldest first
        self._reject_logged: dict[str, tuple[float, int]] = {}  # reason: when last logged, since
        self.silence_after = SILENCE_SHARE * resend_after
        self._heard = self.clock()  # when a worker last answered, or there was nothing to answer
        self._silent = False  # the silence was logged

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
        for chunk in self._chunks(claims):
            flight = self._read(chunk, written)
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
        if self.broker.restarted():
            log.warning("the broker restarted: %d unanswered batches are sent again", len(self.flights))
            for flight in self.flights:
                if flight.answer is None:
                    self._resend(flight, "redis-restart")
        self._take(self.broker.answers())  # first: a batch just answered has no taken record left
        self._resend_overdue()
        self._resend_lost()
        finished = 0
        for flight in list(self.flights):
            if flight.answer is not None:
                self.flights.remove(flight)  # before finishing: a failed finish replays from .work/
                self._note_finished(flight.task_id)
                self._finish(flight)
                finished += len(flight.claims)
            elif not flight.sent:
                self._send(flight)
        self._count()
        return finished

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for an answer; False at once if no batch is out."""
        if not self.flights:
            return False
        self._take(self.broker.answers(timeout))
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

    def _chunks(self, claims: list[Claim]):
        chunk: list[Claim] = []
        size = 0
        for claim in claims:
            bytes_ = claim_size(claim)
            if chunk and size + bytes_ > TASK_BYTES:
                yield chunk
                chunk, size = [], 0
            chunk.append(claim)
            size += bytes_
        if chunk:
            yield chunk

    def _read(self, claims: list[Claim], written: Written | None) -> RemoteFlight:
        files, digests, unread = [], [], {}
        for i, claim in enumerate(claims):
            try:
                data = read_bytes(claim.path, max_bytes=self.limits.max_bytes, follow_symlinks=False,
                                  name=claim.rel)
            except InputError as exc:
                unread[i] = exc
                continue
            files.append(TaskFile(claim.id, claim.rel, data))
            digests.append(hashlib.sha256(data).hexdigest())
        return RemoteFlight(claims, files, digests, unread, written, self.clock(), self.classifier,
                            uuid.uuid4().hex)

    def _send(self, flight: RemoteFlight) -> None:
        if self.clock() < flight.send_after:
            return
        task = Task(flight.task_id, flight.model, tuple(flight.files), self.limits, self.broker.replies)
        flight.sent = self.broker.send(flight.task_id, pack_task(task, self.broker.key))
        flight.sent_at = self.clock()

    def _resend_overdue(self) -> None:
        now = self.clock()
        for flight in self.flights:
            if flight.sent and flight.answer is None and now - flight.sent_at > self.resend_after:
                log.warning("a batch of %d files has had no answer for %.0f s: sent again",
                            len(flight.claims), now - flight.sent_at)
                self._resend(flight, "timeout")

    def _resend_lost(self) -> None:
        """Send again the batches whose worker is gone, or which nobody took while a worker sat
        idle (``liveness.to_resend``)."""
        out = {f.task_id: f for f in self.flights if f.sent and f.answer is None}
        snapshot = self.broker.liveness(list(out), self._rejected)
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
            self._resend(flight, reason)

    def _resend(self, flight: RemoteFlight, reason: str) -> None:
        flight.sent = False
        if self.metrics is not None:
            self.metrics.remote_resent(reason)

    def _take(self, frames: list[bytes]) -> None:
        """Give each answer, once checked, to its batch; what fails a check is dropped and
        counted, and so is a second answer for a batch finished already (it was sent twice)."""
        waiting = {f.task_id: f for f in self.flights if f.answer is None}
        for frame in frames:
            try:
                self._give(parse_answer(frame, self.broker.key), waiting)
            except Rejected as exc:
                self._rejected(exc)

    def _give(self, answer: Answer, waiting: dict[str, RemoteFlight]) -> None:
        flight = waiting.get(answer.task_id)
        if flight is None:
            late = answer.task_id in self._finished or any(f.task_id == answer.task_id for f in self.flights)
            raise Rejected("duplicate" if late else "unknown-task", f"an answer for batch {answer.task_id}, "
                           + ("finished already" if late else "which this watcher has not out"))
        self._heard_from_a_worker()
        if answer.refused is not None:
            log.error("a batch of %d files was refused (%s); sent again in %.0f s",
                      len(flight.claims), answer.refused, self.retry)
            flight.sent, flight.send_after = False, self.clock() + self.retry
            return
        flight.take(answer)
        del waiting[answer.task_id]

    def _rejected(self, exc: Rejected) -> None:
        """Count a dropped message; log the first of each reason, then once a minute at most."""
        if self.metrics is not None:
            self.metrics.broker_rejected(exc.reason)
        now = self.clock()
        logged, since = self._reject_logged.get(exc.reason, (float("-inf"), 0))
        if exc.reason == "duplicate":
            log.debug("an answer dropped: %s", exc)
        elif now - logged >= REJECT_LOG_SECONDS:
            more = f" ({since} more of this kind since the last such line)" if since else ""
            log.warning("an answer from the broker dropped: %s%s", exc, more)
            self._reject_logged[exc.reason] = (now, 0)
            return
        self._reject_logged[exc.reason] = (logged, since + 1)

    def _note_finished(self, task_id: str) -> None:
        self._finished[task_id] = None
        if len(self._finished) > FINISHED_KEPT:
            del self._finished[next(iter(self._finished))]

    def _heard_from_a_worker(self) -> None:
        """A batch answered (or refused: a worker took it all the same)."""
        if self._silent:
            log.info("classify workers answer again, after %.0f s without an answer",
                     self.clock() - self._heard)
        self._silent = False
        self._heard = self.clock()

    def _watch_silence(self, now: float) -> None:
        """Log once when batches are out with the workers and none has been answered for
        ``silence_after``. While Redis is away that outage is what is logged, and the silence
        is counted from its return."""
        if not self.flights:
            self._silent = False  # nothing out: a next silence is a new one
        if not self.broker.up or not any(f.sent and f.answer is None for f in self.flights):
            self._heard = now  # nothing a worker could have answered
        elif not self._silent and now - self._heard >= self.silence_after:
            self._silent = True
            log.warning("no classify worker has answered for %.0f s (%d batches waiting): is one "
                        "running, with this broker and key? (worker status --broker)",
                        now - self._heard, sum(f.answer is None for f in self.flights))

    def _count(self) -> None:
        now = self.clock()  # one reading: the age of the oldest is 0, never below, when none is out
        self._watch_silence(now)
        if self.metrics is not None:
            oldest = now - min((f.started for f in self.flights), default=now)
            self.metrics.remote(len(self.flights), sum(len(f.claims) for f in self.flights), oldest,
                                self.broker.up, self.alive)
