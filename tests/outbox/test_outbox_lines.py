"""Damaged lines of our own outbox (issue 23, 12-14): a line of predictions.jsonl that is valid
JSON but no row (a field of the wrong type or out of range), a line too long to hold, and the
report's and status's own edges (``--review 0``, ``--html`` into no folder, an outbox the
reader may not read): each counted and skipped, or one line and the right exit code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import TEST_USER, other_user_ids
from fastapi.testclient import TestClient
from outboxes import outbox_with, row
from typer.testing import CliRunner

from worker.cli import app
from worker.web.app import ServeSettings, create_app

runner = CliRunner()


def good() -> dict:
    return row("a.png", "1", 0.9, second="7", second_p=0.05).to_json()


# One damage a field at a time: what a hand edit, another program or a bug may leave.
DAMAGE = {
    "processed_at null": {"processed_at": None},
    "processed_at not a date": {"processed_at": "yesterday"},
    "processed_at a month 13": {"processed_at": "2026-13-20T10:00:00.000Z"},
    "confidence a string": {"confidence": "0.9"},
    "confidence above 1": {"confidence": 7.5},
    "confidence a bool": {"confidence": True},
    "probabilities of one class": {"probabilities": {"1": 1.0}},
    "probabilities a list": {"probabilities": [0.1, 0.9]},
    "a probability a string": {"probabilities": {**{str(d): 0.0 for d in range(10)}, "1": "0.9"}},
    "a probability negative": {"probabilities": {**{str(d): 0.0 for d in range(10)}, "1": -0.5}},
    "review an int": {"review": 3},
    "label null": {"label": None},
    "label not a class": {"label": "cat"},
    "file a number": {"file": 12},
    "id a list": {"id": ["a"]},
    "model a dict": {"model": {"name": "mnist"}},
    "model_version a list": {"model_version": []},
    "page a string": {"page": "2"},
    "page without # in the file": {"page": 2},
    "file_bytes not base64": {"file_bytes": "%%%"},
    "probabilities adding up to 3": {"probabilities": {str(d): 0.3 for d in range(10)}},
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_row_with_a_wrong_typed_field_is_no_row(damage):
    from worker.outbox.lines import parse_row

    assert parse_row(json.dumps({**good(), **DAMAGE[damage]}).encode() + b"\n") is None


def test_a_good_row_parses_as_itself():
    from worker.outbox.lines import parse_row

    record = good()
    assert parse_row(json.dumps(record).encode() + b"\n") == record


def _damaged_outbox(tmp_path: Path) -> Path:
    """Two good rows, then one line of each damage, then one more good row."""
    outbox = outbox_with(tmp_path, [row("a.png", "1", 0.99), row("b.png", "2", 0.5)])
    jsonl = outbox / "predictions.jsonl"
    with open(jsonl, "ab") as fh:
        for damage in DAMAGE.values():
            fh.write(json.dumps({**good(), **damage}).encode() + b"\n")
        fh.write(json.dumps(row("c.png", "3", 0.7).to_json()).encode() + b"\n")
    return outbox


@pytest.mark.parametrize("form", [[], ["--json"], ["--html", "report.html"], ["--truth", "folders"]])
def test_report_counts_and_skips_wrong_typed_rows(tmp_path, form):
    outbox = _damaged_outbox(tmp_path)
    form = [str(tmp_path / part) if part.endswith(".html") else part for part in form]
    result = runner.invoke(app, ["report", "--outbox", str(outbox), *form])
    assert result.exit_code == 0, result.output
    if "--json" in form:
        report = json.loads(result.stdout)
        assert (report["predictions"], report["skipped_lines"]) == (3, len(DAMAGE))
    else:
        assert "3 predictions" in result.stdout
        assert f"{len(DAMAGE)} line(s) of predictions.jsonl skipped" in result.stdout


def test_report_in_parts_counts_and_skips_wrong_typed_rows(tmp_path, monkeypatch):
    """The parallel path (a big file cut in parts, summarised in forked processes)."""
    from worker.report import build_report, parallel

    outbox = _damaged_outbox(tmp_path)
    monkeypatch.setattr(parallel, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 3)
    report = build_report(outbox)
    assert (report["predictions"], report["skipped_lines"]) == (3, len(DAMAGE))


@pytest.fixture
def web(tmp_path, fake_classifier):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    outbox = _damaged_outbox(tmp_path)
    settings = ServeSettings(inbox=inbox, outbox=outbox, allowed_hosts=("testserver",))  # TestClient's Host
    with TestClient(create_app(settings, fake_classifier)) as client:
        yield client


def test_the_page_skips_wrong_typed_rows(web, tmp_path):
    latest = web.get("/api/latest", params={"limit": 200})
    assert latest.status_code == 200, latest.text
    assert sorted(r["file"] for r in latest.json()["rows"]) == ["a.png", "b.png", "c.png"]
    review = web.get("/api/review", params={"limit": 200})
    assert review.status_code == 200, review.text
    assert sorted(r["file"] for r in review.json()["rows"]) == ["a.png", "b.png", "c.png"]
    from worker.web.outbox_view import record_of

    found = record_of(tmp_path / "outbox", "a.png")  # /api/record takes only names uploads are given
    assert found["row"]["file"] == "a.png"


def test_status_reads_past_a_last_line_that_is_no_row(tmp_path):
    outbox = outbox_with(tmp_path, [row("a.png", "1", 0.99)])
    with open(outbox / "predictions.jsonl", "ab") as fh:
        fh.write(b"[1, 2]\n")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    result = runner.invoke(app, ["status", "--inbox", str(inbox), "--outbox", str(outbox), "--json"])
    assert json.loads(result.stdout)["last_row"]["file"] == "a.png", result.output


# --- 13: a line too long to hold ---

def _peak_of_report(outbox: Path, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    """A ``worker report`` in a process of its own, and its peak RSS in MB."""
    probe = ("import resource, subprocess, sys; "
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "sys.stderr.write(r.stderr); sys.stdout.write(r.stdout); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, file=sys.stderr); "
             "sys.exit(r.returncode)")
    done = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "worker", "report",
                           "--outbox", str(outbox), *extra], capture_output=True, text=True, timeout=300)
    return done, float(done.stderr.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("newline", [False, True], ids=["last-line-unended", "ended"])
def test_a_huge_line_is_skipped_in_bounded_memory(tmp_path, newline):
    outbox = outbox_with(tmp_path, [row("a.png", "1", 0.99), row("b.png", "2", 0.98)])
    jsonl = outbox / "predictions.jsonl"
    chunk = b'{"file": "' + b"x" * (2**20 - 10)
    with open(jsonl, "ab") as fh:
        for _ in range(300):
            fh.write(chunk)
        if newline:
            fh.write(b'"}\n' + jsonl.read_bytes().splitlines(keepends=True)[0])
    done, peak = _peak_of_report(outbox, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["skipped_lines"] == 1 and report["predictions"] == (3 if newline else 2)
    assert peak < 200, f"peak RSS {peak:.0f} MB"


def test_a_line_longer_than_the_cap_is_skipped_and_the_next_read(tmp_path):
    from worker.outbox.lines import MAX_LINE_BYTES
    from worker.report import build_report

    outbox = outbox_with(tmp_path, [row("a.png", "1", 0.99)])
    jsonl = outbox / "predictions.jsonl"
    first = jsonl.read_bytes()
    long = json.dumps({**good(), "model": "m" * MAX_LINE_BYTES}).encode() + b"\n"
    jsonl.write_bytes(first + long + first)
    report = build_report(outbox)
    assert (report["predictions"], report["skipped_lines"]) == (2, 1)


# --- 14: the report's and status's own edges ---

def test_review_zero_lists_none(tmp_path, monkeypatch):
    from worker.report import build_report, parallel
    from worker.report.summary import Caps

    outbox = outbox_with(tmp_path, [row(f"{i}.png", "1", 0.5 + i / 100) for i in range(6)])
    result = runner.invoke(app, ["report", "--outbox", str(outbox), "--review", "0"])
    assert result.exit_code == 0, result.output
    assert "6 predictions" in result.stdout and "to review" not in result.stdout
    monkeypatch.setattr(parallel, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 3)
    assert build_report(outbox, caps=Caps(review=0))["review"] == []


def test_html_into_a_missing_folder_is_one_line(tmp_path):
    outbox = outbox_with(tmp_path, [row("a.png", "1", 0.99)])
    html = tmp_path / "no" / "r.html"
    result = runner.invoke(app, ["report", "--outbox", str(outbox), "--html", str(html)])
    assert result.exit_code == 78, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "no" in result.stderr


def test_status_exits_3_when_no_daemon_runs(tmp_path):
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    result = runner.invoke(app, ["status", "--inbox", str(inbox), "--outbox", str(outbox)])
    assert result.exit_code == 3, result.output
    assert "0 daemon(s) alive" in result.stdout


@pytest.fixture(params=[0o750, 0o755], ids=["outbox-750", "outbox-755"])
def private_boxes(request):
    """An inbox and outbox as the service makes them (UMask=0027: files 0640, the outbox 0750 or
    made 0755 by hand), with a row, a failure and a daemon's lock, in /tmp so that TEST_USER can
    reach them; the user's ids."""
    ids = other_user_ids()
    if ids is None or os.geteuid() != 0:
        pytest.skip(f"needs root and the user {TEST_USER}")
    root = Path(tempfile.mkdtemp(prefix="worker-unreadable-", dir="/tmp"))
    try:
        os.chmod(root, 0o755)
        outbox = outbox_with(root, [row("a.png", "1", 0.99)], [("bad.png", "not-an-image")])
        inbox = root / "inbox"
        (inbox / ".work").mkdir(parents=True)
        (inbox / ".work" / "0123456789abcdef0123.lock").touch()
        for path in outbox.rglob("*"):
            os.chmod(path, 0o750 if path.is_dir() else 0o640)
        os.chmod(inbox / ".work" / "0123456789abcdef0123.lock", 0o640)
        os.chmod(outbox, request.param)
        yield inbox, outbox, ids
    finally:
        shutil.rmtree(root)


