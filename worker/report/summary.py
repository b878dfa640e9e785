"""What a report says, gathered in one pass over the rows, in memory bounded by its caps.

Counts are exact; lists are capped (the review queue keeps N in a heap: rows the review flag
names first, then the least sure; each
gallery its first N rows, the failures their first N records) and say how many more there were.
"""

from __future__ import annotations

import heapq
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass

from worker import defaults
from worker.report.throughput import Timeline
from worker.report.truth import Truth

HISTOGRAM_BINS = 20
BRIEF_FIELDS = ("id", "file", "label", "model", "model_version", "page", "file_bytes", "review")
# From this many rows on, the median is NumPy's (a partition, linear) rather than a sort in
# Python: below it the sort takes less time than importing NumPy does.
NUMPY_MEDIAN_ROWS = 200_000


@dataclass(frozen=True)
class Caps:
    review: int = 20
    gallery: int = 0  # rows per label kept for pictures (HTML only)
    mistakes: int = 0  # rows per confusion cell kept for pictures (HTML only)
    failures: int = 20


def brief(row: dict) -> dict:
    """The fields of a row a report lists (and that find its picture)."""
    top, second = _top_two(row["probabilities"])
    keep = {k: row[k] for k in BRIEF_FIELDS if k in row}
    return {**keep, "confidence": row["confidence"], "margin": round(top[1] - second[1], 6),
            "second": second[0]}


def _top_two(probabilities: dict) -> tuple[tuple[str, float], tuple[str, float]]:
    first, second = heapq.nlargest(2, probabilities.items(), key=lambda item: item[1])
    return first, second


class Summary:
    def __init__(self, truth: Truth, caps: Caps, low_confidence: float = defaults.LOW_CONFIDENCE) -> None:
        self.truth, self.caps, self.low_confidence = truth, caps, low_confidence
        self.has_truth = bool(truth)
        self.labels: Counter[str] = Counter()
        self.class_order: list[str] = []  # the model's classes, in its order (from a row)
        self.models: Counter[tuple[str, str]] = Counter()
        self.timeline = Timeline()  # rows over time, for the throughput chart
        self.histogram = [0] * HISTOGRAM_BINS
        self.confidences = array("d")
        self.unsure = 0
        self.flagged = 0
        self.reasons: Counter[str] = Counter()  # the review flag's, over the flagged rows
        self.first = self.last = None
        # A heap of the rows to review, (flagged, -confidence, -margin, -row number, brief): its
        # root is the one to let go first (unflagged before flagged, then the surest; of
        # equals, the latest in the file).
        self._review: list = []
        self.galleries: dict[str, list[dict]] = defaultdict(list)
        self.confusion: Counter[tuple[str, str]] = Counter()
        self.mistakes: dict[tuple[str, str], list[dict]] = defaultdict(list)
        self.failure_kinds: Counter[str] = Counter()
        self.failures: list[dict] = []

    def add_row(self, row: dict) -> None:
        """Once per row of the outbox, so kept to plain steps: a million rows pass here."""
        label, confidence, at = row["label"], float(row["confidence"]), row["processed_at"]
        if self.first is None:
            self.class_order = list(row["probabilities"])
            self.first = self.last = at
        elif at > self.last:
            self.last = at
        elif at < self.first:
            self.first = at
        self.labels[label] += 1
        self.models[(row.get("model", "?"), row.get("model_version", ""))] += 1
        self.timeline.add(at)
        self.histogram[min(int(confidence * HISTOGRAM_BINS), HISTOGRAM_BINS - 1)] += 1
        if confidence < self.low_confidence:
            self.unsure += 1
        reasons = row.get("review")  # rows written before the flag have none
        if reasons:
            self.flagged += 1
            self.reasons.update(reasons.split())
        queue, flagged = self._review, bool(reasons)
        if len(queue) < self.caps.review or (queue and (flagged, -confidence) >= queue[0][:2]):
            self._queue_for_review(row, flagged, confidence, len(self.confidences))
        if self.caps.gallery and len(self.galleries[label]) < self.caps.gallery:
            self.galleries[label].append(brief(row))
        if self.has_truth:
            self._compare(row, label)
        self.confidences.append(confidence)

    def empty_copy(self) -> Summary:
        return Summary(self.truth, self.caps, self.low_confidence)

    def merge(self, other: Summary) -> None:
        """Add a summary of the rows that come after ours in the file."""
        if other.first is None:
            return
        if self.first is None:
            self.class_order = other.class_order
        self.first = min(filter(None, (self.first, other.first)))
        self.last = max(filter(None, (self.last, other.last)))
        for mine, theirs in ((self.labels, other.labels), (self.models, other.models),
                             (self.confusion, other.confusion)):
            mine.update(theirs)
        self.timeline.merge(other.timeline)
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram, strict=True)]
        self.confidences.extend(other.confidences)  # first: the review merge counts rows with it
        self.unsure += other.unsure
        self.flagged += other.flagged
        self.reasons.update(other.reasons)
        for key, rows in other.galleries.items():
            self.galleries[key] = (self.galleries[key] + rows)[: self.caps.gallery]
        for key, rows in other.mistakes.items():
            self.mistakes[key] = (self.mistakes[key] + rows)[: self.caps.mistakes]
        offset = len(self.confidences) - len(other.confidences)  # their row numbers follow ours
        both = self._review + [(f, c, m, n - offset, item) for f, c, m, n, item in other._review]
        self._review = heapq.nlargest(self.caps.review, both, key=lambda e: e[:4])
        heapq.heapify(self._review)

    def _queue_for_review(self, row: dict, flagged: bool, confidence: float, number: int) -> None:
        """Called for a row when the queue has room or the row is less sure than the surest
        it keeps (``add_row`` tests that first: the common case costs no call, no margin)."""
        item = brief(row)
        entry = (flagged, -confidence, -item["margin"], -number, item)
        if len(self._review) < self.caps.review:
            heapq.heappush(self._review, entry)
        else:
            heapq.heappushpop(self._review, entry)

    def _compare(self, row: dict, label: str) -> None:
        true = self.truth.label_of(row)
        if true is None:
            return
        self.confusion[(true, label)] += 1
        cell = self.mistakes[(true, label)]
        if true != label and len(cell) < self.caps.mistakes:
            cell.append(brief(row))

    def add_error(self, record: dict) -> None:
        kind = str(record.get("kind", "?"))
        self.failure_kinds[kind] += 1
        if len(self.failures) < self.caps.failures:
            self.failures.append({"file": record.get("file"), "kind": kind, "message": record.get("message")})

    def ordered(self, labels) -> list[str]:
        """Labels in the model's class order; any it does not know after them, by name."""
        index = {label: i for i, label in enumerate(self.class_order)}
        return sorted(labels, key=lambda label: (index.get(label, len(index)), label))

    @property
    def rows(self) -> int:
        return len(self.confidences)

    def review_queue(self) -> list[dict]:
        """Rows the review flag names first; within each part the least sure first, by
        confidence, then by the margin between the top two classes."""
        return [item for *_, item in sorted(self._review, reverse=True, key=lambda e: e[:4])]

    def median(self) -> float | None:
        if not self.confidences:
            return None
        if len(self.confidences) < NUMPY_MEDIAN_ROWS:
            ordered, middle = sorted(self.confidences), len(self.confidences) // 2
            return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        import numpy as np

        return float(np.median(np.frombuffer(self.confidences)))

    def throughput(self) -> dict:
        if self.first is None:
            return self.timeline.buckets("", "")
        return self.timeline.buckets(self.first, self.last)
