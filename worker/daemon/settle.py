"""Settling: once its batch's rows are durable, each claimed file leaves ``.work/``: archived,
put back for its writer (it was still growing), or quarantined."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from worker.daemon.claim import Claim
from worker.daemon.claims import Claims
from worker.daemon.classify import Outcome
from worker.daemon.quarantine import Quarantine
from worker.model.classifier import Classifier
from worker.outbox.predictions import Written
from worker.outbox.writer import Outbox

log = logging.getLogger(__name__)


class Settler:
    def __init__(self, outbox: Outbox, claims: Claims,
                 on_put_back: Callable[[str], None] = lambda rel: None) -> None:
        self.outbox = outbox
        self.claims = claims
        self.on_put_back = on_put_back  # told of each file returned to the inbox unfinished
        self.quarantine = Quarantine(outbox, claims.inbox)

    def settle(self, claim: Claim, outcome: Outcome, processed_at: str, written: Written,
               classifier: Classifier) -> str:
        """The claimed file leaves ``.work/``: archived, put back for its writer, or quarantined;
        returns which."""
        if outcome.ok or claim.id in written[1]:
            self.outbox.archive(claim.path, claim.rel, claim.id)
            done = "archived"
        elif still_growing(claim, outcome) and self.claims.put_back(claim):
            log.info("%s was still being written: put back to wait for its writer", claim.rel)
            self.on_put_back(claim.rel)
            return "put back"
        else:
            self.quarantine.put(claim, outcome, processed_at, classifier)
            done = "quarantined"
        self.claims.finish(claim)
        return done


def still_growing(claim: Claim, outcome: Outcome) -> bool:
    """Cut short when read, and longer now: its writer was not done (it paused)."""
    error = outcome.error
    if error.kind != "truncated" or error.bytes_read is None:
        return False
    try:
        return os.lstat(claim.path).st_size > error.bytes_read
    except OSError:
        return False
