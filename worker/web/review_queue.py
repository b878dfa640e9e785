"""The review queue kept as rows and decisions arrive, in memory bounded by ``capacity``.

The order is the report's (``Summary.review_queue``): rows the review flag names first, then the
least sure, then the smallest margin, then the earliest. Only the ``capacity`` best-placed rows
are kept; the best-placed row ever let go sets a ``floor``, and from then on only rows placed
above it are taken in, so what is kept is always *every* unreviewed row placed above the floor:
the queue's head is exact. A decision takes its row out (kept aside, so an undo puts it back);
when the rows above the floor run short of what a page asks for, ``complete`` says so and the
caller reads the rows again (``LiveOutbox`` does, from the JSONL's tail).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict

from worker.outbox.reviews import Decision, Undo
from worker.report.summary import brief

# Rows kept for the queue: more than any page asks for, so a person's decisions (each takes a
# row out) rarely bring it short.
CAPACITY = 1000
# Reviewed rows kept aside for an undo.
SET_ASIDE = 1000


class ReviewQueue:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.heap: list[tuple] = []  # (place, id): its root is the row to let go first
        self.kept: dict[str, tuple] = {}  # id -> (place, brief), the rows in the heap
        self.aside: OrderedDict[str, tuple] = OrderedDict()  # id -> (place, brief), reviewed
        self.floor: tuple | None = None  # the best place of a row let go
        self.rows_seen = 0
        self.decided: dict[str, list[str]] = {}  # row id -> the labels of its decisions standing

    def add_row(self, row: dict) -> None:
        self.rows_seen += 1
        item = brief(row)
        place = (bool(item.get("review")), -item["confidence"], -item["margin"], -self.rows_seen)
        if row["id"] in self.kept or row["id"] in self.aside:
            return  # a line written twice (an edited file): the first stands
        if self.decided.get(row["id"]):
            self._set_aside(row["id"], (place, item))
        else:
            self._keep(row["id"], place, item)

    def decide(self, line: Decision | Undo) -> bool:
        """Apply a line of reviews.jsonl; whether the queue changed."""
        stack = self.decided.setdefault(line.id, [])
        if isinstance(line, Decision):
            stack.append(line.label)
        elif stack and stack[-1] == line.undone:
            stack.pop()
        else:
            return False
        if stack and line.id in self.kept:
            self._take_out(line.id)
            return True
        if not stack and line.id in self.aside:
            place, item = self.aside.pop(line.id)
            return self._keep(line.id, place, item)
        return False

    def rows(self, limit: int) -> list[dict]:
        best = heapq.nlargest(limit, self.kept.values(), key=lambda entry: entry[0])
        return [item for _, item in best]

    def complete(self, limit: int) -> bool:
        """Whether ``rows(limit)`` is the queue's head: nothing was let go, or enough rows are
        left above the floor."""
        return self.floor is None or len(self.kept) >= limit

    def _keep(self, row_id: str, place: tuple, item: dict) -> bool:
        if self.floor is not None and place <= self.floor:
            return False
        self.kept[row_id] = (place, item)
        heapq.heappush(self.heap, (place, row_id))
        if len(self.heap) > self.capacity:
            let_go, gone = heapq.heappop(self.heap)
            del self.kept[gone]
            self.floor = let_go if self.floor is None else max(self.floor, let_go)
        return True

    def _take_out(self, row_id: str) -> None:
        entry = self.kept.pop(row_id)
        self.heap.remove((entry[0], row_id))
        heapq.heapify(self.heap)
        self._set_aside(row_id, entry)

    def _set_aside(self, row_id: str, entry: tuple) -> None:
        self.aside[row_id] = entry
        if len(self.aside) > SET_ASIDE:
            self.aside.popitem(last=False)
