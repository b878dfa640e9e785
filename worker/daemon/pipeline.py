"""The pipeline: claimed files -> loaded batch -> model -> durable rows -> archived inputs.

``process(claims)`` loads a batch. Alone (as tests drive it) it runs the model and finishes the
batch at once. Once ``overlap()`` has started the model thread, the network runs there (LiteRT
releases the GIL for the whole call) while the caller's thread, the only one doing Python work,
finishes the batch before it and claims and loads the next. Keeping all Python on one thread
matters: two threads taking turns with the GIL hand it over at each system call, and those
hand-overs cost more than the work.

Finishing is what makes a batch crash-safe: its rows are durable (``Outbox.record``) before any
of its inputs leaves ``.work/`` (``archive`` or ``quarantine``). A batch whose finish fails
keeps its files claimed for the next recovery.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker import defaults
from worker.daemon.claim import Claim
from worker.daemon.claims import Claims
from worker.daemon.classify import LoadedBatch, Outcome
from worker.daemon.loader import BatchLoader
from worker.daemon.settle import Settler
from worker.errors import InputError
from worker.model.classifier import Classifier, Prediction
from worker.outbox.predictions import Written
from worker.outbox.records import Row, iso_utc, page_id
from worker.outbox.writer import Outbox
from worker.preprocess import Limits

if TYPE_CHECKING:  # prometheus_client is imported only with --metrics
    from worker.daemon.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass
class InFlight:
    """A claimed, loaded batch; ``scored`` is the model thread's future of its output,
    or None to run the model when the batch is finished. ``written`` is None for new claims;
    for claims a crash left, the ids of theirs already written."""

    claims: list[Claim]
    batch: LoadedBatch
    scored: Future | None
    written: Written | None
    started: float

    @property
    def classifier(self) -> Classifier:
        return self.batch.classifier

    def outcomes(self) -> list[Outcome]:
        scored = self.scored.result() if self.scored is not None else self.batch.predict()
        return self.batch.outcomes(scored)


class Finisher:
    """A batch's end, what makes it crash-safe: its rows durable, then each input settled;
    counted (``finished``, ``last_batch``) and logged."""

    def __init__(self, outbox: Outbox, settler: Settler, *, clock: Callable[[], float],
                 metrics: Metrics | None = None) -> None:
        self.outbox = outbox
        self.settler = settler
        self.clock = clock
        self.metrics = metrics
        self.finished = 0
        self.last_batch = "none yet"

    def finish(self, flight) -> None:
        """Make the batch's rows durable, and only then move its inputs out of ``.work/``.
        A replayed input whose row is already durable is archived, whatever it gives now.
        ``flight`` is an ``InFlight`` or the remote mode's like of it."""
        outcomes = flight.outcomes()
        processed_at = iso_utc(self.clock())
        pairs = list(zip(flight.claims, outcomes, strict=True))
        written = flight.written or (set(), set())
        rows = [row for claim, outcome in pairs if outcome.ok
                for row in rows_of(claim, outcome, processed_at, flight.classifier)]
        self.outbox.record(rows, written=written)
        failures = []
        for claim, outcome in pairs:
            try:
                settled = self.settler.settle(claim, outcome, processed_at, written, flight.classifier)
                if settled == "quarantined":
                    failures.append(outcome.error.kind)
            except FileNotFoundError:
                if os.path.lexists(claim.path):
                    raise
                log.warning("%s was taken out of .work/ before it could be archived", claim.rel)
        done = self.clock()
        if self.metrics is not None:
            new_rows = sum(r.id not in written[1] for r in rows)
            latencies = [max(0.0, done - c.arrived) for c in flight.claims if c.arrived is not None]
            model = (flight.classifier.name, flight.classifier.version)
            self.metrics.batch(new_rows, failures, done - flight.started, done, latencies, model)
        self.finished += len(pairs)
        self.last_batch = f"{len(pairs)} files, {len(rows)} rows at {processed_at}"
        log.info(
            "batch: %d files, %d rows, %d failed, %.1f ms%s", len(pairs), len(rows),
            sum(not outcome.ok for outcome in outcomes), (done - flight.started) * 1000,
            " (recovered)" if flight.written is not None else "",
        )


def rows_of(claim: Claim, outcome: Outcome, processed_at: str, classifier: Classifier) -> list[Row]:
    """An image's row; a document's row for each page with ink (``file`` is ``x.pdf#2``).
    ``classifier`` is the one that scored the batch (a reload may have come since)."""
    def row(p: Prediction, row_id: str, file: str, page: int | None = None) -> Row:
        log.debug("%s -> %s (%.3f)", file, p.label, p.confidence)
        return Row.of(
            p, claim_id=row_id, file=file, sha256=outcome.sha256 or "",
            model=classifier.name, model_version=classifier.version,
            processed_at=processed_at, class_names=classifier.class_names, page=page,
        )

    if not outcome.pages:
        return [row(outcome.prediction, claim.id, claim.rel)]
    return [row(p, page_id(claim.id, number, i == 0), f"{claim.rel}#{number}", page=number)
            for i, (number, p) in enumerate(outcome.pages)]


