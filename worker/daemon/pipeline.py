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
from worker.daemon.claim import Claim, claim_size
from worker.daemon.claims import Claims
from worker.daemon.classify import LoadedBatch, Outcome, load_batch
from worker.daemon.slow_lane import SlowLane, is_slow
from worker.errors import InputError
from worker.model.classifier import Classifier, Prediction
from worker.outbox.predictions import Written
from worker.outbox.records import Row, error_record, iso_utc, page_id
from worker.outbox.writer import Outbox
from worker.preprocess import Limits, load_many, sandbox
from worker.preprocess.loading import DEFERRED

if TYPE_CHECKING:  # prometheus_client is imported only with --metrics
    from worker.daemon.metrics import Metrics

log = logging.getLogger(__name__)

# Refused inputs too big for the outbox's whole file system stay on the inbox's, here (a hidden
# folder: never scanned); their error records in failed/ say so (``kept_at``).
TOO_BIG_DIR = ".too-big"


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


class Pipeline:
    def __init__(self, classifier: Classifier, outbox: Outbox, claims: Claims, *, limits: Limits,
                 decode_threads: int, clock: Callable[[], float],
                 on_put_back: Callable[[str], None] = lambda rel: None,
                 metrics: Metrics | None = None) -> None:
        self.classifier = classifier
        self.outbox = outbox
        self.claims = claims
        self.limits = limits
        self.clock = clock
        self.on_put_back = on_put_back  # told of each file returned to the inbox unfinished
        self.metrics = metrics
        self.pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
        self.slow = SlowLane(self._load_one, decode_threads)
        self._model_thread: ThreadPoolExecutor | None = None
        self._pending: InFlight | None = None  # the batch the model thread has; finished next
        self.finished = 0
        self.last_batch = "none yet"

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
        self.slow.close(self.claims.put_back)
        sandbox.close_shared()  # a decode still running is not waited for
        self.pool.shutdown()

    def room(self) -> bool:
        """Whether a new batch may be taken now."""
        return True

    def reachable(self) -> bool:
        """Whether the model can be reached (in this process: always)."""
        return True

    def busy(self) -> bool:
        """Whether files are in hand that a step may still finish."""
        return len(self.slow) > 0

    def in_hand(self) -> set:
        """The paths of claims in hand (a recovery must not take them up again)."""
        return self.slow.in_hand()

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
            claims = self._leave_slow(claims, written)
        if claims:
            started = self.clock()
            batch = load_batch(
                [c.path for c in claims], self.classifier, pool=self.pool, limits=self.limits,
                follow_symlinks=False, names=[c.rel for c in claims], sizes=[claim_size(c) for c in claims],
                defer_unbounded=to_lane,
            )
            claims, batch = self._leave_deferred(claims, batch, written)
            if claims:
                self._dispatch(claims, batch, written, alone, started)
        return taken

    def take_slow(self) -> int:
        """Finish, as one batch, the files the slow lane loaded since the last call."""
        loaded = self.slow.loaded()
        if not loaded:
            return 0
        claims = [claim for claim, _ in loaded]
        batch = LoadedBatch([c.path for c in claims], [item for _, item in loaded], self.classifier)
        self._dispatch(claims, batch, None, False, self.clock())
        return len(claims)

    def _leave_slow(self, claims: list[Claim], written: Written | None) -> list[Claim]:
        """Hand the claims too big to read here (``is_slow``) to the slow lane; return the
        others. A replayed claim with a row written already stays (its replay needs that)."""
        quick = []
        for claim in claims:
            if is_slow(claim) and not _has_row(claim, written):
                self.slow.submit(claim)
            else:
                quick.append(claim)
        return quick

    def _leave_deferred(self, claims: list[Claim], batch: LoadedBatch,
                        written: Written | None) -> tuple[list[Claim], LoadedBatch]:
        """The files reading showed are for the sandbox (a document, a TIFF, a progressive
        JPEG: by their bytes) go to the slow lane too; a replay's with a row written already is
        decoded here (its replay needs the outcome)."""
        deferred = [isinstance(item, InputError) and item.kind == DEFERRED for item in batch.loaded]
        if not any(deferred):
            return claims, batch
        kept = []
        for claim, item, later in zip(claims, batch.loaded, deferred, strict=True):
            if not later:
                kept.append((claim, item))
            elif _has_row(claim, written):
                kept.append((claim, self._load_one(claim)))
            else:
                self.slow.submit(claim)
        paths, items = [c.path for c, _ in kept], [i for _, i in kept]
        return [c for c, _ in kept], LoadedBatch(paths, items, self.classifier)

    def _load_one(self, claim: Claim):
        """The slow lane's loader (on its own thread)."""
        return load_many([claim.path], self.classifier.profile, names=[claim.rel], limits=self.limits,
                         follow_symlinks=False)[0]

    def _dispatch(self, claims: list[Claim], batch: LoadedBatch, written: Written | None, alone: bool,
                  started: float) -> None:
        if alone or self._model_thread is None or batch.inputs is None:
            self._finish(InFlight(claims, batch, None, written, started))
            return
        flight = InFlight(claims, batch, self._model_thread.submit(batch.predict), written, started)
        previous, self._pending = self._pending, flight
        if previous is not None:
            self._finish(previous)

    def finish_pending(self) -> None:
        """Finish the batch the model thread has; disk trouble (OSError) is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._finish(pending)

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
        self._finish(InFlight([claim], batch, None, written, self.clock()))
        return 1

    def _finish(self, flight: InFlight) -> None:
        """Make the batch's rows durable, and only then move its inputs out of ``.work/``.
        A replayed input whose row is already durable is archived, whatever it gives now."""
        outcomes = flight.outcomes()
        processed_at = iso_utc(self.clock())
        pairs = list(zip(flight.claims, outcomes, strict=True))
        written = flight.written or (set(), set())
        rows = [row for claim, outcome in pairs if outcome.ok
                for row in self._rows(claim, outcome, processed_at, flight.classifier)]
        self.outbox.record(rows, written=written)
        failures = []
        for claim, outcome in pairs:
            try:
                if self._settle(claim, outcome, processed_at, written, flight.classifier) == "quarantined":
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

    def _settle(self, claim: Claim, outcome: Outcome, processed_at: str, written: Written,
                classifier: Classifier) -> str:
        """The claimed file leaves ``.work/``: archived, put back for its writer, or quarantined;
        returns which."""
        if outcome.ok or claim.id in written[1]:
            self.outbox.archive(claim.path, claim.rel, claim.id)
            done = "archived"
        elif self._still_growing(claim, outcome) and self.claims.put_back(claim):
            log.info("%s was still being written: put back to wait for its writer", claim.rel)
            self.on_put_back(claim.rel)
            return "put back"
        else:
            self._quarantine(claim, outcome, processed_at, classifier)
            done = "quarantined"
        self.claims.finish(claim)
        return done

    @staticmethod
    def _still_growing(claim: Claim, outcome: Outcome) -> bool:
        """Cut short when read, and longer now: its writer was not done (it paused)."""
        error = outcome.error
        if error.kind != "truncated" or error.bytes_read is None:
            return False
        try:
            return os.lstat(claim.path).st_size > error.bytes_read
        except OSError:
            return False

    @staticmethod
    def _rows(claim: Claim, outcome: Outcome, processed_at: str, classifier: Classifier) -> list[Row]:
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

    def _quarantine(self, claim: Claim, outcome: Outcome, processed_at: str, classifier: Classifier) -> None:
        error = outcome.error
        log.warning("failed %s: %s (%s)", claim.rel, error.message, error.kind)
        record = error_record(error, claim_id=claim.id, file=claim.rel, time=processed_at,
                              model=classifier.name, model_version=classifier.version)
        self.outbox.quarantine(claim.path, claim.rel, claim.id, record,
                               too_big=self.claims.inbox / TOO_BIG_DIR)


def _has_row(claim: Claim, written: Written | None) -> bool:
    """Whether a row of the claim is in the CSV or the JSONL already (only a replay's can be)."""
    return written is not None and (claim.id in written[0] or claim.id in written[1])
