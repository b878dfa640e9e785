"""``--broker`` end to end: a real Redis (Debian's redis-server, on a free loopback port), real
``worker classify-worker`` processes (Celery, the shipped model), a real ``worker watch``.
Whatever is killed or restarted, every file ends as exactly one row or one error record."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import errors
from factories import wait_for
from services import REDIS_SERVER, ClassifyWorker, free_port
from watching import (  # noqa: F401 - no_watcher_left is a fixture
    Watcher,
    assert_exactly_once,
    drop,
    no_watcher_left,
    nothing_left,
    row_count,
    stage,
)

from worker import defaults
from worker.model.artifact import card_path
from worker.remote.liveness_messages import parse_taken

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(REDIS_SERVER), reason="needs Debian's redis-server"),
]

# The poison: any file holding these bytes kills the worker process that decodes it.
POISON = b"POISON-KILLS-THE-DECODER"
POISONED = f"""
import os, signal
import worker.remote.classify_worker as cw
real = cw.load_bytes
def load_bytes(data, *args, **kwargs):
    if {POISON!r} in data:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(data, *args, **kwargs)
cw.load_bytes = load_bytes
"""


@pytest.fixture
def workers(redis, tmp_path):
    """Start classify workers with ``workers(n)``; all are killed at the end."""
    started: list[ClassifyWorker] = []

    def start(count: int = 2, **options) -> list[ClassifyWorker]:
        new = [ClassifyWorker(redis.url, tmp_path / f"worker-{len(started) + i}.log", **options).start()
               for i in range(count)]
        started.extend(new)
        for worker in new:
            worker.wait_ready()
        return new

    yield start
    for worker in started:
        worker.kill()


def _watcher(boxes, redis, *extra: str) -> Watcher:
    """``worker watch --broker``; a batch that Redis' transport lost is sent again after 15 s."""
    inbox, outbox = boxes
    watcher = Watcher(inbox, outbox, "--broker", redis.url, "--batch-size", "32", "--resend-after", "15",
                      *extra)
    watcher.wait_ready()
    return watcher


def _burst(boxes, staging, images, redis, count: int, *extra: str) -> tuple[Watcher, list]:
    """A watcher started, then ``count`` files dropped into its inbox."""
    watcher = _watcher(boxes, redis, *extra)
    paths = stage(staging, images, count)
    drop(paths, boxes[0])
    return watcher, paths


def _each_once(boxes, watcher: Watcher, paths: list) -> list[dict]:
    """Waits for every file to be finished, stops the watcher; each has exactly one record."""
    assert wait_for(lambda: _all_done(boxes, len(paths)), 180), watcher.output()
    assert watcher.stop() == 0, watcher.output()
    return assert_exactly_once(boxes[1], {p.name for p in paths})


def _all_done(boxes, count: int) -> bool:
    inbox, outbox = boxes
    return row_count(outbox) + len(errors(outbox)) >= count and nothing_left(inbox)


def test_2000_files_through_two_workers_each_exactly_once(boxes, staging, mnist_test, redis, workers):
    images, labels = mnist_test
    workers(2)
    watcher, paths = _burst(boxes, staging, images, redis, 2000)
    rows = _each_once(boxes, watcher, paths)
    assert sum(int(r["label"]) == labels[int(r["file"][:5])] for r in rows) / len(rows) >= 0.99
    shipped = json.loads(card_path(defaults.MODEL).read_text())["version"]
    assert {r["model_version"] for r in rows} == {shipped}, "the workers ran the version the watcher named"


def test_workers_killed_mid_burst_three_times_lose_and_repeat_nothing(boxes, staging, mnist_test, redis,
                                                                     workers):
    outbox = boxes[1]
    images, _ = mnist_test
    pool = workers(2)
    watcher, paths = _burst(boxes, staging, images, redis, 1500)
    rng = random.Random(3)
    for _ in range(3):
        target = row_count(outbox) + rng.randint(50, 250)
        assert wait_for(lambda t=target: row_count(outbox) >= t, 120), watcher.output()
        victim = _holding_a_batch(pool, redis.url)
        victim.kill()  # mid-batch: its task is taken again (its heartbeat gone, or its visibility timeout)
        victim.start()  # as systemd restarts it
    _each_once(boxes, watcher, paths)
    retaken = sum(w.output().count("was in hand when a worker died") for w in pool)
    assert retaken >= 1, "a batch a killed worker held was taken again"


