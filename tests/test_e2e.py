"""End to end: the real ``worker watch`` in a subprocess, real files, the shipped model.

Every file dropped must end as exactly one row or one error record, whatever happens.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from conftest import errors as _errors
from factories import wait_for
from watching import (  # noqa: F401 - no_watcher_left is a fixture
    Watcher,
    assert_exactly_once,
    drop,
    no_watcher_left,
    nothing_left,
    records,
    row_count,
    run_once,
    stage,
)

pytestmark = pytest.mark.slow


def _burst_into_running_watcher(boxes, staging, images, count: int) -> tuple[Watcher, list[Path]]:
    inbox, outbox = boxes
    paths = stage(staging, images, count)
    watcher = Watcher(inbox, outbox)
    watcher.wait_ready()
    drop(paths, inbox)
    return watcher, paths


def test_burst_of_2000_while_running(boxes, staging, mnist_test):
    inbox, outbox = boxes
    images, labels = mnist_test
    watcher, paths = _burst_into_running_watcher(boxes, staging, images, 2000)
    assert wait_for(lambda: (outbox / "predictions.jsonl").exists()
                    and len((outbox / "predictions.jsonl").read_text().splitlines()) >= 2000, 120)
    assert watcher.stop() == 0, watcher.output()
    rows = assert_exactly_once(outbox, {p.name for p in paths})
    assert len(os.listdir(outbox / "processed")) == 2000
    assert nothing_left(inbox)
    correct = sum(int(r["label"]) == labels[int(r["file"][:5])] for r in rows)
    assert correct / len(rows) >= 0.99, "the shipped model reads the digits"


def test_backlog_and_crash_leftovers_each_processed_once(boxes, staging, mnist_test):
    inbox, outbox = boxes
    images, _ = mnist_test
    drop(stage(staging, images, 300), inbox)
    orphan = inbox / ".work" / "deadbeefdeadbeef" / "0123456789abcdef"
    orphan.mkdir(parents=True)
    left = stage(staging, images, 5, start=300)
    for path in left:
        os.rename(path, orphan / path.name) if path == left[0] else None
    drop(left[1:], inbox)
    result = run_once(inbox, outbox)
    assert result.returncode == 0, result.stderr
    assert_exactly_once(outbox, {f"{i:05d}.png" for i in range(305)})
    assert nothing_left(inbox)


def test_kill_9_during_burst_loses_nothing_and_duplicates_nothing(boxes, staging, mnist_test):
    inbox, outbox = boxes
    images, _ = mnist_test
    names = {p.name for p in stage(staging, images, 5000)}
    paths = sorted(staging.iterdir())
    (staging / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    paths.append(staging / "corrupt.png")
    names.add("corrupt.png")
    rng = random.Random(7)
    dropped = 0
    for _kill in range(6):
        watcher = Watcher(inbox, outbox)
        watcher.wait_ready()
        chunk = paths[dropped : dropped + 900]
        drop(chunk, inbox)
        dropped += len(chunk)
        target = row_count(outbox) + rng.randint(1, 600)  # let it get mid-stream, then kill
        assert wait_for(lambda t=target: row_count(outbox) >= t or nothing_left(inbox), 60)
        assert watcher.stop(signal.SIGKILL) == -signal.SIGKILL
    drop(paths[dropped:], inbox)
    result = run_once(inbox, outbox)
    assert result.returncode == 0, result.stderr
    assert_exactly_once(outbox, names)
    assert nothing_left(inbox)


def test_two_daemons_share_an_inbox(boxes, staging, mnist_test):
    inbox, outbox = boxes
    images, _ = mnist_test
    paths = stage(staging, images, 2000)
    watchers = [Watcher(inbox, outbox), Watcher(inbox, outbox)]
    for w in watchers:
        w.wait_ready()
    drop(paths, inbox)
    assert wait_for(lambda: nothing_left(inbox), 120)
    for w in watchers:
        assert w.stop() == 0, w.output()
    assert_exactly_once(outbox, {p.name for p in paths})


def test_sigterm_mid_burst_exits_0_and_loses_nothing(boxes, staging, mnist_test):
    inbox, outbox = boxes
    watcher, paths = _burst_into_running_watcher(boxes, staging, mnist_test[0], 3000)
    wait_for(lambda: (outbox / "predictions.jsonl").exists(), 30)
    assert watcher.stop(signal.SIGTERM) == 0, watcher.output()
    assert "stopped after" in watcher.output()
    result = run_once(inbox, outbox)
    assert result.returncode == 0, result.stderr
    assert_exactly_once(outbox, {p.name for p in paths})


def test_slow_writer_and_bad_inputs_then_a_good_file(boxes, staging, mnist_test):
    inbox, outbox = boxes
    images, labels = mnist_test
    watcher = Watcher(inbox, outbox)
    watcher.wait_ready()
    page = cv2.imencode(".png", 255 - cv2.resize(images[0], (280, 280)))[1].tobytes()
    with open(inbox / "slow.png", "wb") as fh:  # 100-byte chunks over about 2 s
        for i in range(0, len(page), 100):
            fh.write(page[i : i + 100])
            fh.flush()
            time.sleep(2 / (len(page) / 100))  # the writer's own pace, not a wait for us
    (inbox / "empty.png").write_bytes(b"")
    (inbox / "text.png").write_text("not an image")
    (inbox / "notes.docx").write_bytes(b"PK\x03\x04 a word document")
    (inbox / "broken.pdf").write_bytes(b"%PDF-1.4")
    os.mkfifo(inbox / "pipe.png")
    (inbox / "zero.png").symlink_to("/dev/zero")
    (inbox / "out.png").symlink_to(staging)
    drop(stage(staging, images, 1), inbox)
    assert wait_for(lambda: nothing_left(inbox), 60), watcher.output()
    assert watcher.stop() == 0
    rows = {r["file"]: r for r in records(outbox)[0]}
    assert set(rows) == {"slow.png", "00000.png"}
    assert rows["slow.png"]["label"] == str(labels[0]) == rows["00000.png"]["label"]
    kinds = {e["file"]: e["kind"] for e in _errors(outbox)}
    assert kinds == {"empty.png": "empty", "text.png": "not-an-image", "notes.docx": "unsupported",
                     "broken.pdf": "corrupt",
                     "pipe.png": "not-a-regular-file", "zero.png": "not-a-regular-file",
                     "out.png": "not-a-regular-file"}


def test_once_exits_78_when_the_outbox_is_not_a_folder(boxes):
    inbox, outbox = boxes
    outbox.write_text("a file, not a folder")
    result = run_once(inbox, outbox)
    assert result.returncode == 78, "a configuration error: the unit does not restart it"
    assert "outbox" in result.stderr and "Traceback" not in result.stderr


def test_sighup_rotation_mid_burst_loses_nothing_and_repeats_nothing(boxes, staging, mnist_test):
    """logrotate moves both outbox files away and sends SIGHUP while a burst is being read:
    the rows before are in the moved files, the rows after in new ones, each file once."""
    inbox, outbox = boxes
    watcher, paths = _burst_into_running_watcher(boxes, staging, mnist_test[0], 3000)
    assert wait_for(lambda: row_count(outbox) >= 300, 60)
    rotated = outbox.parent / "rotated"
    rotated.mkdir()
    for name in ("predictions.jsonl", "predictions.csv"):
        os.rename(outbox / name, rotated / name)
    watcher.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: nothing_left(inbox), 120), watcher.output()
    assert watcher.stop() == 0, watcher.output()
    assert "reloaded: outbox files reopened" in watcher.output()
    before, after = records(rotated)[0], records(outbox)[0]
    assert before and after, "rows on both sides of the rotation"
    files = [r["file"] for r in before + after]
    assert sorted(files) == sorted(p.name for p in paths), "each file exactly once"
    for side in (rotated, outbox):
        jsonl, csv_rows = records(side)
        assert [r["id"] for r in jsonl] == [r["id"] for r in csv_rows], "CSV and JSONL agree"


def test_inbox_deleted_and_recreated_twice_while_running(boxes, staging, mnist_test):
    import shutil

    inbox, outbox = boxes
    watcher = Watcher(inbox, outbox)
    watcher.wait_ready()
    names = set()
    for round_ in range(3):
        paths = stage(staging, mnist_test[0], 50, start=100 * round_)
        names |= {p.name for p in paths}
        drop(paths, inbox)
        assert wait_for(lambda: nothing_left(inbox), 60), watcher.output()
        if round_ < 2:
            shutil.rmtree(inbox)
            assert wait_for(lambda: "is gone" in watcher.output(), 30), watcher.output()
            inbox.mkdir()
            assert wait_for(lambda n=round_: watcher.output().count("is back") > n, 30), watcher.output()
    assert watcher.proc.poll() is None, watcher.output()
    assert watcher.stop() == 0, watcher.output()
    assert "Traceback" not in watcher.output()
    assert_exactly_once(outbox, names)


def _versions(outbox: Path) -> list[str]:
    return [row["model_version"] for row in records(outbox)[0]]


def _scrape(watcher: Watcher) -> str:
    import re
    import urllib.request

    address = re.search(r"metrics on http://([\d.:]+)/metrics", watcher.output()).group(1)
    return urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()


def _files_scraped(watcher: Watcher) -> float:
    import re

    counts = re.findall(r"^worker_files_total\{.*\} (\S+)$", _scrape(watcher), re.MULTILINE)
    return sum(float(v) for v in counts)


def _served_model(tmp_path: Path) -> Path:
    from worker import defaults
    from worker.model import publish

    model = tmp_path / "models" / "mnist.keras"
    publish.publish_checked(defaults.MODEL, model)
    return model


def _publish(source: Path, model: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker", "publish", str(source), "--model", str(model)],
                          capture_output=True, text=True, timeout=120)


def test_a_version_published_mid_burst_serves_from_the_next_batch(boxes, staging, mnist_test, tmp_path):
    """Rows before the publish carry the old version, rows after the new one, in that order;
    every file exactly once. The reload gap (between the last old row and the first new one)
    is printed for the closing note."""
    from datetime import datetime

    from model_sets import copy_set

    from worker import defaults
    from worker.model import publish

    inbox, outbox = boxes
    model = _served_model(tmp_path)
    first = json.loads(model.with_suffix(".json").read_text())["version"]
    paths = stage(staging, mnist_test[0], 6000)
    second = copy_set(defaults.MODEL, tmp_path / "v2" / "mnist.keras", version="v2")
    watcher = Watcher(inbox, outbox, "--model", str(model), "--metrics", "127.0.0.1:0")
    watcher.wait_ready()
    drop(paths, inbox)
    assert wait_for(lambda: row_count(outbox) >= 300, 60)
    publish.publish_checked(second, model)  # what `worker publish` does, without its start-up time
    assert 0 < _files_scraped(watcher) < 6000, "scraped during the burst"
    assert wait_for(lambda: nothing_left(inbox), 120), watcher.output()
    assert wait_for(lambda: _files_scraped(watcher) == 6000, 10), "the metrics match the outbox exactly"
    assert watcher.stop() == 0, watcher.output()
    assert "changed on disk: mnist version v2 loaded" in watcher.output()
    rows = assert_exactly_once(outbox, {p.name for p in paths})
    versions = [r["model_version"] for r in rows]
    switch = versions.index("v2")
    assert switch >= 300 and set(versions[:switch]) == {first} and set(versions[switch:]) == {"v2"}
    at = [datetime.fromisoformat(r["processed_at"]) for r in rows[switch - 1 : switch + 1]]
    print(f"reload gap: {(at[1] - at[0]).total_seconds() * 1000:.0f} ms")


def test_a_broken_model_published_leaves_the_old_one_serving(boxes, staging, mnist_test, tmp_path):
    """The pointer switched by hand to a damaged version (bypassing `worker publish`'s check):
    the daemon refuses it, counts the failed reload, serves on with the old version, and takes
    the next good version published."""
    from model_sets import copy_set

    from worker import defaults
    from worker.model import publish

    inbox, outbox = boxes
    model = _served_model(tmp_path)
    first = publish.current_version(model)
    watcher = Watcher(inbox, outbox, "--model", str(model), "--metrics", "127.0.0.1:0")
    watcher.wait_ready()
    broken = copy_set(defaults.MODEL, model.parent / "mnist" / "broken" / "mnist.keras", version="broken")
    broken.with_suffix(".tflite").write_bytes(b"\0" * 1000)
    broken.write_bytes(b"not a model")
    publish.replace_symlink(model.parent / "mnist" / "current", "broken")
    assert wait_for(lambda: "the old one keeps serving" in watcher.output(), 30), watcher.output()
    drop(stage(staging, mnist_test[0], 50), inbox)
    assert wait_for(lambda: nothing_left(inbox) and row_count(outbox) == 50, 60), watcher.output()
    assert set(_versions(outbox)) == {first}
    assert 'worker_reloads_total{result="failed"} 1.0' in _scrape(watcher)
    assert watcher.output().count("cannot be loaded") == 1, "a refused version is not retried each second"

    third = copy_set(defaults.MODEL, tmp_path / "v3" / "mnist.keras", version="v3")
    assert _publish(third, model).returncode == 0, "the CLI publishes too"
    assert wait_for(lambda: "version v3 loaded" in watcher.output(), 30), watcher.output()
    drop(stage(staging, mnist_test[0], 50, start=50), inbox)
    assert wait_for(lambda: nothing_left(inbox) and row_count(outbox) == 100, 60), watcher.output()
    assert watcher.stop() == 0, watcher.output()
    assert _versions(outbox)[50:] == ["v3"] * 50
