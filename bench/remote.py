"""``--broker`` on one machine: ``worker watch --once`` with 1, 2 and 3 classify worker
processes against local mode, on the same files, in one run; and the two numbers the scaling
model of docs/scaling.md needs: the watcher's own CPU time a file, and the bytes a file puts
through Redis.

    .venv/bin/python bench/remote.py                       # about 3 minutes
    .venv/bin/python bench/remote.py --pages 300 --files 10000

Everything shares this machine's cores (the watcher, Redis and the workers), so the table shows
what going through Redis costs and where one host tops out, not what more hosts add: for that,
divide the watcher's ceiling by one host's rate (printed at the end).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import ENV, REPO, Measure, linked, print_table, watch_args, write_digits, write_pages

sys.path.insert(0, str(REPO / "tests"))

from services import ClassifyWorker, RedisServer  # noqa: E402

from worker.training import datasets  # noqa: E402

WORKER_COUNTS = (1, 2, 3)


def timed_once(inbox: Path, outbox: Path, *extra: str) -> tuple[float, float]:
    """Seconds for ``worker watch --once``, and the watcher's own CPU seconds (user + system)."""
    started = time.perf_counter()
    proc = subprocess.Popen(watch_args(inbox, outbox, "--once", *extra), env=ENV)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "worker watch --once failed"
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def started_workers(url: str, count: int, logs: Path) -> list[ClassifyWorker]:
    workers = [ClassifyWorker(url, logs / f"worker-{count}-{i}.log").start() for i in range(count)]
    for worker in workers:
        worker.wait_ready()
    return workers


def warm_up(warm: Path, staging: Path, url: str, count: int) -> None:
    """A task for each worker first, so each has loaded its model before the clock starts."""
    inbox = linked(sorted(staging.iterdir())[: 4 * count], warm / "inbox")
    timed_once(inbox, warm / "outbox", "--broker", url, "--batch-size", "1")


def one_set(work: Path, name: str, staging: Path, unit: str, url: str) -> tuple[list[Measure], float]:
    """Local mode, then 1, 2, 3 workers; returns the measures and the watcher's CPU a file
    (less what it spends starting and stopping, measured on an empty inbox)."""
    count = len(os.listdir(staging))
    empty = work / f"{name}-empty"
    (empty / "inbox").mkdir(parents=True)
    _, start_cpu = timed_once(empty / "inbox", empty / "outbox", "--broker", url)
    seconds, _ = timed_once(linked(staging.iterdir(), work / f"{name}-local" / "inbox"),
                            work / f"{name}-local" / "outbox")
    local = count / seconds
    measures, cpu_per_file = [], []
    for workers_count in WORKER_COUNTS:
        workers = started_workers(url, workers_count, work)
        try:
            warm_up(work / f"{name}-warm-{workers_count}", staging, url, workers_count)
            folder = work / f"{name}-{workers_count}"
            inbox = linked(staging.iterdir(), folder / "inbox")
            seconds, cpu = timed_once(inbox, folder / "outbox", "--broker", url)
        finally:
            for worker in workers:
                worker.stop()
        measures.append(Measure(f"{name}, --broker, {workers_count} worker(s) vs local", count / seconds,
                                local, unit))
        cpu_per_file.append((cpu - start_cpu) / count)
    return measures, min(cpu_per_file)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=200, help="1000x1400 JPEG pages")
    parser.add_argument("--files", type=int, default=5000, help="28x28 PNG files")
    args = parser.parse_args()
    images = datasets.load("mnist").test_images
    print(f"{time.strftime('%Y-%m-%d')} on {platform.node()}: {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; watcher, Redis and workers on this one machine")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        redis = RedisServer(work).start()
        try:
            write_pages(work / "pages", images, args.pages)
            write_digits(work / "digits", images, args.files)
            page_measures, page_cpu = one_set(work, "pages", work / "pages", "pages/s", redis.url)
            file_measures, file_cpu = one_set(work, "small files", work / "digits", "files/s", redis.url)
        finally:
            redis.kill()
        page_bytes = sum(p.stat().st_size for p in (work / "pages").iterdir()) / args.pages
        file_bytes = sum(p.stat().st_size for p in (work / "digits").iterdir()) / args.files
    print_table(page_measures + file_measures)
    print("\nthe scaling model's inputs (docs/scaling.md):")
    for name, cpu, size, host in (("page", page_cpu, page_bytes, page_measures[0].baseline),
                                  ("small file", file_cpu, file_bytes, file_measures[0].baseline)):
        ceiling = 1 / cpu
        print(f"  a {name}: watcher CPU {cpu * 1000:.2f} ms (one watcher core feeds <= {ceiling:,.0f}/s), "
              f"{size / 1024:.1f} KiB through Redis; one 2-core host classifies {host:,.1f}/s locally, "
              f"so one watcher feeds ~{ceiling / host:.0f} such hosts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
