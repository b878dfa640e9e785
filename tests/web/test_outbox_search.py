"""Searching the outbox from the page (issue 27, item 7): filters applied on the server, pages
bounded by a cursor and a byte budget, one row with its history, the view as CSV, failures,
rows per minute; and what hostile requests and damaged outboxes get."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from outboxes import outbox_with, row
from test_web import web_settings

from worker.outbox.records import JSONL_NAME
from worker.outbox.reviews import append_review, undo_review
from worker.web.app import create_app
from worker.web.outbox_search import RowFilter, activity, search_rows


def outbox_of(tmp_path, count: int = 40, failures=()):
    """``count`` rows: folders a/ and b/ in turn, labels 0-9 in turn, every third flagged."""
    rows = [row(f"{'ab'[i % 2]}/scan-{i:03d}.png", str(i % 10), 0.5 + (i % 5) / 10,
                review=("low-confidence",) if i % 3 == 0 else ()) for i in range(count)]
    return outbox_with(tmp_path, rows, failures=failures), rows


@pytest.fixture
def client(tmp_path, fake_classifier):
    outbox, rows = outbox_of(tmp_path, failures=[("a/bad.png", "corrupt"), ("b/worse.png", "too-big")])
    (tmp_path / "inbox").mkdir()
    app = create_app(web_settings((tmp_path / "inbox", outbox)), fake_classifier)
    with TestClient(app) as test_client:
        yield test_client, outbox, rows


def test_filters_combine_and_the_newest_come_first(client):
    http, _, rows = client
    found = http.get("/api/rows", params={"label": "4", "flagged": "true", "folder": "a"}).json()
    expected = [r.file for r in reversed(rows) if r.label == "4" and r.review and r.file.startswith("a/")]
    assert [r["file"] for r in found["rows"]] == expected and expected and found["next"] is None
    by_name = http.get("/api/rows", params={"name": "SCAN-03"}).json()["rows"]
    assert [r["file"] for r in by_name] == [f"{'ab'[i % 2]}/scan-{i:03d}.png" for i in range(39, 29, -1)]
    unflagged = http.get("/api/rows", params={"flagged": "false", "limit": 200}).json()["rows"]
    assert len(unflagged) == len([r for r in rows if not r.review])


def test_pages_follow_the_cursor_to_the_first_row(client):
    http, _, rows = client
    seen, cursor = [], None
    while True:
        page = http.get("/api/rows", params={"limit": 7, **({"cursor": cursor} if cursor else {})}).json()
        seen += [r["id"] for r in page["rows"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [r.id for r in reversed(rows)]


def test_a_page_reads_a_bounded_part_and_says_where_to_go_on(tmp_path):
    outbox, rows = outbox_of(tmp_path, count=200)
    size = (outbox / JSONL_NAME).stat().st_size
    found = search_rows(outbox, RowFilter(label="no such label"), limit=10, scan_bytes=size // 4)
    assert found.rows == [] and 0 < found.next < size, "nothing found in the budget: go on from here"
    ids, cursor = [], None
    while True:  # the whole file, a quarter at a time, every row once
        found = search_rows(outbox, RowFilter(), limit=1000, cursor=cursor, scan_bytes=size // 4)
        ids += [r["id"] for r in found.rows]
        if (cursor := found.next) is None:
            break
    assert ids == [r.id for r in reversed(rows)]


def test_damaged_lines_a_torn_tail_and_a_line_longer_than_a_page_are_passed_over(tmp_path):
    outbox, rows = outbox_of(tmp_path, count=3)
    jsonl = outbox / JSONL_NAME
    lines = jsonl.read_bytes().splitlines(keepends=True)
    jsonl.write_bytes(lines[0] + b"x" * 5000 + b"\n" + b"not json\n" + lines[1] + lines[2] + b'{"torn')
    ids, cursor = [], None
    while True:
        found = search_rows(outbox, RowFilter(), limit=50, cursor=cursor, scan_bytes=1000)
        ids += [r["id"] for r in found.rows]
        if (cursor := found.next) is None:
            break
    assert ids == [r.id for r in reversed(rows)]


def test_one_row_with_its_pictures_probabilities_and_history(client):
    http, outbox, rows = client
    target = rows[5]
    fields = {"row_id": target.id, "file": target.file, "predicted": target.label}
    append_review(outbox, **fields, label="3", at=1.0e9, reviewer="ana")
    undo_review(outbox, **fields, label="3", at=1.0e9 + 5, reviewer="ana")
    append_review(outbox, **fields, label="8", at=1.0e9 + 9, reviewer="bo")
    shown = http.get(f"/api/rows/{target.id}").json()
    assert shown["row"]["file"] == target.file and shown["row"]["probabilities"] == target.probabilities
    assert "picture" in shown["row"]  # None: the input was not archived here
    assert [(h.get("label"), h.get("undone"), h["reviewer"]) for h in shown["history"]] == [
        ("3", None, "ana"), (None, "3", "ana"), ("8", None, "bo")]
    assert http.get("/api/rows/" + "0" * 20).status_code == 404
    assert http.get("/api/rows/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)


def test_the_view_as_csv_with_formulas_made_inert(tmp_path, fake_classifier):
    rows = [row("=HYPERLINK(1).png", "1", 0.9), row("b/plain.png", "2", 0.8), row("a/x.png", "1", 0.7)]
    outbox = outbox_with(tmp_path, rows)
    (tmp_path / "inbox").mkdir()
    with TestClient(create_app(web_settings((tmp_path / "inbox", outbox)), fake_classifier)) as http:
        answer = http.get("/api/rows.csv")
        in_a = list(csv.reader(io.StringIO(http.get("/api/rows.csv", params={"folder": "a"}).text)))
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    table = list(csv.reader(io.StringIO(answer.text)))
    assert table[0][:3] == ["file", "label", "confidence"]
    assert len(table[0]) == 8 + len(fake_classifier.class_names)
    assert [line[0] for line in table[1:]] == ["a/x.png", "b/plain.png", "'=HYPERLINK(1).png"]
    assert [line[0] for line in in_a[1:]] == ["a/x.png"]


def test_failures_by_kind_folder_and_name(client):
    http, _, _ = client
    every = http.get("/api/failures").json()["failures"]
    assert sorted(f["file"] for f in every) == ["a/bad.png", "b/worse.png"]
    assert [f["file"] for f in http.get("/api/failures", params={"kind": "too-big"}).json()["failures"]] == [
        "b/worse.png"]
    assert [f["file"] for f in http.get("/api/failures", params={"folder": "a", "name": "BAD"}).json()[
        "failures"]] == ["a/bad.png"]


def test_rows_per_minute_with_the_flagged_among_them(tmp_path):
    now = datetime(2026, 12, 3, 5, 10, 30, tzinfo=timezone.utc)
    rows = [row(f"{i}.png", "1", 0.9, at=f"2026-12-03T05:{8 + i % 3:02d}:05.000Z",
                review=("low-margin",) if i % 2 else ()) for i in range(9)]
    outbox = outbox_with(tmp_path, rows + [row("old.png", "1", 0.9, at="2026-12-03T04:00:00.000Z")])
    minutes = activity(outbox, 5, now=now)
    assert [m["minute"] for m in minutes] == [f"2026-12-03T05:{m:02d}:00Z" for m in range(6, 11)]
    assert [(m["rows"], m["flagged"]) for m in minutes] == [(0, 0), (0, 0), (3, 1), (3, 2), (3, 1)]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 201}, {"cursor": -1}, {"cursor": "x"},
                                    {"flagged": "perhaps"}, {"name": "n" * 256}, {"folder": "f" * 1025}])
def test_bad_parameters_are_422(client, params):
    http, _, _ = client
    assert http.get("/api/rows", params=params).status_code == 422


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=300), number=st.integers(min_value=-2**70, max_value=2**70))
def test_the_search_never_answers_500(tmp_path_factory, fake_classifier, text, number):
    outbox, _ = outbox_of(tmp_path_factory.mktemp("o"), count=5)
    (outbox.parent / "inbox").mkdir()
    app = create_app(web_settings((outbox.parent / "inbox", outbox)), fake_classifier)
    with TestClient(app, raise_server_exceptions=False) as http:
        answers = [
            http.get("/api/rows", params={"label": text, "folder": text, "name": text, "cursor": number}),
            http.get("/api/rows.csv", params={"name": text, "flagged": text}),
            http.get("/api/rows/" + quote(text, safe="")),
            http.get("/api/failures", params={"kind": text, "folder": text, "limit": number}),
            http.get("/api/activity", params={"minutes": number}),
        ]
    assert all(a.status_code < 500 for a in answers), [(a.request.url, a.status_code) for a in answers]
    json.dumps([a.json() for a in answers if a.headers["content-type"] == "application/json"])
