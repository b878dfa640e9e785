"""The daemon: find ready files, claim them, classify a batch, make rows durable, archive.

``Daemon.step()`` does one batch and returns how many files it finished, so tests drive the
loop without threads or sleeps; ``Daemon.run()`` is the long-lived loop around it, with a real
watchdog observer feeding events. The order inside a batch is what makes it crash-safe:

    claim (rename into .work/) -> classify -> rows appended + fsynced -> inputs archived

A kill -9 anywhere leaves inputs in ``.work/``; the next start adopts them, finds which already
have rows (by claim id) and finishes them without writing any row twice.

``run()`` overlaps batches: a model thread runs the network on one batch (LiteRT releases the
GIL for the whole call) while the loop, the only thread doing Python work, finishes the batch
before it (rows, sync, archive) and claims and loads the next. Keeping every bit of Python on
one thread matters: two threads taking turns with the GIL hand it over at each system call,
and those hand-overs cost more than the work. A batch's rows are still durable before its inputs
leave ``.work/``; a batch whose finish fails keeps its files claimed for the next recovery.
``step()`` called on its own (as tests do) finishes its batch before returning.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from worker import defaults
from worker.claims import Claim, Claims
from worker.classify import Limits, Outcome, load_batch, model_input, predict_loaded
from worker.errors import ConfigError, InputError, WorkerError
from worker.model import Classifier
from worker.outbox import Outbox, Row, move_unique, place, write_error_record
from worker.preprocess import LoadedInput
from worker.watch import EVENT_FILTER, InboxEvents, StabilityTracker, arrivals_observer, scan

log = logging.getLogger(__name__)

# This many events in one step mean a burst: scanning the folder finds the whole burst at once,
# where watchdog reports it slowly (it holds events back to pair up moves).
BURST_EVENTS = 32
# After a failed write (disk full, I/O error), wait this long before trying again.
RETRY_SECONDS = 5.0
ON_SUCCESS = ("keep", "delete")


@dataclass(frozen=True)
class Settings:
    inbox: Path = defaults.INBOX
    outbox: Path = defaults.OUTBOX
    model: Path = defaults.MODEL
    once: bool = False
    poll: float | None = None  # seconds between polls; None: inotify events
    rescan: float = defaults.RESCAN_SECONDS
    settle: float = defaults.SETTLE_SECONDS
    recursive: bool = False
    batch_size: int = defaults.BATCH_SIZE
    max_delay_ms: int = defaults.MAX_DELAY_MS
    on_success: str = "keep"
    decode_threads: int = 2
    queue_limit: int = defaults.QUEUE_LIMIT
    limits: Limits = field(default_factory=Limits)

    def validate(self) -> Settings:
        if not self.inbox.is_dir():
            raise ConfigError(f"inbox {self.inbox} is not a folder; create it or pass --inbox")
        if self.outbox.resolve() == self.inbox.resolve() or self.outbox.resolve().is_relative_to(
            self.inbox.resolve()
        ):
            raise ConfigError("the outbox must not be inside the inbox")
        if self.settle < 0:
            raise ConfigError("--settle must not be negative")
        if self.rescan <= 0:
            raise ConfigError("--rescan must be a positive number of seconds")
        if self.poll is not None and self.poll <= 0:
            raise ConfigError("--poll must be a positive number of seconds")
        if self.batch_size < 1 or self.decode_threads < 1 or self.queue_limit < 1:
            raise ConfigError("--batch-size and --decode-threads must be at least 1")
        if self.max_delay_ms < 0:
            raise ConfigError("--max-delay must not be negative")
        if self.on_success not in ON_SUCCESS:
            raise ConfigError(f"--on-success must be one of: {', '.join(ON_SUCCESS)}")
        return self

    def describe(self) -> str:
        mode = "once" if self.once else (f"poll every {self.poll}s" if self.poll else "inotify")
        return (
            f"mode={mode} inbox={self.inbox} outbox={self.outbox} model={self.model} "
            f"recursive={self.recursive} settle={self.settle}s rescan={self.rescan}s "
            f"batch={self.batch_size} max_delay={self.max_delay_ms}ms on_success={self.on_success} "
            f"decode_threads={self.decode_threads} max_pixels={self.limits.max_pixels}"
        )


@dataclass
class Pending:
    """A claimed, loaded batch and the model's output for it: the model thread's future of it,
    or None to run the model when the batch is finished."""

    claims: list[Claim]
    loaded: list[LoadedInput | InputError]
    probabilities: Future | None
    replay: bool
    started: float


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Daemon:
    def __init__(self, settings: Settings, classifier: Classifier) -> None:
        self.settings = settings.validate()
        self.classifier = classifier
        self.inbox = settings.inbox.resolve()
        self.outbox = Outbox(settings.outbox, classifier.class_names)
        self.claims = Claims(self.inbox)
        self.tracker = StabilityTracker(settings.settle)
        self.events = InboxEvents(self.inbox, settings.queue_limit, settings.recursive)
        self.pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self.observer = None
        self._model_thread: ThreadPoolExecutor | None = None  # set by run(): batches overlap
        self._pending: Pending | None = None  # the batch the model thread has; finished next
        self._scanner: Iterator[str] | None = None
        self._last_scan = 0.0
        self._recovered: list[Claim] = []
        self.finished = 0

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Recover crashed claims, start watching, begin the start-up scan."""
        self._recovered = self.claims.recover()
        if self._recovered:
            log.warning("%d claimed files left by a crash will be finished", len(self._recovered))
        if not self.settings.once:
            self._start_observer()
        self._begin_scan(time.time())

    def _start_observer(self) -> None:
        if self.settings.poll:
            from watchdog.observers.polling import PollingObserver

            self.observer = PollingObserver(timeout=self.settings.poll)
        else:
            self.observer = arrivals_observer()
        self.observer.schedule(
            self.events, str(self.inbox), recursive=self.settings.recursive,
            event_filter=EVENT_FILTER,
        )
        self.observer.start()

    def close(self) -> None:
        if self._model_thread is not None:
            self._settle_pending()
            self._model_thread.shutdown()
            self._model_thread = None
        if self.observer is not None:
            self.observer.stop()
            self.observer.join()
            self.observer = None
        self.pool.shutdown()
        self.outbox.close()
        self.claims.close()

    def idle(self) -> bool:
        """Nothing known left to do: no recovered claims, no scan under way, nothing tracked."""
        return not self._recovered and self._scanner is None and len(self.tracker) == 0

    def run(self, stop: threading.Event, on_ready: Callable[[], None] | None = None) -> int:
        """Loop until ``stop`` is set (or, with --once, until the inbox is drained)."""
        self.start()
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="model")
        log.info("ready: %s", self.settings.describe())
        if on_ready:
            on_ready()
        try:
            while not stop.is_set():
                try:
                    done = self.step()
                    if done == 0 or (self.settings.once and self.idle()):
                        self._finish_pending()
                except OSError as exc:
                    self._after_write_failure(exc, stop)
                    continue
                if self.settings.once and self.idle():
                    break
                if done == 0:
                    self._wait(timeout=0.05 if self.settings.once else 0.2)
        finally:
            self.close()
        log.info("stopped after %d files", self.finished)
        return self.finished

    def _after_write_failure(self, exc: OSError, stop: threading.Event) -> None:
        """Disk trouble: nothing is lost (inputs stay claimed); repair, wait, finish them later."""
        if self.settings.once:
            raise WorkerError(f"cannot write to the outbox or archive: {exc}") from exc
        log.error("cannot write results (%s); retrying in %.0f s", exc, RETRY_SECONDS)
        # The next batch is not finished now (the outbox may end in a torn record): its files
        # stay claimed, and the recovery below finds them.
        self._pending = None
        stop.wait(RETRY_SECONDS)
        self.outbox.repair()
        self._recovered = self.claims.recover()

    # --- one step ---------------------------------------------------------------------------

    def step(self, now: float | None = None) -> int:
        """Process at most one batch; return the number of files finished."""
        now = time.time() if now is None else now
        if self._recovered:
            batch, self._recovered = (
                self._recovered[: self.settings.batch_size],
                self._recovered[self.settings.batch_size :],
            )
            return self._process(batch, replay=True)
        burst = self._drain_events() >= BURST_EVENTS and self._scanner is None
        if now - self._last_scan >= self.settings.rescan:
            self._finish_pending()  # recover() lists our own claims too: none may be in flight
            self._recovered = self.claims.recover()  # a worker that died since: adopt its claims
            self._begin_scan(now)
        elif burst or self.events.overflowed:  # events lost or slow: a scan finds the files now
            self._scanner = scan(self.inbox, self.settings.recursive)
        self.events.overflowed = False
        self._fill_from_scan()
        ready = self._gather(now)
        claims = [c for rel in ready if (c := self.claims.claim(rel)) is not None]
        return self._process(claims) if claims else 0

    def _begin_scan(self, now: float) -> None:
        self._last_scan = now
        self._scanner = scan(self.inbox, self.settings.recursive)

    def _fill_from_scan(self) -> None:
        """Top the tracker up from the scan, never beyond the queue limit."""
        while self._scanner is not None and len(self.tracker) < self.settings.queue_limit:
            rel = next(self._scanner, None)
            if rel is None:
                self._scanner = None
            else:
                self.tracker.note(rel)

    def _drain_events(self) -> int:
        """Move queued events into the tracker (up to its limit); return how many."""
        count = 0
        while len(self.tracker) < self.settings.queue_limit:
            try:
                rel, closed = self.events.queue.get_nowait()
            except queue.Empty:
                break
            self.tracker.note(rel, closed=closed)
            count += 1
        return count

    def _gather(self, now: float) -> list[str]:
        """Ready files for one batch; while events keep coming, wait up to max-delay to fill it.
        A lone file is not held back: with no event pending, the batch goes at once."""
        limit = self.settings.batch_size
        ready = self.tracker.pop_ready(self.inbox, now, limit)
        deadline = time.monotonic() + self.settings.max_delay_ms / 1000
        while ready and len(ready) < limit and not self.events.queue.empty():
            if time.monotonic() > deadline:
                break
            self._drain_events()
            ready += self.tracker.pop_ready(self.inbox, time.time(), limit - len(ready))
        return ready

    def _wait(self, timeout: float) -> None:
        try:
            rel, closed = self.events.queue.get(timeout=timeout)
        except queue.Empty:
            return
        self.tracker.note(rel, closed=closed)

    # --- a batch ----------------------------------------------------------------------------

    def _process(self, claims: list[Claim], *, replay: bool = False) -> int:
        """Load the claimed files; finish the batch here, or hand it to the model thread and
        finish the one before it while the model runs."""
        started = time.perf_counter()
        paths = [c.path for c in claims]
        loaded = load_batch(
            paths, self.classifier, pool=self.pool, limits=self.settings.limits,
            follow_symlinks=False, names=[c.rel for c in claims],
        )
        inputs = None if self._model_thread is None else model_input(loaded)
        if inputs is None:  # step() on its own, or nothing in the batch the model can take
            self._finish(Pending(claims, loaded, None, replay, started))
            return len(claims)
        predicting = self._model_thread.submit(self.classifier.predict_proba, inputs)
        batch = Pending(claims, loaded, predicting, replay, started)
        previous, self._pending = self._pending, batch
        if previous is not None:
            self._finish(previous)
        return len(claims)

    def _finish_pending(self) -> None:
        """Finish the batch the model thread has; disk trouble (OSError) is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._finish(pending)

    def _settle_pending(self) -> None:
        """Let the pending batch end either way: if it fails, its files stay claimed, and are
        found again by the next recovery (or the next start)."""
        try:
            self._finish_pending()
        except OSError as exc:
            log.error("cannot finish a batch (%s); its files stay claimed for a retry", exc)

    def _finish(self, batch: Pending) -> None:
        """Make the batch's rows durable, and only then archive its inputs."""
        claims, replay = batch.claims, batch.replay
        probabilities = batch.probabilities.result() if batch.probabilities is not None else None
        outcomes = predict_loaded([c.path for c in claims], batch.loaded, self.classifier, probabilities)
        processed_at = utc_now()
        rows = [
            self._row(claim, outcome, processed_at)
            for claim, outcome in zip(claims, outcomes, strict=True) if outcome.ok
        ]
        skip_csv, skip_jsonl = (
            self.outbox.written_ids({r.id for r in rows}) if replay else (frozenset(), frozenset())
        )
        self.outbox.append(rows, skip_csv=skip_csv, skip_jsonl=skip_jsonl)
        failed = 0
        for claim, outcome in zip(claims, outcomes, strict=True):
            if outcome.ok:
                self._archive(claim)
            else:
                failed += 1
                self._quarantine(claim, outcome, processed_at)
            self.claims.finish(claim)
        self.finished += len(claims)
        log.info(
            "batch: %d files, %d rows, %d failed, %.1f ms%s", len(claims), len(rows), failed,
            (time.perf_counter() - batch.started) * 1000, " (recovered)" if replay else "",
        )

    def _row(self, claim: Claim, outcome: Outcome, processed_at: str) -> Row:
        p = outcome.prediction
        log.debug("%s -> %s (%.3f)", claim.rel, p.label, p.confidence)
        return Row(
            id=claim.id, file=claim.rel, label=p.label, confidence=p.confidence,
            class_index=p.class_index, sha256=outcome.sha256 or "", model=self.classifier.name,
            processed_at=processed_at,
            probabilities=dict(zip(self.classifier.class_names, p.probabilities, strict=True)),
        )

    def _archive(self, claim: Claim) -> None:
        if self.settings.on_success == "delete":
            os.unlink(claim.path)
        else:
            move_unique(claim.path, self.outbox.processed, claim.rel, claim.id)

    def _quarantine(self, claim: Claim, outcome: Outcome, processed_at: str) -> None:
        error = outcome.error
        log.warning("failed %s: %s (%s)", claim.rel, error.message, error.kind)
        dest = place(claim.path, self.outbox.failed, claim.rel, claim.id)
        write_error_record(dest, {
            "file": claim.rel, "kind": error.kind, "message": error.message,
            "time": processed_at, "id": claim.id, "model": self.classifier.name,
        })
        os.unlink(claim.path)