def test_workers_killed_mid_stream_every_row_comes_within_30_s_of_the_last_file(boxes, staging, mnist_test,
                                                                               redis, workers):
    """Issue 29: three kill -9s of a whole worker (its process group) while 2,000 files stream
    in, with the transport's own recovery out of reach (visibility timeout and --resend-after
    far away): the heartbeats and taken records bring every batch back."""
    inbox, outbox = boxes
    images, _ = mnist_test
    pool = workers(2, visibility_timeout=300)
    port = free_port()
    watcher = Watcher(inbox, outbox, "--broker", redis.url, "--batch-size", "32", "--metrics",
                      f"127.0.0.1:{port}")
    watcher.wait_ready()
    paths = stage(staging, images, 2000)
    for i in range(20):  # 100 files every 0.2 s, a worker killed after the 5th, 10th and 15th hundred
        drop(paths[i * 100:(i + 1) * 100], inbox)
        if i in (4, 9, 14):
            victim = pool[i % 2]
            victim.kill()
            victim.start()  # as systemd restarts it
        time.sleep(0.2)
    last = time.monotonic()
    assert wait_for(lambda: _all_done(boxes, len(paths)), 60), watcher.output()
    took = time.monotonic() - last
    resent = _metrics(port, "worker_remote_resent_total")
    print(f"every row {took:.1f} s after the last file; resent {resent}")
    assert took <= 30, f"{took:.1f} s; resent {resent}"
    assert watcher.stop() == 0, watcher.output()
    assert_exactly_once(outbox, {p.name for p in paths})
    assert not resent.get('reason="timeout"'), resent
    assert resent.get('reason="worker-gone"', 0) + resent.get('reason="untaken"', 0) >= 1, resent


def _stream_signalling(boxes, staging, mnist_test, redis, victim, signum: int):
    """A watcher with --metrics on a free port, and 1,000 files dropped a hundred at a time,
    ``victim`` (a classify worker's process group) sent ``signum`` half-way through; returns
    (watcher, metrics port, the files' paths) once the last file is in."""
    inbox, outbox = boxes
    images, _ = mnist_test
    port = free_port()
    watcher = Watcher(inbox, outbox, "--broker", redis.url, "--batch-size", "32", "--metrics",
                      f"127.0.0.1:{port}")
    watcher.wait_ready()
    paths = stage(staging, images, 1000)
    for i in range(10):
        drop(paths[i * 100:(i + 1) * 100], inbox)
        if i == 4:
            os.killpg(victim.proc.pid, signum)
        time.sleep(0.2)
    return watcher, port, paths


def test_a_worker_frozen_for_60_s_its_batches_done_elsewhere_its_late_answers_dropped(
        boxes, staging, mnist_test, redis, workers):
    """A host frozen (SIGSTOP) holding a batch: its heartbeat expires, the batch is done by the
    other worker; thawed (SIGCONT) a minute later, it answers, and that answer is dropped."""
    outbox = boxes[1]
    frozen, _ = workers(2, visibility_timeout=300)
    watcher, port, paths = _stream_signalling(boxes, staging, mnist_test, redis, frozen, signal.SIGSTOP)
    last = time.monotonic()
    try:
        assert wait_for(lambda: _all_done(boxes, len(paths)), 30), watcher.output()
        took = time.monotonic() - last
        rows = row_count(outbox)
        time.sleep(max(0.0, 60 - (time.monotonic() - last)))
    finally:
        os.killpg(frozen.proc.pid, signal.SIGCONT)
    assert wait_for(lambda: _metrics(port, "worker_broker_rejected_total").get('reason="duplicate"'), 30), \
        "the thawed worker's late answer is dropped"
    resent = _metrics(port, "worker_remote_resent_total")
    print(f"every row {took:.1f} s after the last file, a worker frozen; resent {resent}")
    # Frozen in a batch (worker-gone), or, as is likelier with batches that take milliseconds,
    # just as Redis handed it one (untaken: the task waits unread in its socket).
    assert resent.get('reason="worker-gone"', 0) + resent.get('reason="untaken"', 0) >= 1, resent
    assert not resent.get('reason="timeout"'), resent
    assert row_count(outbox) == rows, "nothing written after the thaw"
    assert watcher.stop() == 0, watcher.output()
    assert_exactly_once(outbox, {p.name for p in paths})


