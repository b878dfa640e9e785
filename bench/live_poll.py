"""The web page's poll, the old way and the kept way, on one outbox, in one run: what a page's
refresh of the live list and the review queue costs with ``--rows`` rows, ``--errors`` error
records and ``--waiting`` files in the inbox.

Old: each poll read the JSONL's 4 MiB tail twice (the newest rows, the review queue), all of
reviews.jsonl, every error record (the newest failures, today's count) and listed the inbox
(the status). Kept (``worker.web.live``): a poll reads what was appended since the last; the
inbox is listed on a thread of its own, at most every few seconds, not per poll. Also printed:
the memory the kept state holds after its first look, and that look's peak (tracemalloc).

    .venv/bin/python bench/live_poll.py [--rows 100000] [--errors 20000] [--waiting 0] [--polls 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from test_live import _outbox_of, write_rows  # noqa: E402

from worker.daemon.status import status  # noqa: E402
from worker.web import outbox_view  # noqa: E402
from worker.web.live import LiveOutbox  # noqa: E402


def old_poll(inbox: Path, outbox: Path) -> None:
    outbox_view.newest_rows(outbox, 24)
    outbox_view.newest_failures(outbox, 20)
    status(inbox, outbox)
    outbox_view.review_queue(outbox, 24)


def kept_poll(live: LiveOutbox) -> None:
    live.look()
    live.latest(24)
    live.review(24)


def seconds_per_poll(poll, polls: int, outbox: Path) -> float:
    """Mean seconds of ``polls`` polls, a row appended before each (as when the daemon works)."""
    took = 0.0
    for n in range(polls):
        write_rows(outbox, [10**7 + n])
        started = time.perf_counter()
        poll()
        took += time.perf_counter() - started
    return took / polls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--errors", type=int, default=20_000)
    parser.add_argument("--waiting", type=int, default=0)
    parser.add_argument("--polls", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        inbox, outbox = _outbox_of(Path(root), rows=args.rows, errors=args.errors)
        for n in range(args.waiting):
            (inbox / f"waiting-{n}.png").write_bytes(b"x")
        tracemalloc.start()
        probe = LiveOutbox(inbox, outbox)  # for its memory only: tracemalloc slows it down
        probe.look()
        kept_bytes, peak_bytes = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del probe
        live = LiveOutbox(inbox, outbox)
        started = time.perf_counter()
        live.look()
        first = time.perf_counter() - started
        while not live.status:  # the inbox listed once, on its thread, before the polls are timed
            time.sleep(0.05)
        old = seconds_per_poll(lambda: old_poll(inbox, outbox), args.polls, outbox)
        kept = seconds_per_poll(lambda: kept_poll(live), args.polls, outbox)
        print(json.dumps({"rows": args.rows, "errors": args.errors, "waiting": args.waiting,
                          "old_poll_ms": round(1000 * old, 2), "kept_poll_ms": round(1000 * kept, 3),
                          "old_over_kept": round(old / kept, 1),
                          "kept_first_look_ms": round(1000 * first, 1),
                          "kept_state_mib": round(kept_bytes / 2**20, 1),
                          "first_look_peak_mib": round(peak_bytes / 2**20, 1)}))


if __name__ == "__main__":
    main()
