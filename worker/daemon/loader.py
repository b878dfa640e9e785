"""Loading: claimed files -> a loaded batch for the model, on the decode threads. The files for
the sandbox (too big to read here, or a document, a TIFF, a progressive JPEG by their bytes) go
to the slow lane instead, and come back loaded at a later step (``take_slow``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from worker.daemon.claim import Claim, claim_size
from worker.daemon.classify import LoadedBatch, load_batch
from worker.daemon.slow_lane import SlowLane, is_slow
from worker.errors import InputError
from worker.model.classifier import Classifier
from worker.outbox.predictions import Written
from worker.preprocess import Limits, load_many, sandbox
from worker.preprocess.loading import DEFERRED


class BatchLoader:
    def __init__(self, classifier: Classifier, *, limits: Limits, decode_threads: int) -> None:
        self.classifier = classifier  # the one serving: a reload replaces it
        self.limits = limits
        self.pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
        self.slow = SlowLane(self._load_one, decode_threads)

    def close(self, put_back) -> None:
        """What the slow lane still decodes goes back to the inbox (by ``put_back``)."""
        self.slow.close(put_back)
        sandbox.close_shared()  # a decode still running is not waited for
        self.pool.shutdown()

    def load(self, claims: list[Claim], written: Written | None, *,
             defer: bool) -> tuple[list[Claim], LoadedBatch]:
        """Load the claimed files; with ``defer``, those reading shows are for the sandbox go
        to the slow lane (``leave_deferred``). Returns the claims kept and their batch."""
        batch = load_batch(
            [c.path for c in claims], self.classifier, pool=self.pool, limits=self.limits,
            follow_symlinks=False, names=[c.rel for c in claims], sizes=[claim_size(c) for c in claims],
            defer_unbounded=defer,
        )
        return self._leave_deferred(claims, batch, written)

    def take_slow(self) -> tuple[list[Claim], LoadedBatch | None]:
        """The files the slow lane loaded since the last call, as one batch."""
        loaded = self.slow.loaded()
        if not loaded:
            return [], None
        claims = [claim for claim, _ in loaded]
        return claims, LoadedBatch([c.path for c in claims], [item for _, item in loaded], self.classifier)

    def leave_slow(self, claims: list[Claim], written: Written | None) -> list[Claim]:
        """Hand the claims too big to read here (``is_slow``) to the slow lane; return the
        others. A replayed claim with a row written already stays (its replay needs that)."""
        quick = []
        for claim in claims:
            if is_slow(claim) and not has_row(claim, written):
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
            elif has_row(claim, written):
                kept.append((claim, self._load_one(claim)))
            else:
                self.slow.submit(claim)
        paths, items = [c.path for c, _ in kept], [i for _, i in kept]
        return [c for c, _ in kept], LoadedBatch(paths, items, self.classifier)

    def _load_one(self, claim: Claim):
        """The slow lane's loader (on its own thread)."""
        return load_many([claim.path], self.classifier.profile, names=[claim.rel], limits=self.limits,
                         follow_symlinks=False)[0]


def has_row(claim: Claim, written: Written | None) -> bool:
    """Whether a row of the claim is in the CSV or the JSONL already (only a replay's can be)."""
    return written is not None and (claim.id in written[0] or claim.id in written[1])
