"""Rows over time, for the throughput chart: counted at the finest resolution that stays small,
then put in buckets whose size follows the run's span, so a five-minute run and a year of rows
both make a chart of a few dozen columns with labels that differ.

Rows are counted by their ``processed_at`` cut to the second; past ``KEYS_KEPT`` distinct keys
the counts are folded to the minute, then the hour, then the day: memory stays bounded whatever
the outbox holds. Folding changes no chart: more than ``KEYS_KEPT`` distinct seconds mean a
span of more than ``KEYS_KEPT`` seconds, cut into buckets (at most ``MOST_BUCKETS`` of them) of
whole minutes; the same holds of minutes folded to hours, and hours to days.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

# Lengths of ``processed_at`` ("2026-12-03T05:00:00.000Z") cut to the second, minute, hour, day,
# with what each such key lasts.
RESOLUTIONS = ((19, 1), (16, 60), (13, 3600), (10, 86400))
# At least MOST_BUCKETS * 60, so that folding changes no chart (see above).
KEYS_KEPT = 4096
MOST_BUCKETS = 48
# Bucket sizes a person reads at a glance, in seconds.
BUCKET_SECONDS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
                  86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 91 * 86400, 365 * 86400)
_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))
# What a key lacks of a whole second's ISO form ("YYYY-MM-DDTHH:MM:SS"), by its length.
_KEY_PADDING = {19: "", 16: ":00", 13: ":00:00", 10: "T00:00:00"}


class Timeline:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.level = 0  # index into RESOLUTIONS
        self.key_length = RESOLUTIONS[0][0]

    def add(self, at: str) -> None:
        """Once per row: a slice and a count, and a fold when the keys grow past the cap."""
        self.counts[at[: self.key_length]] += 1
        if len(self.counts) > KEYS_KEPT:
            self._fold_to(self.level + 1)

    def merge(self, other: Timeline) -> None:
        level = max(self.level, other.level)
        self._fold_to(level)
        theirs = other.counts
        if other.level < level:
            theirs = _folded(theirs, RESOLUTIONS[level][0])
        self.counts.update(theirs)
        while len(self.counts) > KEYS_KEPT and self.level + 1 < len(RESOLUTIONS):
            self._fold_to(self.level + 1)

    def _fold_to(self, level: int) -> None:
        level = min(level, len(RESOLUTIONS) - 1)
        if level > self.level:
            self.level, self.key_length = level, RESOLUTIONS[level][0]
            self.counts = _folded(self.counts, self.key_length)

    def buckets(self, first: str, last: str) -> dict:
        """``{"unit": "30 seconds", "seconds": 30, "counts": {start: rows}}``: every bucket from
        the one of ``first`` (the first row's time) to the one of ``last``, empty ones too (a
        gap shows as one), each named by its start in ISO 8601 UTC. The size follows the span
        from ``first`` to ``last``, and is a whole number of the counts' resolution."""
        if not self.counts:
            return {"unit": "hour", "seconds": 3600, "counts": {}}
        begin, end = _epoch(first[:19]), _epoch(last[:19])
        size = bucket_seconds(end - begin, RESOLUTIONS[self.level][1])
        counts: Counter[int] = Counter()
        for key, count in self.counts.items():
            start = _epoch(key)
            counts[start - start % size] += count
        return {"unit": unit_name(size), "seconds": size,
                "counts": {_iso(t): counts.get(t, 0) for t in range(begin - begin % size, end + 1, size)}}


def bucket_seconds(span: int, finest: int = 1) -> int:
    """The smallest readable bucket, a whole number of ``finest`` (the counts' resolution),
    that cuts ``span`` seconds into at most ``MOST_BUCKETS``."""
    for size in BUCKET_SECONDS:
        if size % finest == 0 and span < size * MOST_BUCKETS:
            return size
    return BUCKET_SECONDS[-1]


def unit_name(seconds: int) -> str:
    for length, name in _UNITS:
        if seconds % length == 0:
            count = seconds // length
            return name if count == 1 else f"{count} {name}s"
    return f"{seconds} seconds"


def _folded(counts: Counter[str], key_length: int) -> Counter[str]:
    folded: Counter[str] = Counter()
    for key, count in counts.items():
        folded[key[:key_length]] += count
    return folded


def _epoch(key: str) -> int:
    moment = datetime.fromisoformat(key + _KEY_PADDING[len(key)]).replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
