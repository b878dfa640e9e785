"""Summarising a big JSONL on every core: the file is cut at line ends into one part per
process, each part summarised alone, the parts merged in file order (so "the first N" lists
stay the first N). Parsing is most of a report's time, and it divides cleanly.

Workers are forked where the caller runs no thread of its own (``worker report``): they
inherit the summary's truth (possibly a big labels CSV) instead of having it pickled to them,
and send back their summary without it. A caller with threads running (``worker serve``, whose
report is made on a thread beside uvicorn's) asks for ``FROM_THREADS``: forking there copies
locks another thread may hold, and a child can deadlock on one (CPython warns of it from 3.12).
A forkserver forks its children from a process of its own, started fresh (fork and exec) and
single-threaded; the truth is pickled to each child once, by the pool's initializer.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

from worker.report.records import Filters, Skipped, parts, predictions
from worker.report.summary import Summary

# Below this size one process is quicker than starting others.
PARALLEL_BYTES = 32 * 2**20
# How the part workers start (multiprocessing's start methods): forked from a caller with no
# other thread; from a forkserver for a caller with threads running.
FORK = "fork"
FROM_THREADS = "forkserver"

_template: Summary | None = None  # in a worker: the empty summary it copies (its truth, caps)


def summarise(path: Path, template: Summary, filters: Filters,
              start_method: str = FORK) -> Iterator[tuple[Summary, Skipped]]:
    """Summaries of the rows of ``path`` (empty copies of ``template`` filled), part by part."""
    processes = os.cpu_count() or 1
    if processes == 1 or path.stat().st_size < PARALLEL_BYTES:
        yield _summarise_part(path, template, filters, 0, None)
        return
    ranges = parts(path, processes)
    with _pool(len(ranges), template, start_method) as pool:
        for summary, skipped in pool.starmap(_work, [(path, filters, a, b) for a, b in ranges]):
            summary.truth = template.truth
            yield summary, skipped


_forking_workers = False  # true while ``_pool`` forks: its children reset their signals at once


def _pool(processes: int, template: Summary, start_method: str):
    """A pool of workers holding ``template``, whose SIGTERM is the default from their first
    instruction.

    A forked worker inherits its parent's signal handlers: the daemon's or uvicorn's SIGTERM
    handler only sets a flag, so the pool's SIGTERM at its end would leave the worker alive and
    the parent waiting for it for ever (seen: a report hung after ``watch`` ran in the process).
    A pool initializer resets them too late: a worker still starting when the others have done
    all the parts is terminated before it runs, ignores the SIGTERM, and waits for tasks for
    ever (seen: a CI run hung). So the reset runs in the fork itself (``register_at_fork``).
    A forkserver's children start with SIGTERM's default: the forkserver is a program of its
    own (exec resets every caught signal; only an ignored one would stay ignored) and catches
    no SIGTERM itself.
    """
    import multiprocessing  # here: a report of a small outbox never starts a pool

    global _forking_workers
    context = multiprocessing.get_context(start_method)
    if start_method == FROM_THREADS:
        # Imported once in the forkserver, so that its children start with them: the caller's
        # main module (multiprocessing runs it as ``__mp_main__`` in each child otherwise) and this.
        context.set_forkserver_preload(["__main__", __name__])
    _forking_workers = start_method == FORK
    try:
        # With fork the template is inherited as it is, never pickled; otherwise pickled once a worker.
        return context.Pool(processes, initializer=_start_worker, initargs=(template,))
    finally:
        _forking_workers = False


def _start_worker(template: Summary) -> None:
    global _template
    _template = template
    _default_signals()


def _default_signals() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def _default_signals_in_our_workers() -> None:
    if _forking_workers:
        _default_signals()


os.register_at_fork(after_in_child=_default_signals_in_our_workers)


def _work(path: Path, filters: Filters, start: int, end: int) -> tuple[Summary, Skipped]:
    summary, skipped = _summarise_part(path, _template, filters, start, end)
    summary.truth = None  # the parent has it
    return summary, skipped


def _summarise_part(path: Path, template: Summary, filters: Filters, start: int,
                    end: int | None) -> tuple[Summary, Skipped]:
    summary, skipped = template.empty_copy(), Skipped()
    for row in predictions(path, filters, skipped, start, end):
        summary.add_row(row)
    return summary, skipped
