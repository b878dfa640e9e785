"""The report's throughput chart: buckets sized by the run's span (issue 27, item 6: a short run
was one solid bar, both its labels the same hour), counts folded to stay bounded."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from worker.report import throughput
from worker.report.throughput import MOST_BUCKETS, Timeline, bucket_seconds, unit_name

START = datetime(2026, 12, 3, 5, 0, 0, tzinfo=timezone.utc)


def moments(count: int, every: timedelta, start: datetime = START) -> list[str]:
    return [(start + i * every).strftime("%Y-%m-%dT%H:%M:%S.") + f"{i % 1000:03d}Z" for i in range(count)]


def timeline_of(times: list[str]) -> Timeline:
    line = Timeline()
    for at in times:
        line.add(at)
    return line


def chart(line: Timeline, times: list[str]) -> dict:
    return line.buckets(min(times), max(times))


def test_a_five_minute_run_has_several_buckets_with_distinct_names():
    times = moments(300, timedelta(seconds=1))
    made = chart(timeline_of(times), times)
    assert made["seconds"] == 10 and made["unit"] == "10 seconds"
    assert len(made["counts"]) == 30 and set(made["counts"].values()) == {10}
    assert list(made["counts"])[:2] == ["2026-12-03T05:00:00Z", "2026-12-03T05:00:10Z"]


def test_a_gap_is_an_empty_bucket_and_one_row_is_one_bucket():
    second = timedelta(seconds=1)
    times = moments(10, second) + moments(10, second, START + timedelta(minutes=4))
    counts = chart(timeline_of(times), times)["counts"]
    assert 0 in counts.values() and sum(counts.values()) == 20
    one = moments(1, timedelta(0))
    assert chart(timeline_of(one), one)["counts"] == {"2026-12-03T05:00:00Z": 1}


@pytest.mark.parametrize(("span", "size"), [(0, 1), (40, 1), (300, 10), (3600, 120), (86400, 3600),
                                            (30 * 86400, 86400), (365 * 86400, 14 * 86400)])
def test_the_bucket_follows_the_span(span, size):
    assert bucket_seconds(span) == size
    assert span < size * MOST_BUCKETS


def test_units_read_as_words():
    assert [unit_name(s) for s in (1, 30, 60, 300, 3600, 86400, 7 * 86400)] == [
        "second", "30 seconds", "minute", "5 minutes", "hour", "day", "7 days"]


@pytest.mark.parametrize(("every", "level"), [(timedelta(seconds=1), 1), (timedelta(seconds=61), 2)])
def test_a_long_run_folds_its_counts_and_charts_the_same(monkeypatch, every, level):
    """Past the cap of keys the counts go to the minute, then the hour: the chart is the one
    the unfolded counts give."""
    times = moments(5000, every)  # 5,000 distinct seconds, or minutes
    folded = timeline_of(times)
    assert folded.level == level and len(folded.counts) <= throughput.KEYS_KEPT
    monkeypatch.setattr(throughput, "KEYS_KEPT", 10**6)
    unfolded = timeline_of(times)
    assert unfolded.level == 0
    assert chart(folded, times) == chart(unfolded, times)
    assert sum(chart(folded, times)["counts"].values()) == 5000


def test_merged_parts_at_different_resolutions_say_what_one_pass_says():
    later = START + timedelta(hours=1)
    times = moments(500, timedelta(seconds=1)) + moments(5000, timedelta(seconds=61), later)
    one = timeline_of(times)
    first, second = timeline_of(times[:500]), timeline_of(times[500:])
    assert (first.level, second.level) == (0, 2)
    first.merge(second)
    assert chart(first, times) == chart(one, times)
