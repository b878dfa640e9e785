"""Benchmark the real ``worker watch`` end to end against the naive way, in one run.

    .venv/bin/python bench/run.py            # the full table (about 6-9 minutes)
    .venv/bin/python bench/run.py --quick    # CI smoke: 1,000 files; exits 1 if not faster

Every measure runs the daemon as a user would (a subprocess, real files, the shipped model) and
prints ours, the baseline, and the ratio. Timings on shared 2-core machines are noisy: read the
ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from factories import scan_page, wait_for  # noqa: E402

from worker import defaults  # noqa: E402
from worker.training import datasets  # noqa: E402

PYTHON = sys.executable
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
# The code when the second speed issue (#14) was filed: digits-v1, whole-page decoding, its own
# model. Checked out in a temporary folder and run beside ours on the same files.
PREVIOUS_RELEASE = "3662d38"


@dataclass
class Measure:
    name: str
    ours: float
    baseline: float
    unit: str
    higher_is_better: bool = True

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.ours / self.baseline if self.baseline else float("inf")
        return self.baseline / self.ours if self.ours else float("inf")


# --- helpers --------------------------------------------------------------------------------


def write_digits(folder: Path, images: np.ndarray, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.png"
        path.write_bytes(cv2.imencode(".png", images[i % len(images)])[1].tobytes())
        paths.append(path)
    return paths


def write_pages(folder: Path, images: np.ndarray, count: int, suffix: str = ".jpg",
                size: tuple[int, int] = (1000, 1400)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        page = scan_page(images[i], rng, colour=i % 2 == 1)
        page = cv2.resize(page, size)  # page-sized, as the issue specifies
        params = [cv2.IMWRITE_JPEG_QUALITY, 85] if suffix == ".jpg" else []
        cv2.imwrite(str(folder / f"{i:05d}{suffix}"), page, params)


def rows(outbox: Path) -> int:
    try:
        with open(outbox / "predictions.jsonl", "rb") as fh:
            return fh.read().count(b"\n")
    except FileNotFoundError:
        return 0


def watch_args(inbox: Path, outbox: Path, *extra: str, quiet: bool = True) -> list[str]:
    """``worker watch`` as a user runs it; quiet (-q) unless we need its "ready:" INFO line."""
    return [PYTHON, "-m", "worker", *(["-q"] if quiet else []), "watch", "--inbox", str(inbox),
            "--outbox", str(outbox), "--settle", "0.2", *extra]


@dataclass
class Run:
    """One ``worker watch --once``: wall seconds, peak RSS, and the CPU seconds it used (user and
    system, all threads), which other jobs on a shared machine change far less than the wall."""

    seconds: float
    peak_mb: int
    cpu_seconds: float


def run_once(inbox: Path, outbox: Path, *extra: str, code: Path | None = None) -> Run:
    """``worker watch --once`` on ``inbox``, timed; ``code``: another checkout's worker (with its
    own shipped model) instead of ours."""
    env = ENV
    if code is not None:
        env = {**ENV, "PYTHONPATH": str(code), "WORKER_MODEL": str(code / "models" / "mnist.keras")}
    started = time.perf_counter()
    proc = subprocess.Popen(watch_args(inbox, outbox, "--once", *extra), env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, "worker watch --once failed"
    return Run(time.perf_counter() - started, usage.ru_maxrss // 1024, usage.ru_utime + usage.ru_stime)


class Daemon:
    def __init__(self, inbox: Path, outbox: Path) -> None:
        self.log = outbox.parent / "daemon.log"
        outbox.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()
        args = watch_args(inbox, outbox, quiet=False)
        self.proc = subprocess.Popen(args, env=ENV, stderr=open(self.log, "w"))
        assert wait_for(lambda: "ready:" in self.log.read_text(), 60), self.log.read_text()
        self.ready_seconds = time.perf_counter() - self.started

    def rss_mb(self, field: str = "VmHWM") -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) // 1024
        return 0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def naive_files_per_second(model: Path, files: list[Path]) -> float:
    out = subprocess.run([PYTHON, str(REPO / "bench" / "naive.py"), str(model), *map(str, files)],
                         env=ENV, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def tensorflow_start(model: Path) -> tuple[float, int]:
    """Seconds and peak MB to import TensorFlow and load the Keras model (the seeds' start)."""
    code = ("import keras,numpy as np;"
            f"m=keras.saving.load_model('{model}',compile=False);m.predict(np.zeros((1,28,28,1)),verbose=0)")
    return _time_python(code)


def litert_start(model: Path) -> tuple[float, int]:
    code = f"from worker.model.classifier import Classifier;Classifier('{model}')"
    return _time_python(code)


def model_only_files_per_second(model: Path, count: int, threads: int = 2) -> float:
    """The ceiling for the daemon: the served model alone on preprocessed images, in batches of
    256 (no files, no preprocessing, no writes), on ``threads`` LiteRT threads; the best of
    three passes after a warm-up batch (a shared VM's pauses only ever slow a pass down)."""
    code = (
        "import time,numpy as np;from worker.model.classifier import Classifier;"
        f"c=Classifier('{model}',threads={threads});"
        f"x=np.random.default_rng(0).random(({count},28,28,1),np.float32);c.predict_proba(x[:256])\n"
        "def rate():\n t=time.perf_counter();[c.predict_proba(x[i:i+256]) for i in range(0,len(x),256)]\n"
        " return len(x)/(time.perf_counter()-t)\n"
        "print(max(rate() for _ in range(3)))"
    )
    out = subprocess.run([PYTHON, "-c", code], env=ENV, cwd=REPO, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _time_python(code: str) -> tuple[float, int]:
    started = time.perf_counter()
    proc = subprocess.Popen([PYTHON, "-c", code], env=ENV, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, code
    return time.perf_counter() - started, usage.ru_maxrss // 1024


# --- the measures ---------------------------------------------------------------------------


def bulk_and_burst(work: Path, images, count: int, naive_count: int, model: Path,
                   against_previous: str | None = None) -> list[Measure]:
    staging = work / "digits"
    files = write_digits(staging, images, count)
    naive = naive_files_per_second(model, files[:naive_count])

    bulk, peak_bulk = _bulk(work / "bulk", files)
    previous = []
    if against_previous:
        with previous_release(work, against_previous) as code:
            previous_bulk, _ = _bulk(work / "bulk-previous", files, code)
        previous = [Measure(f"bulk backlog ({count} x 28x28 PNG) vs {against_previous}", bulk, previous_bulk,
                            "files/s")]

    inbox, outbox = work / "burst-in", work / "burst-out"
    inbox.mkdir()
    daemon = Daemon(inbox, outbox)
    idle_rss = daemon.rss_mb()
    started = time.perf_counter()
    for path in files:
        os.rename(path, inbox / path.name)
    assert wait_for(lambda: rows(outbox) >= count, 600, interval=0.005)
    burst = count / (time.perf_counter() - started)
    daemon.stop()
    tf_seconds, tf_rss = tensorflow_start(model)
    ceiling = model_only_files_per_second(model, count)
    return [
        Measure(f"bulk backlog ({count} x 28x28 PNG, --once)", bulk, naive, "files/s"),
        *previous,
        Measure(f"live burst ({count} renamed in)", burst, naive, "files/s"),
        Measure("ceiling: the model alone, batches of 256", ceiling, naive, "files/s"),
        Measure("start -> ready", daemon.ready_seconds, tf_seconds, "s", higher_is_better=False),
        Measure("peak RSS idle", idle_rss, tf_rss, "MB", higher_is_better=False),
        Measure("peak RSS during bulk run", peak_bulk, tf_rss, "MB", higher_is_better=False),
    ]


@contextmanager
def previous_release(work: Path, revision: str) -> Iterator[Path]:
    """``revision`` checked out (a git worktree) in ``work`` while the block runs."""
    folder = work / "previous-release"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(folder), revision],
                   check=True, capture_output=True)
    # What a checkout's first command does: its models' `current` points at what it ships (a
    # revision from before `shipped` tracks its versions itself).
    for shipped in (folder / "models").glob("*/shipped"):
        if not shipped.with_name("current").exists():
            shipped.with_name("current").symlink_to(os.readlink(shipped))
    try:
        yield folder
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(folder)],
                       capture_output=True, check=False)


