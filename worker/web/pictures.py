"""The pictures shown beside the page's rows: thumbnails of archived inputs by row id, the
most recent kept in memory."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from worker.report.thumbnails import Thumbnails

THUMBNAILS_KEPT = 2000


class Pictures:
    """A row with its pictures (``Thumbnails.of``), those of the most recent rows kept."""

    def __init__(self, outbox: Path, classes: list[str]) -> None:
        self.thumbnails = Thumbnails(outbox)
        self.classes = classes
        self.kept: OrderedDict[str, dict | None] = OrderedDict()
        self.lock = threading.Lock()

    def with_picture(self, row: dict) -> dict:
        with self.lock:
            if row["id"] not in self.kept:
                self.kept[row["id"]] = self.thumbnails.of(row, self.classes)
                if len(self.kept) > THUMBNAILS_KEPT:
                    self.kept.popitem(last=False)
            return {**row, "picture": self.kept[row["id"]]}
