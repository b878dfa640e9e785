"""What a page of the web page's outbox search costs, small outbox against big, and against the
naive way (read the whole JSONL, keep what matches), in one run.

    .venv/bin/python bench/search.py            # 1,000, 20,000 and 200,000 rows
    .venv/bin/python bench/search.py --rows 50000

The worst case is timed: a filter that matches nothing, so a page reads its whole byte budget.
Timings on shared 2-core machines are noisy: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from worker.daemon.claim import new_id  # noqa: E402
from worker.outbox.lines import row_from  # noqa: E402
from worker.outbox.records import JSONL_NAME, Row  # noqa: E402
from worker.outbox.writer import Outbox  # noqa: E402
from worker.web.outbox_search import RowFilter, search_rows  # noqa: E402

DIGITS = [str(d) for d in range(10)]
NOTHING = RowFilter(name="no file is called this")


def outbox_of(folder: Path, count: int) -> Path:
    box = Outbox(folder, DIGITS)
    probabilities = dict.fromkeys(DIGITS, 0.1)
    for start in range(0, count, 10_000):
        box.record([Row(id=new_id(), file=f"scans/{i:07d}.png", label=str(i % 10), confidence=0.1,
                        class_index=i % 10, sha256="ab" * 32, model="mnist",
                        processed_at="2026-12-03T05:00:00.000Z", probabilities=probabilities,
                        model_version="v1")
                    for i in range(start, min(count, start + 10_000))])
    box.close()
    return folder


def best_of(times: int, work) -> float:
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def naive(outbox: Path) -> list:
    with open(outbox / JSONL_NAME, "rb") as fh:
        return [r for r in map(row_from, fh) if r is not None and NOTHING.matches(r)][:50]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    sizes = (1_000, 20_000, args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        outboxes = [outbox_of(Path(tmp) / str(n), n) for n in sizes]
        pages = [best_of(5, lambda o=o: search_rows(o, NOTHING, 50)) for o in outboxes]
        megabytes = [(o / JSONL_NAME).stat().st_size / 2**20 for o in outboxes]
        whole = best_of(3, lambda: naive(outboxes[-1]))
    for n, mb, seconds in zip(sizes, megabytes, pages, strict=True):
        print(f"a page matching nothing, {n:,} rows ({mb:.1f} MiB): {seconds * 1000:.1f} ms")
    print(f"{sizes[-1]:,} rows against {sizes[1]:,}: {pages[-1] / pages[1]:.2f}x the time a page")
    print(f"the naive way (the whole JSONL) over {sizes[-1]:,} rows: {whole * 1000:.0f} ms, "
          f"{whole / pages[-1]:.1f}x a page")


if __name__ == "__main__":
    main()