def model_with_profile(model: Path, profile: str, folder: Path) -> Path:
    """A copy of ``model`` in ``folder`` whose card names preprocessing ``profile``: the same
    weights, served through that profile, for what a model trained on it would cost a page."""
    from worker.preprocess import PROFILES

    folder.mkdir(parents=True)
    source = model.resolve()
    for suffix in (".keras", ".tflite"):
        shutil.copy(source.with_suffix(suffix), folder / source.with_suffix(suffix).name)
    card = json.loads(source.with_suffix(".json").read_text())
    card["preprocessing"] = PROFILES[profile].to_dict()
    (folder / source.with_suffix(".json").name).write_text(json.dumps(card))
    return folder / source.name


def linked(files, inbox: Path) -> Path:
    """``inbox``, made, holding hard links to ``files`` (each run gets the same files, fresh)."""
    inbox.mkdir(parents=True)
    for path in files:
        os.link(path, inbox / path.name)
    return inbox


def _bulk(folder: Path, files: list[Path], code: Path | None = None) -> tuple[float, int]:
    """Files per second of ``worker watch --once`` on links to ``files``, and its peak RSS."""
    run = run_once(linked(files, folder / "inbox"), folder / "outbox", code=code)
    return len(files) / run.seconds, run.peak_mb


def model_alone(model: Path, student: Path, count: int) -> list[Measure]:
    """Images a second through each model alone (batches of 256, one process each): on the one
    LiteRT thread the daemon and each classify worker give the model, and on two."""
    return [Measure(f"the model alone, {threads} thread(s): student vs --model",
                    model_only_files_per_second(student, count, threads),
                    model_only_files_per_second(model, count, threads), "images/s")
            for threads in (defaults.WATCH_MODEL_THREADS, 2)]


