"""The daemon: a loop of steps, each taking one batch from the inbox to the outbox.

One file's trip, module by module::

    intake.py    it is seen (event or scan) and is complete: ready to claim
    claims.py    claimed: renamed into .work/<daemon>/ (atomic; one daemon wins)
    classify.py  loaded into a batch (preprocess/), the model runs, outcomes come back
    outbox.py    its row is appended and fsynced, then it is archived (or quarantined)
    pipeline.py  runs the last two for one batch in flight, overlapping model and loading

``Daemon.step(now)`` does one batch and returns how many files it took, so tests drive the loop
without threads or sleeps; ``Daemon.run()`` is the long-lived loop around it. A kill -9
anywhere leaves inputs in ``.work/``; the next start adopts them, finds which already have
rows (by claim id) and finishes them without writing any row twice.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from worker import defaults
from worker.daemon.claim import Claim
from worker.daemon.claims import Claims
from worker.daemon.intake import Intake
from worker.daemon.pipeline import Pipeline
from worker.daemon.service import ServiceNotifier
from worker.daemon.settings import Settings
from worker.errors import WorkerError
from worker.model.artifact import signature as model_signature
from worker.model.classifier import Classifier
from worker.outbox.predictions import Written
from worker.outbox.records import iso_utc
from worker.outbox.writer import Outbox

if TYPE_CHECKING:  # prometheus_client is imported only with --metrics, Celery only with --broker
    from worker.daemon.metrics import Metrics
    from worker.remote.watcher import Broker

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, settings: Settings, classifier: Classifier, *,
                 clock: Callable[[], float] = time.time, service: ServiceNotifier | None = None,
                 load_model: Callable[[], Classifier] | None = None, metrics: Metrics | None = None,
                 broker: Broker | None = None) -> None:
        self.settings = settings.validate()
        self.clock = clock
        self.service = service or ServiceNotifier(environ={})
        self.load_model = load_model  # for a reload; None: the model is kept
        self.metrics = metrics
        self._writable = True  # False from a failed write until the outbox works again
        self._reload = threading.Event()
        self._model_checked = clock()
        self._model_refused: tuple | None = None  # the files of a model that failed to load
        self.inbox = settings.inbox.resolve()
        self.outbox = Outbox(settings.outbox, classifier.class_names, on_success=settings.on_success)
        self.claims = Claims(self.inbox)
        self.intake = Intake(self.inbox, settings, clock)
        options = {"limits": settings.limits, "decode_threads": settings.decode_threads, "clock": clock,
                   "on_put_back": self.intake.tracker.hold, "metrics": metrics}
        if broker is None:
            self.pipeline = Pipeline(classifier, self.outbox, self.claims, **options)
        else:  # worker.remote.watcher imports Celery: only with --broker
            from worker.remote.watcher import RemotePipeline

            self.pipeline = RemotePipeline(classifier, self.outbox, self.claims, broker=broker,
                                           in_flight=settings.in_flight, retry=settings.retry,
                                           resend_after=settings.resend_after, **options)
        self._serving(classifier)
        self._recovered: list[Claim] = []
        self._written: Written = (set(), set())
        self._inbox_id = self._inbox_identity()  # to notice the folder deleted or replaced

    @property
    def finished(self) -> int:
        return self.pipeline.finished

    def start(self) -> None:
        """Recover crashed claims, start watching, begin the start-up scan."""
        self._recover()
        self.intake.start(self.clock(), observe=not self.settings.once)

    def close(self) -> None:
        self.pipeline.close()
        self.intake.stop()
        self.outbox.close()
        self.claims.close()

    def idle(self) -> bool:
        """Nothing known left to do: no recovered claims, no scan under way, nothing tracked."""
        return not self._recovered and self.intake.idle() and not self.pipeline.busy()

    def step(self, now: float | None = None) -> int:
        """Process at most one batch; return the number of files it took."""
        now = self.clock() if now is None else now
        if not self._inbox_in_place(now):
            return 0
        if self._recovered:
            return self._replay_recovered()
        collected = self.pipeline.collect()
        if not self.pipeline.room():
            return collected
        if self.intake.rescan_due(now):
            self.pipeline.finish_pending()  # recover() lists our own claims too: none may be in flight
            self._recover()  # a daemon that died since: adopt its claims
            self.intake.begin_scan(now)
        ready = self.intake.ready(now, self.settings.batch_size)
        if ready:
            self.claims.keep_in_place()  # claims' paths lead into .work: it must be ours
        arrived = self.intake.arrived
        claims = [c for rel in ready if (c := self.claims.claim(rel, arrived.get(rel))) is not None]
        return collected + (self.pipeline.process(claims) if claims else 0)

    def request_reload(self) -> None:
        """Reopen the outbox files and reload the model between two batches (SIGHUP)."""
        self._reload.set()

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
                    ready = self._writable and self._inbox_id is not None and self.pipeline.reachable()
                    self.metrics.turned(len(self.intake), len(self._recovered), ready)
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
            if self._reload.is_set():
                self._reload_now()
            elif self._model_published():
                self._reload_model()
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

    def _replay_recovered(self) -> int:
        """The next recovered claims: one alone if a daemon died holding it (it may be what
        killed it), else a batch of those that were only left unfinished."""
        if self._recovered[0].crashes:
            return self.pipeline.process_alone(self._recovered.pop(0), self._written)
        size = next((i for i, c in enumerate(self._recovered) if c.crashes), len(self._recovered))
        batch_size = min(size, self.settings.batch_size)
        batch, self._recovered = self._recovered[:batch_size], self._recovered[batch_size:]
        return self.pipeline.process(batch, written=self._written)

    def _inbox_identity(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.inbox)
        except OSError:
            return None
        return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None

    def _inbox_in_place(self, now: float) -> bool:
        """The inbox may be deleted, renamed or unmounted under us: wait for it to come back,
        then take our folder in it again and watch it anew (a watch dies with its folder)."""
        identity = self._inbox_identity()
        if identity == self._inbox_id:
            return identity is not None
        if identity is None:
            log.error("inbox %s is gone (deleted or unmounted); waiting for it to come back", self.inbox)
            self.intake.stop()
        else:
            log.warning("inbox %s is back; watching it again", self.inbox)
            self.pipeline.settle_pending()
            self.claims.reopen()
            self.intake.stop()
            self.intake.start(now, observe=not self.settings.once)
            self._recover()
        self._inbox_id = identity
        return identity is not None

    def _status(self) -> str:
        return (f"{self.finished} files done, {len(self.intake)} waiting, "
                f"{len(self._recovered)} to recover; last batch {self.pipeline.last_batch}"
                + self.pipeline.note())

    def _reload_now(self) -> None:
        """Between batches: the outbox files reopened (re-created with a header if they were
        moved away, as log rotation does) and the model loaded again; a model that fails to
        load, or has other classes, leaves the old one serving."""
        self._reload.clear()
        self.service.reloading()
        self.pipeline.finish_pending()
        self.outbox.reopen()
        model = "kept"
        if self.load_model is not None:
            model = self._swap_model()
        log.info("reloaded: outbox files reopened, model %s", model)
        self.service.ready()

    def _model_published(self) -> bool:
        """Whether, at most once a second, the model path shows other files than those serving:
        a new version published, or the files replaced. One that failed is not tried again
        until its files change once more (or SIGHUP asks)."""
        serving = getattr(self.pipeline.classifier, "signature", None)
        now = self.clock()
        if self.load_model is None or serving is None:
            return False
        if now - self._model_checked < defaults.MODEL_CHECK_SECONDS:
            return False
        self._model_checked = now
        seen = model_signature(self.settings.model)
        return seen not in (serving, self._model_refused)

    def _reload_model(self) -> None:
        self.service.reloading()
        self.pipeline.finish_pending()
        log.info("model %s changed on disk: %s", self.settings.model, self._swap_model())
        self.service.ready()

    def _swap_model(self) -> str:
        seen = model_signature(self.settings.model)
        try:
            new = self.load_model()
        except WorkerError as exc:
            log.error("reload: the new model cannot be loaded (%s); the old one keeps serving", exc)
            self._count_reload("failed")
            self._model_refused = seen
            return "kept (the new one failed to load)"
        old = self.pipeline.classifier
        if list(new.class_names) != list(old.class_names):
            log.error("reload: the new model has other classes; the old one keeps serving")
            self._count_reload("refused")
            self._model_refused = seen
            return "kept (the new one has other classes)"
        self._count_reload("loaded")
        self.pipeline.classifier = new
        self._serving(new)
        return f"{new.name} version {new.version} loaded"

    def _serving(self, classifier: Classifier) -> None:
        self.claims.announce(pid=os.getpid(), model=classifier.name, model_version=classifier.version,
                             since=iso_utc(self.clock()))
        if self.metrics is not None:
            self.metrics.serving(classifier.name, classifier.version, str(classifier.card.get("dataset", "")))

    def _count_reload(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.reloads.labels(result=result).inc()

    def _recover(self) -> None:
        """Take up the claims a crash left, and look up once which of them have rows already."""
        self._recovered = self.claims.recover(skip=self.pipeline.in_hand())
        self._written = self.outbox.written_ids({c.id for c in self._recovered})
        if self._recovered:
            log.warning("%d claimed files left unfinished will be finished", len(self._recovered))

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
                self._recover()
                self._writable = True
                return
            except OSError as again:
                exc = again
