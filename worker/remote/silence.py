"""The classify workers' silence: batches out and no answer to any of them for a while is said
once (no worker may be taking them), and so is the first answer after it."""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

# No answer to any batch out for this share of --resend-after is logged: by default that is the
# classify workers' visibility timeout (resend_after is twice it), and a worker answers a batch it
# took well within it (its batch deadline), so a silence that long means no worker takes them.
SILENCE_SHARE = 0.5


class Silence:
    def __init__(self, resend_after: float, clock: Callable[[], float]) -> None:
        self.after = SILENCE_SHARE * resend_after
        self.clock = clock
        self._heard = clock()  # when a worker last answered, or there was nothing to answer
        self._said = False  # the silence was logged

    def heard(self) -> None:
        """A batch answered (or refused: a worker took it all the same)."""
        if self._said:
            log.info("classify workers answer again, after %.0f s without an answer",
                     self.clock() - self._heard)
        self._said = False
        self._heard = self.clock()

    def watch(self, now: float, flights: list, broker_up: bool) -> None:
        """Log once when batches are out with the workers and none has been answered for
        ``after``. While Redis is away that outage is what is logged, and the silence is
        counted from its return."""
        if not flights:
            self._said = False  # nothing out: a next silence is a new one
        if not broker_up or not any(f.sent and f.answer is None for f in flights):
            self._heard = now  # nothing a worker could have answered
        elif not self._said and now - self._heard >= self.after:
            self._said = True
            log.warning("no classify worker has answered for %.0f s (%d batches waiting): is one "
                        "running, with this broker and key? (worker status --broker)",
                        now - self._heard, sum(f.answer is None for f in flights))
