"""The slow lane: files that may take long to decode, loaded beside the loop, never in its way.

A big file or a document (a scan bomb within the limits, a 200-page PDF) can take seconds to
decode, in the sandbox, up to its time limit. Loaded with the others it would hold their
batch, and SIGTERM, for that long. So each
such file is loaded on a thread of the lane (at most ``threads`` at once) while the loop goes on
with everything else, and picks up the loaded ones at its next step, to finish them as a batch
like any other.

The lane's threads are daemon threads: a stop never waits for a decode. A file still being
decoded at the stop goes back into the inbox, unrecorded, and is read again at the next start
(it is not counted as in hand at a crash, since it did not crash anything).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from worker import defaults
from worker.daemon.claim import Claim, claim_size
from worker.errors import InputError
from worker.preprocess import LoadedInput

log = logging.getLogger(__name__)

Loaded = LoadedInput | InputError


def is_slow(claim: Claim) -> bool:
    """Whether the file goes to the slow lane before it is read: a file this big is for the
    sandbox whatever it holds. The others are sent there once read, by their bytes, never their
    name (``Pipeline``: ``load_many(defer_unbounded=True)``): a PDF named ``.png`` is a PDF."""
    return claim_size(claim) >= defaults.SANDBOX_BYTES


class SlowLane:
    def __init__(self, load: Callable[[Claim], Loaded], threads: int) -> None:
        self.load = load
        self.threads = max(1, threads)
        self._waiting: queue.SimpleQueue[Claim | None] = queue.SimpleQueue()
        self._loaded: queue.SimpleQueue[tuple[Claim, Loaded]] = queue.SimpleQueue()
        self._in_hand: dict[Path, Claim] = {}  # submitted, not yet taken back by ``loaded()``
        self._workers: list[threading.Thread] = []
        self._closed = False

    def __len__(self) -> int:
        return len(self._in_hand)

    def in_hand(self) -> set[Path]:
        """Where the lane's claims are: a recovery must not take them for leftovers."""
        return set(self._in_hand)

    def submit(self, claim: Claim) -> None:
        if len(self._workers) < self.threads:
            worker = threading.Thread(target=self._work, name=f"slow-{len(self._workers)}", daemon=True)
            self._workers.append(worker)
            worker.start()
        self._in_hand[claim.path] = claim
        self._waiting.put(claim)

    def loaded(self) -> list[tuple[Claim, Loaded]]:
        """The claims loaded since the last call, with what each gave."""
        done = []
        while True:
            try:
                claim, item = self._loaded.get_nowait()
            except queue.Empty:
                return done
            del self._in_hand[claim.path]
            done.append((claim, item))

    def close(self, put_back: Callable[[Claim], bool]) -> None:
        """At the stop, after the loaded claims were taken: those still waiting or loading go
        back to the inbox (by ``put_back``), their loads, if they end, thrown away. Idle threads
        end; a busy one is left to the process's exit."""
        self._closed = True
        for _ in self._workers:
            self._waiting.put(None)
        for claim in list(self._in_hand.values()):
            try:
                back = put_back(claim)
            except OSError:
                back = False
            if back:
                log.info("stopping: %s was still being decoded; put back for the next start", claim.rel)
            else:
                log.warning("stopping: %s stays claimed; the next start finishes it", claim.rel)
        self._in_hand.clear()

    def _work(self) -> None:
        while (claim := self._waiting.get()) is not None:
            if self._closed:
                continue
            item = self.load(claim)
            if not self._closed:
                self._loaded.put((claim, item))
