"""Replay: the claims a crash left in ``.work/`` (ours at a start, or a daemon's that died
since), taken up and finished before new files, without writing any row twice."""

from __future__ import annotations

import logging

from worker.daemon.claim import Claim
from worker.daemon.claims import Claims
from worker.daemon.pipeline import Pipeline
from worker.outbox.predictions import Written
from worker.outbox.writer import Outbox

log = logging.getLogger(__name__)


class Replay:
    def __init__(self, claims: Claims, outbox: Outbox, pipeline: Pipeline, batch_size: int) -> None:
        self.claims = claims
        self.outbox = outbox
        self.pipeline = pipeline
        self.batch_size = batch_size
        self.left: list[Claim] = []
        self.written: Written = (set(), set())  # the ids of theirs with rows already

    def __len__(self) -> int:
        return len(self.left)

    def take_up(self) -> None:
        """Take up the claims a crash left, and look up once which of them have rows already."""
        self.left = self.claims.recover(skip=self.pipeline.in_hand())
        self.written = self.outbox.written_ids({c.id for c in self.left})
        if self.left:
            log.warning("%d claimed files left unfinished will be finished", len(self.left))

    def replay(self) -> int:
        """The next claims taken up: one alone if a daemon died holding it (it may be what
        killed it), else a batch of those that were only left unfinished."""
        if self.left[0].crashes:
            return self.pipeline.process_alone(self.left.pop(0), self.written)
        size = next((i for i, c in enumerate(self.left) if c.crashes), len(self.left))
        batch_size = min(size, self.batch_size)
        batch, self.left = self.left[:batch_size], self.left[batch_size:]
        return self.pipeline.process(batch, written=self.written)