class Pipeline:
    def __init__(self, classifier: Classifier, outbox: Outbox, claims: Claims, *, limits: Limits,
                 decode_threads: int, clock: Callable[[], float],
                 on_put_back: Callable[[str], None] = lambda rel: None,
                 metrics: Metrics | None = None) -> None:
        self.outbox = outbox
        self.claims = claims
        self.limits = limits
        self.clock = clock
        self.metrics = metrics
        self.loader = BatchLoader(classifier, limits=limits, decode_threads=decode_threads)
        self.finisher = Finisher(outbox, Settler(outbox, claims, on_put_back), clock=clock, metrics=metrics)
        self._model_thread: ThreadPoolExecutor | None = None
        self._pending: InFlight | None = None  # the batch the model thread has; finished next

    @property
    def classifier(self) -> Classifier:
        """The model serving (a reload sets another)."""
        return self.loader.classifier

    @classifier.setter
    def classifier(self, new: Classifier) -> None:
        self.loader.classifier = new

    def overlap(self) -> None:
        """From now on the model runs on its own thread, one batch behind the loading."""
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="model")

    def close(self) -> None:
        """Finish what is loaded; what the slow lane still decodes goes back to the inbox."""
        try:
            self.take_slow()
        except OSError as exc:
            log.error("cannot finish a batch (%s); its files stay claimed for a retry", exc)
        if self._model_thread is not None:
            self.settle_pending()
            self._model_thread.shutdown()
            self._model_thread = None
        self.loader.close(self.claims.put_back)

    def room(self) -> bool:
        """Whether a new batch may be taken now."""
        return True

    def reachable(self) -> bool:
        """Whether the model can be reached (in this process: always)."""
        return True

    def busy(self) -> bool:
        """Whether files are in hand that a step may still finish."""
        return len(self.loader.slow) > 0

    def in_hand(self) -> set:
        """The paths of claims in hand (a recovery must not take them up again)."""
        return self.loader.slow.in_hand()

    def note(self) -> str:
        """What the status line adds about the pipeline."""
        return ""

    def wait(self, timeout: float) -> bool:
        """Wait for work of the pipeline's own, if it has any to wait for (it has not)."""
        return False

    def collect(self) -> int:
        """Finish what finished in the background since the last step: the slow lane's files."""
        return self.take_slow()

    def process(self, claims: list[Claim], *, written: Written | None = None, alone: bool = False) -> int:
        """Load the claimed files; finish the batch here (``alone``, or before ``overlap``), or
        hand it to the model thread and finish the one before it while the model runs. Files
        for the sandbox go to the slow lane instead (``take_slow``), unless a row of theirs is
        written already (a replay) or the caller is a test driving a batch ``alone``: this
        thread never waits for the sandbox otherwise. Returns how many files it took."""
        taken = len(claims)
        to_lane = written is not None or not alone
        if to_lane:
            claims = self.loader.leave_slow(claims, written)
        if claims:
            started = self.clock()
            claims, batch = self.loader.load(claims, written, defer=to_lane)
            if claims:
                self._dispatch(claims, batch, written, alone, started)
        return taken

    def take_slow(self) -> int:
        """Finish, as one batch, the files the slow lane loaded since the last call."""
        claims, batch = self.loader.take_slow()
        if claims:
            self._dispatch(claims, batch, None, False, self.clock())
        return len(claims)

    def _dispatch(self, claims: list[Claim], batch: LoadedBatch, written: Written | None, alone: bool,
                  started: float) -> None:
        if alone or self._model_thread is None or batch.inputs is None:
            self.finisher.finish(InFlight(claims, batch, None, written, started))
            return
        flight = InFlight(claims, batch, self._model_thread.submit(batch.predict), written, started)
        previous, self._pending = self._pending, flight
        if previous is not None:
            self.finisher.finish(previous)

    def finish_pending(self) -> None:
        """Finish the batch the model thread has; disk trouble (OSError) is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self.finisher.finish(pending)

    def settle_pending(self) -> None:
        """Let the pending batch end either way: if it fails, its files stay claimed, and are
        found again by the next recovery (or the next start)."""
        try:
            self.finish_pending()
        except OSError as exc:
            log.error("cannot finish a batch (%s); its files stay claimed for a retry", exc)

    def drop_pending(self) -> None:
        """Forget the pending batch unfinished (after a failed write the outbox may end in a
        torn record): its files stay claimed, for the recovery that follows the repair."""
        self._pending = None

    def process_alone(self, claim: Claim, written: Written) -> int:
        """A claim that a daemon died holding: finished on its own, the model run here, so a
        second death is pinned on this one file. After ``CRASHES_BEFORE_SET_ASIDE`` deaths it
        is not loaded again but quarantined as ``crashed``, and the daemon goes on."""
        self.finish_pending()
        # A claim with its row in the JSONL was classified before: the deaths came after (while
        # writing or archiving) and were not its doing, and its CSV row may still be missing.
        if claim.crashes < defaults.CRASHES_BEFORE_SET_ASIDE or claim.id in written[1]:
            return self.process([claim], written=written, alone=True)
        log.error("%s was in hand each time a worker died (%d times): set aside", claim.rel, claim.crashes)
        error = InputError("crashed", f"{claim.rel} was being handled each time the worker died "
                           f"({claim.crashes} times); set aside so the other files go on")
        batch = LoadedBatch([claim.path], [error], self.classifier)
        self.finisher.finish(InFlight([claim], batch, None, written, self.clock()))
        return 1