def pages(work: Path, images, count: int, revision: str, rounds: int = 3) -> list[Measure]:
    """Pages through ``worker watch --once``: ours against ``revision`` (its code and its own
    model), same files, each with both decode threads. The two take turns ``rounds`` times,
    the first to go alternating (a shared machine's load drifts); the rates are the medians,
    and beside them the CPU each used a page, which the load changes far less."""
    measures = []
    with previous_release(work, revision) as previous:
        for suffix in (".jpg", ".png"):
            staging = work / f"pages{suffix}"
            write_pages(staging, images, count, suffix)
            runs: dict[str, list[Run]] = {"ours": [], "previous": []}
            for turn in range(rounds):
                sides = [("ours", None), ("previous", previous)]
                for name, code in sides if turn % 2 == 0 else sides[::-1]:
                    runs[name].append(_pages_once(staging, work / f"pages-{name}{suffix}-{turn}", code))
            rates = {name: [count / r.seconds for r in done] for name, done in runs.items()}
            cpu = {name: min(1000 * r.cpu_seconds / count for r in done) for name, done in runs.items()}
            print(f"{suffix[1:]} pages/s each turn: ours {_listed(rates['ours'])}, {revision} "
                  f"{_listed(rates['previous'])}", file=sys.stderr)
            kind = "JPEG" if suffix == ".jpg" else "PNG"
            measures += [
                Measure(f"scanned pages ({count} x 1000x1400 {kind}) vs {revision}",
                        statistics.median(rates["ours"]), statistics.median(rates["previous"]), "pages/s"),
                Measure(f"  CPU a page, the least of {rounds} runs", cpu["ours"], cpu["previous"], "ms",
                        higher_is_better=False),
            ]
    return measures + [big_pages(work, images, 40)]


def _pages_once(staging: Path, folder: Path, code: Path | None) -> Run:
    """``worker watch --once`` on links to the pages in ``staging``; each must give its row (a
    side that refused pages would look fast)."""
    count = len(list(staging.iterdir()))
    run = run_once(linked(staging.iterdir(), folder / "in"), folder / "out", code=code)
    assert rows(folder / "out") >= 0.99 * count, f"{code or 'ours'}: {rows(folder / 'out')} rows of {count}"
    shutil.rmtree(folder)
    return run


def _listed(values: list[float]) -> str:
    return " ".join(f"{v:.1f}" for v in values)


def big_pages(work: Path, images, count: int) -> Measure:
    """300 dpi A4 JPEG scans (2480x3508), decoded and normalised in this process: ours (decoded
    already scaled in the DCT) against decoding the whole page first, the way it was until
    2026-11-30. One thread each, the best of three passes."""
    import simplejpeg

    from worker.preprocess import decode, normalize
    from worker.preprocess.reading import check_within

    folder = work / "a4"
    write_pages(folder, images, count, ".jpg", (2480, 3508))
    pages_ = [p.read_bytes() for p in sorted(folder.iterdir())]

    def ours(data: bytes):
        return normalize(decode(data, "a4.jpg", check_within(data, "a4.jpg")))

    def whole(data: bytes):
        return normalize(simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True)[:, :, 0])

    speed = {}
    for name, way in (("ours", ours), ("whole", whole)):
        best = min(_seconds(lambda w=way: [w(d) for d in pages_]) for _ in range(3))
        speed[name] = count / best
    return Measure(f"A4 300 dpi JPEG pages ({count}), decode+normalise", speed["ours"], speed["whole"],
                   "pages/s")


