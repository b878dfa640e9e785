"""Quarantine: an input that failed leaves ``.work/`` for the outbox's failed/, with its error
record beside it, and the daemon goes on."""

from __future__ import annotations

import logging
from pathlib import Path

from worker.daemon.claim import Claim
from worker.daemon.classify import Outcome
from worker.model.classifier import Classifier
from worker.outbox.records import error_record
from worker.outbox.writer import Outbox

log = logging.getLogger(__name__)

# Refused inputs too big for the outbox's whole file system stay on the inbox's, here (a hidden
# folder: never scanned); their error records in failed/ say so (``kept_at``).
TOO_BIG_DIR = ".too-big"


class Quarantine:
    def __init__(self, outbox: Outbox, inbox: Path) -> None:
        self.outbox = outbox
        self.too_big = inbox / TOO_BIG_DIR

    def put(self, claim: Claim, outcome: Outcome, processed_at: str, classifier: Classifier) -> None:
        """Move the claimed file to failed/ with its error record; ``classifier`` is the one
        that scored its batch."""
        error = outcome.error
        log.warning("failed %s: %s (%s)", claim.rel, error.message, error.kind)
        record = error_record(error, claim_id=claim.id, file=claim.rel, time=processed_at,
                              model=classifier.name, model_version=classifier.version)
        self.outbox.quarantine(claim.path, claim.rel, claim.id, record, too_big=self.too_big)
