"""What the web page shows live, kept in memory and brought up to date by what changed: the rows
appended to predictions.jsonl since the last look (``GrowingFile``), the decisions appended to
reviews.jsonl, the error records new in ``failed/``. A poll or an event then costs what changed,
never the outbox's size; many pages open cost one look for all.

Two numbers say what changed (``versions``): ``latest`` (rows, failures, the folders' status)
and ``review`` (the review queue). The folders' status (daemons, claims, files waiting) means
listing the inbox, whose size is a stranger's to choose: it is made on a thread of its own, at
most once per ``STATUS_SECONDS`` and never more than a tenth of the time, and shown as last made.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

from worker.daemon.status import status as folder_status
from worker.outbox.lines import MAX_LINE_BYTES, row_from
from worker.outbox.records import FAILED_DIR, JSONL_NAME
from worker.outbox.reviews import MAX_LINE as REVIEW_LINE_BYTES
from worker.outbox.reviews import REVIEWS_NAME, parse_decision
from worker.web.failed_index import FailedIndex
from worker.web.growing import GrowingFile
from worker.web.outbox_view import TAIL_BYTES, brief_row
from worker.web.review_queue import ReviewQueue

log = logging.getLogger(__name__)

# The most rows and failures a page asks for (the API's limits).
MOST_ROWS = 200
MOST_FAILURES = 20
# A look reads at most this many steps of ``READ_BYTES``: the rest of a backlog, at the next.
LOOKS_AT_ONCE = 4
# failed/ is listed when its own folder changed, and at least this often (records in subfolders
# do not change its time); the folders' status is made again at most this often.
FAILED_SECONDS = 10.0
STATUS_SECONDS = 5.0
# A slow listing (a huge inbox, a huge failed/) is made again no sooner than this many times
# its duration.
LISTING_DUTY = 10


class LiveOutbox:
    def __init__(self, inbox: Path, outbox: Path, *, clock=time.monotonic) -> None:
        self.inbox, self.outbox, self.clock = Path(inbox), Path(outbox), clock
        self.lock = threading.Lock()
        self.records_parsed = 0  # lines of the JSONL files and error records, in all
        self.versions = {"latest": 0, "review": 0}
        self.failed = FailedIndex(self.outbox / FAILED_DIR)
        self.failed_seen: tuple | None = None  # failed/'s (mtime, inode) at the last listing
        self.failed_listed = float("-inf")
        self.failed_due = float("-inf")  # listed again no sooner
        self.status: dict = {}
        self.status_due = float("-inf")
        self.status_making = False
        self.bytes_done = 0
        self.predictions = self.reviews = None
        self._start_over()

    @property
    def bytes_read(self) -> int:
        """Of the JSONL files, in all (the tests count work with it)."""
        return self.bytes_done + self.predictions.bytes_read + self.reviews.bytes_read

    def look(self) -> dict[str, int]:
        """Bring the state up to date; the versions. A look at files that did not change costs
        a few system calls (and reads nothing)."""
        with self.lock:
            self._look(self.clock())
            return dict(self.versions)

    def latest(self, limit: int) -> dict:
        with self.lock:
            day = datetime.now(timezone.utc).date().isoformat()
            return {"rows": list(self.newest)[:limit], "failures": self.failed.shown,
                    "status": {**self.status, "failed_today": self.failed.on_day(day)}}

    def review(self, limit: int) -> list[dict]:
        with self.lock:
            if self.queue_made != self.versions["review"]:  # made once a change, for every page
                self.queue_rows, self.queue_made = self.queue.rows(MOST_ROWS), self.versions["review"]
            return self.queue_rows[:limit]

    # --- the looks -------------------------------------------------------------------------

    def _start_over(self) -> None:
        """Everything read again: from the JSONL's tail, and the whole of reviews.jsonl (read
        first, so that rows a person decided on never enter the queue)."""
        if self.predictions is not None:
            self.bytes_done = self.bytes_read
        self.predictions = GrowingFile(self.outbox / JSONL_NAME, start_tail=TAIL_BYTES,
                                       max_line=MAX_LINE_BYTES)
        self.reviews = GrowingFile(self.outbox / REVIEWS_NAME, start_tail=None, max_line=REVIEW_LINE_BYTES)
        self.newest: deque[dict] = deque(maxlen=MOST_ROWS)
        self.queue = ReviewQueue()
        self.queue_rows: list[dict] = []
        self.queue_made = -1  # the review version queue_rows were made at
        self.versions = {key: n + 1 for key, n in self.versions.items()}

    def _look(self, now: float) -> None:
        for _ in range(LOOKS_AT_ONCE):  # a backlog (or a start over) is taken in bounded steps
            more = self._follow_reviews() | self._follow_predictions()
            if not self.queue.complete(MOST_ROWS):
                log.info("the review queue ran short (%d decisions): reading the outbox's tail again",
                         len(self.queue.decided))
                self._start_over()
                more = True
            if not more:
                break
        self._list_failed(now)
        self._make_status(now)

    def _follow_reviews(self) -> bool:
        appended = self.reviews.appended()
        if appended.reset:  # a rewritten reviews.jsonl: the queue is made again from both files
            self._start_over()
            return True
        changed = False
        for line in appended.lines:
            self.records_parsed += 1
            decision = parse_decision(line)
            if decision is not None:
                changed |= self.queue.decide(decision)
        if changed:
            self.versions["review"] += 1
        return appended.more

    def _follow_predictions(self) -> bool:
        appended = self.predictions.appended()
        if appended.reset:  # a rewritten JSONL: the rows shown and queued may be gone from it
            self._start_over()
            return True
        rows = 0
        for line in appended.lines:
            self.records_parsed += 1
            row = row_from(line)
            if row is not None:
                self.newest.appendleft(brief_row(row))
                self.queue.add_row(row)
                rows += 1
        if rows:
            self.versions["latest"] += 1
            self.versions["review"] += 1
        return appended.more

    def _list_failed(self, now: float) -> None:
        try:
            info = (self.outbox / FAILED_DIR).stat()
            seen = (info.st_mtime_ns, info.st_ino)
        except OSError:
            seen = None
        if now < self.failed_due or (seen == self.failed_seen and now - self.failed_listed < FAILED_SECONDS):
            return
        self.failed_seen, self.failed_listed = seen, now
        before = self.failed.records_read
        if self.failed.look(MOST_FAILURES):
            self.versions["latest"] += 1
        self.records_parsed += self.failed.records_read - before
        # A folder of many records, changing all the time (a daemon quarantining a flood), is
        # listed no more than a tenth of the time.
        self.failed_due = now + LISTING_DUTY * (self.clock() - now)

    def _make_status(self, now: float) -> None:
        """The first at once (a page shows it on opening), then each on a thread of its own."""
        if not self.status:
            self._keep_status(*self._new_status())
        elif not self.status_making and now >= self.status_due:
            self.status_making = True
            threading.Thread(target=self._status_thread, name="live-status", daemon=True).start()

    def _status_thread(self) -> None:
        made = self._new_status()
        with self.lock:
            self._keep_status(*made)
            self.status_making = False

    def _new_status(self) -> tuple[dict, float]:
        started = self.clock()
        try:
            made = folder_status(self.inbox, self.outbox, failures=False)
        except Exception as exc:  # noqa: BLE001 - the numbers are a nicety; the page goes on without them
            made = {"error": str(exc)}
        return made, self.clock() - started

    def _keep_status(self, made: dict, took: float) -> None:
        if made != self.status:
            self.status = made
            self.versions["latest"] += 1
        self.status_due = self.clock() + max(STATUS_SECONDS, LISTING_DUTY * took)