def _seconds(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def latency(work: Path, images, count: int) -> list[Measure]:
    inbox, outbox = work / "lat-in", work / "lat-out"
    inbox.mkdir()
    daemon = Daemon(inbox, outbox)
    data = cv2.imencode(".png", images[0])[1].tobytes()
    delays = []
    for i in range(count):
        started = time.perf_counter()
        with open(inbox / f"{i:05d}.png", "wb") as fh:
            fh.write(data)
        closed = time.perf_counter()
        while rows(outbox) <= i:
            time.sleep(0.0002)
        delays.append((time.perf_counter() - closed) * 1000)
        time.sleep(max(0.0, 0.1 - (time.perf_counter() - started)))
    daemon.stop()
    delays.sort()
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    return [
        Measure("one file close -> row, p50", statistics.median(delays), 10.0, "ms", False),
        Measure("one file close -> row, p99", p99, 50.0, "ms", False),
    ]


def training(work: Path) -> list[Measure]:
    """Seconds per full epoch (55,000 images) for each arch: the second of two epochs on 5,500
    images, scaled (the first epoch also pays for tracing and compiling the graph)."""
    from worker.training.archs import ARCHS

    found = []
    for arch in ARCHS:
        code = (
            "from worker.training.train import train;"
            f"r=train(arch='{arch}',epochs=2,limit=6500,validation=1000,"
            f"output='{work}/t-{arch}.keras',verbose=0);print(r.card['epoch_seconds'][-1])"
        )
        out = subprocess.run([PYTHON, "-c", code], env=ENV, cwd=REPO, capture_output=True,
                             text=True, check=True)
        seconds = float(out.stdout.strip().splitlines()[-1]) * 10
        found.append(Measure(f"training {arch}, s/epoch (55k images)", seconds, 0, "s"))
    return found


def print_table(measures: list[Measure]) -> None:
    print(f"\n{'measure':<44}{'ours':>10}{'baseline':>11}{'ratio':>9}  unit")
    for m in measures:
        ratio = f"{m.ratio:8.1f}x" if m.baseline else "        -"
        print(f"{m.name:<44}{m.ours:>10.1f}{m.baseline:>11.1f}{ratio}  {m.unit}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke: 1,000 files, no pages/training")
    parser.add_argument("--model", type=Path, default=defaults.MODEL)
    parser.add_argument("--only", choices=["bulk", "pages", "latency", "training", "none"],
                        help="run one group of measures (none: only --student's)")
    parser.add_argument("--student", type=Path, help="also time this (distilled) model alone against --model")
    parser.add_argument("--previous", default=PREVIOUS_RELEASE,
                        help="the git revision bulk and pages are compared with, in the same run")
    parser.add_argument("--profile", help="serve --model through this preprocessing profile (a copy of it "
                        "whose card names it), e.g. digits-v5 before a model trained on it ships")
    parser.add_argument("--rounds", type=int, default=3,
                        help="pages: how many times ours and --previous take turns on the same files")
    args = parser.parse_args()
    images = datasets.load("mnist").test_images
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.profile:
            args.model = model_with_profile(args.model, args.profile, work / "model")
        ENV["WORKER_MODEL"] = str(args.model.resolve())  # every daemon started here serves this model
        print(f"{time.strftime('%Y-%m-%d')} on {platform.node()}: {os.cpu_count()} cores, "
              f"Python {platform.python_version()}, model {args.model.name} "
              f"({json.loads(args.model.with_suffix('.json').read_text())['preprocessing']['name']})")
        groups = {
            "bulk": lambda: bulk_and_burst(work, images, 10000, 1000, args.model,
                                           against_previous=args.previous),
            "pages": lambda: pages(work, images, 1000, args.previous, args.rounds),
            "latency": lambda: latency(work, images, 200),
            "training": lambda: training(work),
            "none": list,
        }
        if args.quick:
            measures = bulk_and_burst(work, images, 1000, 100, args.model)
        else:
            chosen = [args.only] if args.only else list(groups)
            measures = [m for name in chosen for m in groups[name]()]
            if args.student:
                measures += model_alone(args.model, args.student, 10000)
    print_table(measures)
    if args.quick and measures[0].ratio <= 1:
        print("FAIL: the daemon is not faster than the naive per-file path", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