def test_a_worker_stopped_with_sigterm_hands_back_what_it_has_not_started(boxes, staging, mnist_test, redis,
                                                                          workers):
    """SIGTERM to the whole worker (as systemd stops a unit): the batch it is running is
    answered, what it took and had not started goes back on the queue, and its heartbeat goes
    at once: the other worker does the rest without a wait for a heartbeat to expire."""
    outbox = boxes[1]
    leaving, _ = workers(2, visibility_timeout=300)
    watcher, port, paths = _stream_signalling(boxes, staging, mnist_test, redis, leaving, signal.SIGTERM)
    last = time.monotonic()
    assert wait_for(lambda: _all_done(boxes, len(paths)), 30), watcher.output()
    took = time.monotonic() - last
    resent = _metrics(port, "worker_remote_resent_total")
    print(f"every row {took:.1f} s after the last file, a worker stopped; resent {resent}")
    assert leaving.proc.wait(30) == 0, leaving.output()
    assert watcher.stop() == 0, watcher.output()
    assert_exactly_once(outbox, {p.name for p in paths})
    assert not resent.get('reason="timeout"') and not resent.get('reason="untaken"'), resent


def test_the_watcher_killed_replays_by_claim_id(boxes, staging, mnist_test, redis, workers):
    inbox, outbox = boxes
    images, _ = mnist_test
    workers(2)
    watcher, paths = _burst(boxes, staging, images, redis, 1000)
    assert wait_for(lambda: row_count(outbox) >= 200 and _claimed(inbox), 120), watcher.output()
    assert watcher.stop(signal.SIGKILL) == -signal.SIGKILL  # with batches out with the workers
    again = subprocess.run(
        [sys.executable, "-m", "worker", "watch", "--once", "--inbox", str(inbox), "--outbox", str(outbox),
         "--broker", redis.url, "--settle", "0.2"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "left unfinished will be finished" in again.stderr
    assert_exactly_once(outbox, {p.name for p in paths})
    assert nothing_left(inbox)


@pytest.mark.parametrize("away", [0, 5], ids=["restarted", "away-5-s"])
def test_redis_restarted_mid_run_loses_nothing(boxes, staging, mnist_test, redis, workers, away):
    """A Redis without persistence forgets its queue and its answers: the watcher sends again
    what was out, and the claim ids keep each row single. While it is away, batches wait."""
    outbox = boxes[1]
    images, _ = mnist_test
    workers(2)
    watcher, paths = _burst(boxes, staging, images, redis, 1500)
    assert wait_for(lambda: row_count(outbox) >= 300, 120), watcher.output()
    redis.kill()
    time.sleep(away)
    redis.start()
    _each_once(boxes, watcher, paths)
    assert "the broker restarted" in watcher.output()
    if away:
        assert "unreachable" in watcher.output() and "reachable again" in watcher.output()


def test_a_poison_file_is_set_aside_and_its_batch_goes_on(boxes, staging, mnist_test, redis, workers):
    inbox, outbox = boxes
    images, _ = mnist_test
    pool = workers(1, prelude=POISONED)
    paths = stage(staging, images, 20)
    poison = paths[7].with_name("poison.png")
    poison.write_bytes(paths[7].read_bytes() + POISON)
    watcher = _watcher(boxes, redis)
    drop([*paths, poison], inbox)
    assert wait_for(lambda: _all_done(boxes, 21), 120), watcher.output() + pool[0].output()
    assert watcher.stop() == 0, watcher.output()
    assert_exactly_once(outbox, {p.name for p in paths} | {"poison.png"})
    [error] = errors(outbox)
    assert (error["file"], error["kind"]) == ("poison.png", "worker-crashed")
    assert pool[0].output().count("exited with 'signal 9 (SIGKILL)'") == 3  # one whole try, two alone


def test_broker_down_at_start_is_waited_out(boxes, staging, mnist_test, redis, workers, tmp_path):
    """Neither the watcher nor a worker crash-loops on a Redis that is not there yet."""
    inbox, outbox = boxes
    images, _ = mnist_test
    redis.kill()
    worker = ClassifyWorker(redis.url, tmp_path / "early-worker.log").start()
    watcher = Watcher(inbox, outbox, "--broker", redis.url, "--batch-size", "32")
    try:
        watcher.wait_ready()
        paths = stage(staging, images, 100)
        drop(paths, inbox)
        assert wait_for(lambda: "unreachable" in watcher.output(), 30), watcher.output()
        assert watcher.proc.poll() is None and worker.proc.poll() is None
        redis.start()
        assert wait_for(lambda: _all_done(boxes, 100), 120), watcher.output() + worker.output()
        assert watcher.stop() == 0, watcher.output()
    finally:
        worker.kill()
    assert_exactly_once(outbox, {p.name for p in paths})


def test_no_worker_the_backlog_waits_and_status_and_metrics_say_so(boxes, staging, mnist_test, redis,
                                                                  workers):
    inbox, outbox = boxes
    images, _ = mnist_test
    port = free_port()
    watcher, paths = _burst(boxes, staging, images, redis, 200, "--metrics", f"127.0.0.1:{port}")
    assert wait_for(lambda: _status(boxes, redis.url)["json"]["broker"]["queued"] > 0, 30)
    report = _status(boxes, redis.url)
    assert report["json"]["broker"]["workers"] == [] and "no worker" in report["text"]
    assert wait_for(lambda: _metric(port, "worker_remote_oldest_seconds") >= 1, 30)
    assert 1 <= _metric(port, "worker_remote_batches") <= defaults.IN_FLIGHT  # the rest wait in the inbox
    assert _metric(port, "worker_remote_files") > 0
    assert _metric(port, "worker_broker_up") == 1
    assert row_count(outbox) == 0
    workers(1)
    _each_once(boxes, watcher, paths)


def test_a_worker_without_the_version_refuses_rather_than_answer_with_another(boxes, staging, mnist_test,
                                                                           redis, workers, tmp_path):
    outbox = boxes[1]
    images, _ = mnist_test
    (tmp_path / "no-models").mkdir()
    workers(1, models=tmp_path / "no-models")
    watcher, paths = _burst(boxes, staging, images, redis, 10)
    assert wait_for(lambda: "was refused" in watcher.output(), 30), watcher.output()
    assert row_count(outbox) == 0 and not errors(outbox), "refused is not an answer"
    workers(1)  # one with the models: the batch goes there at its next sending
    _each_once(boxes, watcher, paths)


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(f"{name} "))


def _holding_a_batch(pool: list[ClassifyWorker], url: str, timeout: float = 30) -> ClassifyWorker:
    """The first worker seen with a batch in hand (a taken record names one of its pool
    processes), so that a kill is mid-batch, not between two."""
    import redis as redis_py

    client = redis_py.Redis.from_url(url)
    mains = {w.proc.pid: w for w in pool}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in client.scan_iter(match="worker:taken:*"):
            raw = client.get(name)
            if raw is None:
                continue  # answered meanwhile
            parent = _parent(parse_taken(raw, None, name.decode().rpartition(":")[2]).pid)
            if parent in mains:
                return mains[parent]
        time.sleep(0.005)
    raise AssertionError("no worker was seen holding a batch")


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _metrics(port: int, name: str) -> dict[str, float]:
    """A labelled metric's samples by their labels (``reason="untaken"``: 1.0)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {line[len(name) + 1:line.index("}")]: float(line.split()[-1]) for line in text.splitlines()
            if line.startswith(name + "{")}


def _claimed(inbox) -> int:
    return sum(1 for _, _, names in os.walk(inbox / ".work") for name in names if not name.endswith(".lock"))


def _status(boxes, url: str) -> dict:
    inbox, outbox = boxes
    base = [sys.executable, "-m", "worker", "status", "--inbox", str(inbox), "--outbox", str(outbox),
            "--broker", url]
    text = subprocess.run(base, capture_output=True, text=True, timeout=60).stdout
    as_json = json.loads(subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=60).stdout)
    return {"text": text, "json": as_json}


def test_without_a_broker_celery_is_not_imported(boxes):
    inbox, outbox = boxes
    args = ["watch", "--once", "--inbox", str(inbox), "--outbox", str(outbox)]
    code = ("import sys\nfrom worker.cli import app\n"
            f"try:\n    app(args={args!r})\n"
            "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "print('celery' in sys.modules, 'redis' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "False False", done.stderr