def _as_other_user(ids, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={ids[0]}", f"--regid={ids[1]}", "--clear-groups",
         sys.executable, "-m", "worker", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": "/tmp"},
    )


@pytest.mark.slow
def test_a_reader_outside_the_group_gets_one_line(private_boxes):
    inbox, outbox, ids = private_boxes
    for args in (["report", "--outbox", str(outbox)],
                 ["status", "--inbox", str(inbox), "--outbox", str(outbox)]):
        done = _as_other_user(ids, *args)
        assert done.returncode == 78, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "cannot read" in done.stderr and done.stdout == ""


@pytest.mark.parametrize("block", [1, 3, 7, 64])
def test_rows_are_looked_up_backwards_a_block_at_a_time(tmp_path, block, monkeypatch):
    """The page's review lookup reads the JSONL from its end in blocks (a map of the file died
    with SIGBUS when the file was cut short under it): whole lines, last first, the torn tail
    and over-long lines left out."""
    from worker.web import outbox_view

    monkeypatch.setattr(outbox_view, "MAX_LINE_BYTES", 10)
    path = tmp_path / "lines"
    path.write_bytes(b"one\n" + b"x" * 25 + b"\ntwo\n\nthree\ntorn")
    with open(path, "rb") as fh:
        assert list(outbox_view.lines_backwards(fh, block)) == [b"three\n", b"\n", b"two\n", b"one\n"]
