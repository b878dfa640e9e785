"""Reloading between two batches: SIGHUP reopens the outbox files and loads the model again, and
a new version published at the model path (or its files replaced) is loaded by itself. A model
that fails to load, or has other classes, leaves the old one serving, and is not tried again
until its files change once more (or SIGHUP asks)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from worker import defaults
from worker.daemon.claims import Claims
from worker.daemon.pipeline import Pipeline
from worker.daemon.service import ServiceNotifier
from worker.errors import WorkerError
from worker.model.artifact import signature
from worker.model.classifier import Classifier
from worker.outbox.records import iso_utc
from worker.outbox.writer import Outbox

if TYPE_CHECKING:  # prometheus_client is imported only with --metrics
    from worker.daemon.metrics import Metrics

log = logging.getLogger(__name__)


class Reloader:
    def __init__(self, model: Path, load_model: Callable[[], Classifier] | None, *, pipeline: Pipeline,
                 outbox: Outbox, claims: Claims, service: ServiceNotifier, clock: Callable[[], float],
                 metrics: Metrics | None = None) -> None:
        self.model = model
        self.load_model = load_model  # None: the model is kept
        self.pipeline = pipeline
        self.outbox = outbox
        self.claims = claims
        self.service = service
        self.clock = clock
        self.metrics = metrics
        self._requested = threading.Event()
        self._checked = clock()
        self._refused: tuple | None = None  # the files of a model that failed to load

    def request(self) -> None:
        """Reload at the next turn of the loop (from a signal handler: it only sets a flag)."""
        self._requested.set()

    def between_batches(self) -> None:
        """What SIGHUP asked, or the model published since the last look."""
        if self._requested.is_set():
            self._reload_now()
        elif self._model_published():
            self._reload_model()

    def serving(self, classifier: Classifier) -> None:
        """Say which model serves: in the daemon's record (``worker status``) and the metrics."""
        self.claims.announce(pid=os.getpid(), model=classifier.name, model_version=classifier.version,
                             since=iso_utc(self.clock()))
        if self.metrics is not None:
            self.metrics.serving(classifier.name, classifier.version, str(classifier.card.get("dataset", "")))

    def _reload_now(self) -> None:
        """The outbox files reopened (re-created with a header if they were moved away, as log
        rotation does) and the model loaded again."""
        self._requested.clear()
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
        a new version published, or the files replaced."""
        serving = getattr(self.pipeline.classifier, "signature", None)
        now = self.clock()
        if self.load_model is None or serving is None:
            return False
        if now - self._checked < defaults.MODEL_CHECK_SECONDS:
            return False
        self._checked = now
        return signature(self.model) not in (serving, self._refused)

    def _reload_model(self) -> None:
        self.service.reloading()
        self.pipeline.finish_pending()
        log.info("model %s changed on disk: %s", self.model, self._swap_model())
        self.service.ready()

    def _swap_model(self) -> str:
        seen = signature(self.model)
        try:
            new = self.load_model()
        except WorkerError as exc:
            log.error("reload: the new model cannot be loaded (%s); the old one keeps serving", exc)
            self._count("failed")
            self._refused = seen
            return "kept (the new one failed to load)"
        old = self.pipeline.classifier
        if list(new.class_names) != list(old.class_names):
            log.error("reload: the new model has other classes; the old one keeps serving")
            self._count("refused")
            self._refused = seen
            return "kept (the new one has other classes)"
        self._count("loaded")
        self.pipeline.classifier = new
        self.serving(new)
        return f"{new.name} version {new.version} loaded"

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.reloads.labels(result=result).inc()
