"""The live outbox: ``/api/latest`` (the newest rows and the report's numbers), ``/api/review``
(the rows to review) and ``/api/events`` (Server-Sent Events when either changes)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from fastapi import Depends, FastAPI, Query
from fastapi.sse import EventSourceResponse

from worker.web.events import EventStreams
from worker.web.live import MOST_ROWS, LiveOutbox

# The report's numbers on the live page are made again at most this often, on a thread of their
# own: on a million-row outbox a report takes seconds, and a poll must not wait for it.
REPORT_SECONDS = 60.0


class ReportNumbers:
    """``worker report``'s totals, made again in the background once they are older than
    ``REPORT_SECONDS``; until the first are made, None."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self.numbers: dict | None = None
        self.made = float("-inf")
        self.lock = threading.Lock()
        self.making = False

    def latest(self) -> dict | None:
        with self.lock:
            if not self.making and time.monotonic() - self.made >= REPORT_SECONDS:
                self.making = True
                threading.Thread(target=self._make, name="report-numbers", daemon=True).start()
            return self.numbers

    def _make(self) -> None:
        from worker.report import FROM_THREADS, build_report

        try:  # on a thread beside uvicorn's: the report's workers must not be forked from here
            report = build_report(self.outbox, start_method=FROM_THREADS)
            numbers = {key: report[key] for key in ("predictions", "failed", "low_confidence",
                                                    "low_confidence_threshold", "labels", "first", "last")}
        except Exception as exc:  # noqa: BLE001 - the numbers are a nicety; the page goes on without them
            numbers = {"error": str(exc)}
        with self.lock:
            self.numbers, self.made, self.making = numbers, time.monotonic(), False


def add_live_routes(app: FastAPI, live: LiveOutbox, streams: EventStreams, numbers: ReportNumbers,
                    with_picture) -> None:
    """``with_picture(row)`` adds a row's pictures."""

    @app.get("/api/latest")
    def latest(limit: int = Query(24, ge=1, le=MOST_ROWS)) -> dict:
        versions = live.look()
        shown = live.latest(limit)
        return {**shown, "rows": [with_picture(r) for r in shown["rows"]],
                "report": numbers.latest(), "versions": versions}

    @app.get("/api/review")
    def review(limit: int = Query(24, ge=1, le=MOST_ROWS)) -> dict:
        versions = live.look()
        return {"rows": [with_picture(r) for r in live.review(limit)], "versions": versions}

    @app.get("/api/events", response_class=EventSourceResponse, dependencies=[Depends(streams.slot)])
    async def events():
        """Server-Sent Events: ``versions`` (``{"latest": n, "review": m}``) at once, then
        whenever one changes; fetch /api/latest or /api/review then. 503 when too many
        streams are open; a stream ends after a while, and the browser opens another."""
        async for event in streams.stream():
            yield event
