"""The daemon: a loop of steps, each taking one batch from the inbox to the outbox.

One file's trip, module by module::

    intake.py    it is seen (event or scan) and is complete: ready to claim
    claims.py    claimed: renamed into .work/<daemon>/ (atomic; one daemon wins)
    loader.py    loaded into a batch (preprocess/; a file for the sandbox by the slow lane)
    classify.py  the model runs, outcomes come back
    pipeline.py  its row is appended and fsynced (outbox/), then it leaves .work/ (settle.py:
                 archived, or quarantine.py), for one batch in flight, overlapping model and
                 loading; with --broker the command line hands in the remote mode's pipeline

Beside the loop: ``reload.py`` (SIGHUP, a new model published), ``replay.py`` (the claims a
crash left), ``inbox_folder.py`` (the inbox deleted, unmounted or replaced).

``Daemon.step(now)`` does one batch and returns how many files it took, so tests drive the loop
without threads or sleeps; ``Daemon.run()`` is the long-lived loop around it. A kill -9
anywhere leaves inputs in ``.work/``; the next start adopts them, finds which already have
rows (by claim id) and finishes them without writing any row twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from worker.daemon.claims import Claims
from worker.daemon.inbox_folder import InboxFolder
from worker.daemon.intake import Intake
from worker.daemon.pipeline import Pipeline
from worker.daemon.reload import Reloader
from worker.daemon.replay import Replay
from worker.daemon.service import ServiceNotifier
from worker.daemon.settings import Settings
from worker.errors import WorkerError
from worker.model.classifier import Classifier
from worker.outbox.writer import Outbox

if TYPE_CHECKING:  # prometheus_client is imported only with --metrics
    from worker.daemon.metrics import Metrics

log = logging.getLogger(__name__)

# Makes the pipeline from what the daemon opened: ``Pipeline`` itself (the model in this process),
# or what the command line hands in (the remote mode's, with --broker), called as
# ``make(classifier, outbox, claims, limits=, decode_threads=, clock=, on_put_back=, metrics=)``.
PipelineFactory = Callable[..., Pipeline]


class Daemon:
    def __init__(self, settings: Settings, classifier: Classifier, *,
                 clock: Callable[[], float] = time.time, service: ServiceNotifier | None = None,
                 load_model: Callable[[], Classifier] | None = None, metrics: Metrics | None = None,
                 make_pipeline: PipelineFactory = Pipeline) -> None:
        self.settings = settings.validate()
        self.clock = clock
        self.service = service or ServiceNotifier(environ={})
        self.metrics = metrics
        self._writable = True  # False from a failed write until the outbox works again
        self.inbox = InboxFolder(settings.inbox.resolve())  # to notice the folder deleted or replaced
        self.outbox = Outbox(settings.outbox, classifier.class_names, on_success=settings.on_success)
        self.claims = Claims(self.inbox.path)
        self.intake = Intake(self.inbox.path, settings, clock)
        self.pipeline = make_pipeline(classifier, self.outbox, self.claims, limits=settings.limits,
                                      decode_threads=settings.decode_threads, clock=clock,
                                      on_put_back=self.intake.tracker.hold, metrics=metrics)
        self.reload = Reloader(settings.model, load_model, pipeline=self.pipeline, outbox=self.outbox,
                               claims=self.claims, service=self.service, clock=clock, metrics=metrics)
        self.reload.serving(classifier)
        self.replay = Replay(self.claims, self.outbox, self.pipeline, settings.batch_size)

    @property
    def finished(self) -> int:
        return self.pipeline.finisher.finished

    def start(self) -> None:
        """Recover crashed claims, start watching, begin the start-up scan."""
        self.replay.take_up()
        self.intake.start(self.clock(), observe=not self.settings.once)

    def close(self) -> None:
        self.pipeline.close()
        self.intake.stop()
        self.outbox.close()
        self.claims.close()

    def idle(self) -> bool:
        """Nothing known left to do: no recovered claims, no scan under way, nothing tracked."""
        return not self.replay and self.intake.idle() and not self.pipeline.busy()

    def step(self, now: float | None = None) -> int:
        """Process at most one batch; return the number of files it took."""
        now = self.clock() if now is None else now
        if not self._inbox_in_place(now):
            return 0
        if self.replay:
            return self.replay.replay()
        collected = self.pipeline.collect()
        if not self.pipeline.room():
            return collected
        if self.intake.rescan_due(now):
            self.pipeline.finish_pending()  # recover() lists our own claims too: none may be in flight
            self.replay.take_up()  # a daemon that died since: adopt its claims
            self.intake.begin_scan(now)
        ready = self.intake.ready(now, self.settings.batch_size)
        if ready:
            self.claims.keep_in_place()  # claims' paths lead into .work: it must be ours
        arrived = self.intake.arrived
        claims = [c for rel in ready if (c := self.claims.claim(rel, arrived.get(rel))) is not None]
        return collected + (self.pipeline.process(claims) if claims else 0)

    def request_reload(self) -> None:
        """Reopen the outbox files and reload the model between two batches (SIGHUP)."""
        self.reload.request()

    def run(self, stop: threading.Event, on_ready: Callable[[], None] | None = None) -> int:
        """Loop until ``stop`` is set (or, with --once, until the inbox is drained)."""
        self.start()
        self.pipeline.overlap()
        log.info("ready: %s", self.settings.describe())
        self.service.ready()
        if on_ready:
            on_ready()
        try:
            while not stop.is_set() and not self._turn(stop):
                self.service.alive(self._status)
                if self.metrics is not None:
                    ready = self._writable and self.inbox.present and self.pipeline.reachable()
                    self.metrics.turned(len(self.intake), len(self.replay), ready)
        finally:
            self.service.stopping()
            self.close()
            if self.metrics is not None and self.metrics.textfile is not None:
                self.metrics.write_textfile()  # the final counts
        log.info("stopped after %d files", self.finished)
        return self.finished

    def _turn(self, stop: threading.Event) -> bool:
        """One step of ``run``, with waiting when there was nothing to do; True when done."""
        once = self.settings.once
        try:
            self.reload.between_batches()
            done = self.step()
            if done == 0 or (once and self.idle()):
                self.pipeline.finish_pending()
        except OSError as exc:
            self._after_write_failure(exc, stop)
            return False
        if once and self.idle():
            return True
        if done == 0 and not self.pipeline.wait(timeout=0.05 if once else 0.2):
            self.intake.wait(timeout=0.05 if once else 0.2)
        return False

    def _inbox_in_place(self, now: float) -> bool:
        """The inbox may be deleted, renamed or unmounted under us: wait for it to come back,
        then take our folder in it again and watch it anew (a watch dies with its folder)."""
        if not self.inbox.changed():
            return self.inbox.present
        if not self.inbox.present:
            log.error("inbox %s is gone (deleted or unmounted); waiting for it to come back", self.inbox.path)
            self.intake.stop()
        else:
            log.warning("inbox %s is back; watching it again", self.inbox.path)
            self.pipeline.settle_pending()
            self.claims.reopen()
            self.intake.stop()
            self.intake.start(now, observe=not self.settings.once)
            self.replay.take_up()
        return self.inbox.present

    def _status(self) -> str:
        return (f"{self.finished} files done, {len(self.intake)} waiting, "
                f"{len(self.replay)} to recover; last batch {self.pipeline.finisher.last_batch}"
                + self.pipeline.note())

    def _after_write_failure(self, exc: OSError, stop: threading.Event) -> None:
        """Outbox trouble (disk full, read-only, I/O error): nothing is lost, inputs stay
        claimed. Wait, repair, recover the claims, and go on; while that fails too, keep waiting."""
        if self.settings.once:
            raise WorkerError(f"cannot write to the outbox or archive: {exc}") from exc
        self.pipeline.drop_pending()
        self._writable = False
        while not stop.is_set():
            log.error("cannot write results (%s); retrying in %.0f s", exc, self.settings.retry)
            stop.wait(self.settings.retry)
            try:
                self.outbox.repair()
                self.replay.take_up()
                self._writable = True
                return
            except OSError as again:
                exc = again
