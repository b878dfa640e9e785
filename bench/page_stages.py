"""Where a scanned page's CPU time goes: read, header, decode, normalise, in one thread, ours
(each profile given) against another revision's code on the same files, in the same run.

    .venv/bin/python bench/page_stages.py [--count 200] [--previous e7e3a9f]
        [--profiles digits-v4,digits-v5] [--profile-calls]

The pages are bench/run.py's (1000x1400, JPEG quality 85 and PNG, every other one tinted
colour). Each stage is timed by the thread's own CPU clock (``time.thread_time``), so other
jobs on a shared machine slow it less than they slow a wall clock; each side runs in its own
process, the sides taking turns pass by pass (the best pass of each is kept). The other
revision runs as it was, checked out in a temporary git worktree (its ``decode`` took the
bytes alone then). ``--profile-calls`` adds cProfile's ten costliest calls of our normalise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from run import ENV, PYTHON, previous_release, write_pages  # noqa: E402

# Run in a child process, with PYTHONPATH set to the code measured: the stages of each file,
# best of PASSES passes, in ms of CPU per page, as JSON on the last line.
STAGES = r"""
import hashlib, json, sys, time
from pathlib import Path
import cv2
cv2.setNumThreads(1)
from worker import preprocess as p

files, profiles, passes = [Path(f) for f in sys.argv[1].split(",")], sys.argv[2], int(sys.argv[3])
new = hasattr(p, "check_header") and hasattr(p, "PROFILES")

def header(data, name):
    if new:
        from worker.preprocess.reading import check_within
        return check_within(data, name)
    return p.check_header(data, name, max_pixels=1 << 28)

def decode(data, name, head):
    return p.decode(data, name, head) if new else p.decode(data, name)

def one_pass(profile):
    spent = dict.fromkeys(("read", "sha256", "header", "decode", "normalise"), 0.0)
    for path in files:
        t0 = time.thread_time(); data = path.read_bytes()
        t1 = time.thread_time(); hashlib.sha256(data).hexdigest()
        t2 = time.thread_time(); head = header(data, path.name)
        t3 = time.thread_time(); grey = decode(data, path.name, head)
        t4 = time.thread_time(); p.normalize(grey, profile) if profile else p.normalize(grey)
        t5 = time.thread_time()
        for stage, seconds in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            spent[stage] += seconds
    return {stage: 1000 * s / len(files) for stage, s in spent.items()}

result = {}
for name in profiles.split(",") if profiles else [""]:
    profile = p.PROFILES[name] if name else None
    best = min((one_pass(profile) for _ in range(passes)), key=lambda s: sum(s.values()))
    result[name or "its own"] = best
print(json.dumps(result))
"""

PROFILE_CALLS = r"""
import cProfile, pstats, sys
from pathlib import Path
import cv2
cv2.setNumThreads(1)
from worker.preprocess import PROFILES, normalize
from worker.preprocess.reading import check_within, decode
files, name = [Path(f) for f in sys.argv[1].split(",")], sys.argv[2]
greys = [decode(f.read_bytes(), f.name, check_within(f.read_bytes(), f.name)) for f in files]
profiler = cProfile.Profile()
profiler.enable()
for grey in greys:
    normalize(grey, PROFILES[name])
profiler.disable()
pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
"""


def stages(files: list[Path], profiles: str, passes: int, code: Path) -> dict[str, dict[str, float]]:
    out = subprocess.run([PYTHON, "-c", STAGES, ",".join(map(str, files)), profiles, str(passes)],
                         env={**ENV, "PYTHONPATH": str(code)}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_stages(kind: str, rows: dict[str, dict[str, float]]) -> None:
    names = list(next(iter(rows.values())))
    print(f"\n{kind}: ms of CPU a page, one thread, best pass")
    print(f"{'code':<28}" + "".join(f"{n:>10}" for n in names) + f"{'total':>10}")
    for code, spent in rows.items():
        print(f"{code:<28}" + "".join(f"{spent[n]:>10.2f}" for n in names) + f"{sum(spent.values()):>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--previous", default="e7e3a9f")
    parser.add_argument("--profiles", default="digits-v4,digits-v5")
    parser.add_argument("--profile-calls", action="store_true")
    args = parser.parse_args()
    from worker.training import datasets

    images = datasets.load("mnist").test_images
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with previous_release(work, args.previous) as previous:
            for suffix in (".jpg", ".png"):
                folder = work / suffix[1:]
                write_pages(folder, images, args.count, suffix)
                files = sorted(folder.iterdir())
                rows: dict[str, dict[str, float]] = {}
                sides = ((REPO, args.profiles, "ours"), (previous, "", args.previous))
                for _ in range(args.passes):  # the sides take turns; each keeps its best pass
                    for code, profiles, label in sides:
                        for name, spent in stages(files, profiles, 1, code).items():
                            key = f"{label}, {name}"
                            if key not in rows or sum(spent.values()) < sum(rows[key].values()):
                                rows[key] = spent
                print_stages(f"{args.count} x 1000x1400 {suffix[1:].upper()}", rows)
                if args.profile_calls:
                    for name in args.profiles.split(","):
                        print(f"\ncProfile, ours, {name}, {suffix[1:].upper()}:")
                        subprocess.run([PYTHON, "-c", PROFILE_CALLS, ",".join(map(str, files)), name],
                                       env={**ENV, "PYTHONPATH": str(REPO)}, check=True)


if __name__ == "__main__":
    main()
