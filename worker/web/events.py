"""``GET /api/events``: Server-Sent Events telling open pages what changed (``LiveOutbox``'s
versions), so that they fetch the live list or the review queue then, not on a timer.

Many tabs, and any client, may hold a stream: each is an async generator (no thread), holding
one number (the versions last sent) and no queue; a client that does not read stops its own
generator at the socket's buffer. One ticker task looks at the files for all streams, and only
while a stream is open. Streams are capped (``MAX_STREAMS``; one more is 503) and each ends
after ``STREAM_SECONDS`` (the browser reconnects on its own, after ``RETRY_MS``): a stream
held by a client that went away without closing is let go in time. A client that closes is
let go at once (Starlette cancels the stream on ``http.disconnect``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import anyio
from fastapi import HTTPException
from fastapi.sse import ServerSentEvent

from worker.web.live import LiveOutbox

# Open streams at once, over all clients: a page holds one.
MAX_STREAMS = 32
# How often the files are looked at while a stream is open.
TICK_SECONDS = 0.5
# A stream's life; then the browser opens another.
STREAM_SECONDS = 300.0
# What the browser waits before opening another stream.
RETRY_MS = 2000


class EventStreams:
    def __init__(self, live: LiveOutbox, *, most: int = MAX_STREAMS, tick: float = TICK_SECONDS,
                 lifetime: float = STREAM_SECONDS) -> None:
        self.live, self.most, self.tick, self.lifetime = live, most, tick, lifetime
        self.open = 0
        self.ticker: asyncio.Task | None = None
        self.closing = False  # the server is stopping: streams end at their next tick

    def close(self) -> None:
        """End every stream at its next tick, and refuse new ones (a signal handler calls this)."""
        self.closing = True

    async def slot(self) -> AsyncIterator[None]:
        """A FastAPI dependency: a place among the streams for the request's life, or 503."""
        if self.closing:
            raise HTTPException(503, "the server is stopping", headers={"Retry-After": "30"})
        if self.open >= self.most:
            raise HTTPException(503, f"{self.most} event streams are open already: poll /api/latest instead",
                                headers={"Retry-After": "30"})
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1

    async def stream(self) -> AsyncIterator[ServerSentEvent]:
        """The versions now, then each time they change, until the stream's life is over or
        the server stops."""
        self._start_ticker()
        sent = await anyio.to_thread.run_sync(self.live.look)
        yield ServerSentEvent(event="versions", data=sent, retry=RETRY_MS)
        ends = time.monotonic() + self.lifetime
        while not self.closing and time.monotonic() < ends:
            await asyncio.sleep(self.tick)
            now = dict(self.live.versions)
            if now != sent:
                sent = now
                yield ServerSentEvent(event="versions", data=now)
            self._start_ticker()

    def _start_ticker(self) -> None:
        if self.ticker is None or self.ticker.done():
            self.ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while self.open:
            await anyio.to_thread.run_sync(self.live.look)
            await asyncio.sleep(self.tick)
