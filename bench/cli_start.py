"""How long a short command takes from exec to exit: ``worker --help``, ``status``, ``report``.

    .venv/bin/python bench/cli_start.py                      # this tree, 10 runs each
    .venv/bin/python bench/cli_start.py --runs 20 /tmp/old   # and another tree, run by run

Another tree is a checkout of an older commit (``git archive COMMIT | tar -x -C /tmp/old``);
the trees' runs alternate, so both see the same load. Each run is ``python -m worker ARGS`` in
the tree's folder (so that tree's ``worker`` is imported), on an empty inbox and outbox, with
bytecode written once beforehand, as an installed package has it. Prints the median and the
fastest wall time, and the median CPU time, which another process's load disturbs less.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def commands(inbox: Path, outbox: Path) -> dict[str, list[str]]:
    """What to run after ``python``, by name; the first is the interpreter's own start."""
    worker = ["-m", "worker"]
    return {"python -c pass": ["-c", "pass"], "--help": [*worker, "--help"],
            "status": [*worker, "status", "--inbox", str(inbox), "--outbox", str(outbox)],
            "report": [*worker, "report", "--outbox", str(outbox)],
            "report --help": [*worker, "report", "--help"], "watch --help": [*worker, "watch", "--help"]}


def one_run(tree: Path, argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one ``python ARGV`` in ``tree``."""
    before, start = os.times(), time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=tree, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall, after = time.perf_counter() - start, os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", type=Path, help="more trees to compare with this one")
    parser.add_argument("--runs", type=int, default=10)
    options = parser.parse_args()
    trees = [REPO, *options.trees]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    with tempfile.TemporaryDirectory() as scratch:
        inbox, outbox = Path(scratch, "inbox"), Path(scratch, "outbox")
        inbox.mkdir()
        outbox.mkdir()
        runs = commands(inbox, outbox)
        for tree in trees:  # each tree's bytecode written once
            for argv in runs.values():
                one_run(tree, argv, env)
        for name, argv in runs.items():
            times: dict[Path, list[tuple[float, float]]] = {tree: [] for tree in trees}
            for _ in range(options.runs):
                for tree in trees:
                    times[tree].append(one_run(tree, argv, env))
            for tree in trees:
                walls, cpus = (sorted(ms * 1000 for ms in kind) for kind in zip(*times[tree], strict=True))
                print(f"{name:<14} {str(tree):<20} wall median {statistics.median(walls):4.0f} ms "
                      f"(fastest {walls[0]:4.0f}), cpu median {statistics.median(cpus):4.0f} ms")


if __name__ == "__main__":
    main()
