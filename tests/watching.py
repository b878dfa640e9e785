"""What the end-to-end tests share: files staged and dropped whole, a ``worker watch``
subprocess, and the one check that matters (each file exactly one record)."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from conftest import errors as error_records
from factories import wait_for


def stage(staging: Path, images, count: int, start: int = 0) -> list[Path]:
    paths = []
    for i in range(start, start + count):
        path = staging / f"{i:05d}.png"
        path.write_bytes(cv2.imencode(".png", images[i % len(images)])[1].tobytes())
        paths.append(path)
    return paths


def drop(paths: list[Path], inbox: Path) -> None:
    for path in paths:
        os.rename(path, inbox / path.name)


class Watcher:
    """A ``worker watch`` subprocess; its log goes to a file so it can never block on a pipe.
    Each is killed at the end of its test, even one whose test failed (``no_watcher_left``)."""

    started: list[Watcher] = []

    def __init__(self, inbox: Path, outbox: Path, *extra: str) -> None:
        self.log = outbox.parent / f"watch-{random.random():.8f}.log"
        self.log_fh = open(self.log, "w")
        args = [sys.executable, "-m", "worker", "watch", "--inbox", str(inbox),
                "--outbox", str(outbox), "--settle", "0.2", *extra]
        self.proc = subprocess.Popen(args, stdout=self.log_fh, stderr=subprocess.STDOUT)
        Watcher.started.append(self)

    def ready(self) -> bool:
        return "ready:" in self.log.read_text()

    def wait_ready(self) -> None:
        assert wait_for(lambda: self.ready() or self.proc.poll() is not None, 60), self.output()
        assert self.proc.poll() is None, self.output()

    def output(self) -> str:
        return self.log.read_text()

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.log_fh.close()
        return code


def run_once(inbox: Path, outbox: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worker", "watch", "--once", "--inbox", str(inbox),
         "--outbox", str(outbox), "--settle", "0.2"],
        capture_output=True, text=True, timeout=300,
    )


def row_count(outbox: Path) -> int:
    try:
        return (outbox / "predictions.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def records(outbox: Path) -> tuple[list[dict], list[dict]]:
    """JSONL rows and CSV rows, both fully parsed (either failing to parse fails the test)."""
    jsonl = [json.loads(line) for line in (outbox / "predictions.jsonl").read_text().splitlines()]
    with open(outbox / "predictions.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return jsonl, rows


def assert_exactly_once(outbox: Path, names: set[str]) -> list[dict]:
    """Every name has exactly one record; CSV and JSONL hold the same rows in the same order
    (daemons sharing an outbox take turns appending to both)."""
    jsonl, rows = records(outbox)
    errors = error_records(outbox)
    files = [r["file"] for r in jsonl] + [e["file"] for e in errors]
    assert len(files) == len(set(files)), "a file has two records"
    assert set(files) == names, f"missing: {sorted(names - set(files))[:5]}"
    csv_ids, jsonl_ids = [r["id"] for r in rows], [r["id"] for r in jsonl]
    assert csv_ids == jsonl_ids, "CSV and JSONL disagree"
    return jsonl


def nothing_left(inbox: Path) -> bool:
    leftovers = [  # os.walk, unlike rglob, tolerates folders a daemon removes meanwhile
        name for _, _, names in os.walk(inbox / ".work") for name in names
        if not name.endswith(".lock")
    ]
    return not leftovers and not [p for p in inbox.iterdir() if p.name != ".work"]


@pytest.fixture(autouse=True)
def no_watcher_left():
    """A test that fails mid-way leaves its watcher running for ever (and the machine slower
    for every test after): kill what is still running at the end of each test."""
    yield
    while Watcher.started:
        watcher = Watcher.started.pop()
        if watcher.proc.poll() is None:
            watcher.proc.kill()
            watcher.proc.wait(10)
        watcher.log_fh.close()
