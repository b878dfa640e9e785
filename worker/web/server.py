"""``worker serve``'s uvicorn server: a stop signal also ends the page's event streams.

uvicorn's graceful shutdown waits for every open connection to finish its response, and an
event stream's response lasts minutes: without this, a page left open would hold ``systemctl
stop`` (or Ctrl-C) until the stream's life was over.
"""

from __future__ import annotations

from types import FrameType

import uvicorn

from worker.web.events import EventStreams


class PageServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, streams: EventStreams) -> None:
        super().__init__(config)
        self.streams = streams

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.streams.close()
        super().handle_exit(sig, frame)
