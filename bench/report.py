"""Benchmark ``worker report`` (text, --json, --html with a truth) on a generated outbox.

    .venv/bin/python bench/report.py                 # 1,000,000 rows (about a minute to make)
    .venv/bin/python bench/report.py --rows 100000

The outbox holds the given number of rows over 10,000 archived digit images (a name dropped
many times, as real inboxes see), random confidences, 1 % of rows in a wrong folder (so a truth
finds mistakes), and 1,000 error records. Each report runs in its own process: wall time and
peak RSS. The baseline is the naive way: every line parsed with json.loads into one list,
sorted by confidence. Targets: under 10 s and 200 MB each, the HTML file under 10 MB.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from worker.training import datasets  # noqa: E402

PYTHON = sys.executable
NAMES = 10_000
DIGITS = [str(d) for d in range(10)]

NAIVE_NAME = "naive (json.loads into a list, sorted)"
NAIVE = """
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
rows.sort(key=lambda r: r["confidence"])
labels = {}
for r in rows:
    labels[r["label"]] = labels.get(r["label"], 0) + 1
print(len(rows), labels, [r["file"] for r in rows[:20]])
"""


def make_outbox(outbox: Path, rows: int) -> None:
    data = datasets.load("mnist")
    processed = outbox / "processed"
    names = []
    for i in range(NAMES):
        label = str(int(data.test_labels[i]))
        name = f"{label}/{i:05d}.png"
        (processed / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(processed / name), data.test_images[i])
        names.append((name, label))
    rng = random.Random(0)
    with open(outbox / "predictions.jsonl", "w", encoding="utf-8") as fh:
        for n in range(rows):
            name, label = names[n % NAMES]
            if rng.random() < 0.01:
                label = rng.choice(DIGITS)
            fh.write(json.dumps(_row(n, name, label, rng)) + "\n")
    failed = outbox / "failed"
    failed.mkdir()
    for n in range(1000):
        record = {"file": f"bad-{n}.png", "kind": "not-an-image", "message": f"bad-{n}.png is not an image",
                  "time": "2026-11-20T10:00:00.000Z", "id": f"e{n:019d}", "model": "mnist",
                  "model_version": "v1"}
        (failed / f"bad-{n}.png.error.json").write_text(json.dumps(record))


def _row(n: int, name: str, label: str, rng: random.Random) -> dict:
    confidence = round(1 - rng.betavariate(1, 60), 6)
    rest = (1 - confidence) / 9
    probabilities = {d: (confidence if d == label else round(rest, 6)) for d in DIGITS}
    at = f"2026-11-{1 + n * 28 // 1_000_000:02d}T{n % 24:02d}:00:00.000Z"
    return {"file": name, "label": label, "confidence": confidence, "class_index": int(label),
            "sha256": "ab" * 32, "model": "mnist", "processed_at": at, "id": f"{n:020x}",
            "probabilities": probabilities, "model_version": "v1"}


def measure(args: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one command, in a process of its own."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
             "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    out = subprocess.run([PYTHON, "-c", probe, *args], check=True, capture_output=True, text=True).stdout
    seconds, megabytes = map(float, out.split())
    return seconds, megabytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        outbox = Path(tmp) / "outbox"
        started = time.perf_counter()
        make_outbox(outbox, args.rows)
        size = (outbox / "predictions.jsonl").stat().st_size / 2**20
        took = time.perf_counter() - started
        print(f"outbox: {args.rows:,} rows ({size:,.0f} MB of JSONL), made in {took:.0f} s")
        report = [PYTHON, "-m", "worker", "report", "--outbox", str(outbox)]
        html = Path(tmp) / "report.html"
        runs = {
            NAIVE_NAME: [PYTHON, "-c", NAIVE, str(outbox / "predictions.jsonl")],
            "worker report": report,
            "worker report --json": [*report, "--json"],
            "worker report --truth folders --html": [*report, "--truth", "folders", "--html", str(html)],
        }
        results = {name: measure(command) for name, command in runs.items()}
        naive_seconds = results[NAIVE_NAME][0]
        print(f"{'command':<42} {'seconds':>8} {'peak MB':>8} {'vs naive':>9}")
        for name, (seconds, megabytes) in results.items():
            print(f"{name:<42} {seconds:>8.1f} {megabytes:>8.0f} {naive_seconds / seconds:>8.1f}x")
        print(f"HTML report: {html.stat().st_size / 2**20:.1f} MB")
        slow = [name for name, (s, mb) in results.items()
                if name.startswith("worker") and (s > 10 or mb > 200)]
    if slow:
        print("over target (10 s, 200 MB):", ", ".join(slow))
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
