"""Files -> model inputs, in batches: in this process, or on worker processes.

Loading a 28x28 PNG is ~100 us of Python (many small NumPy and OpenCV calls, holding the GIL);
in the daemon's process it competes with claiming, writing rows and archiving. ``Loaders`` runs
big batches on worker processes instead, so that Python work gets the other core: bulk backlog
1,700 -> 2,160 files/s in the daemon (bench/run.py for the whole table).

- Workers start in the background when the first big batch arrives; until they are up, batches
  load here, so nothing waits for them (start-up and single-file latency stay as they were).
- They stop after a minute without a big batch, giving their memory back to an idle machine.
- A worker that dies (a decoder crashing on a hostile file, the OOM killer) takes no input and
  not the daemon with it: the batch is loaded again one file at a time, and a file that kills a
  worker by itself gets the error kind ``decoder-crashed``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from worker import defaults
from worker.errors import InputError
from worker.preprocess import LoadedInput, Profile, load_input

log = logging.getLogger(__name__)

# A batch this big (or of files this big on average) is worth sending to the workers; below
# that, the round trip costs more than it saves (and a lone file should not wait for it).
MIN_POOLED_FILES = 32
MIN_POOLED_AVERAGE_BYTES = 32 * 1024
# Workers exit after this long without a pooled batch (they hold ~45 MB each).
IDLE_SECONDS = 60.0

Loaded = LoadedInput | InputError


@dataclass(frozen=True)
class Limits:
    """Per-file limits, checked before decoding."""

    max_bytes: int = defaults.MAX_FILE_BYTES
    max_pixels: int = defaults.MAX_PIXELS


@dataclass(frozen=True)
class LoadOptions:
    """Everything a worker needs besides the files: picklable, sent with each chunk."""

    profile: Profile
    limits: Limits = Limits()
    follow_symlinks: bool = True


def load_one(path: Path, name: str, options: LoadOptions) -> Loaded:
    """The file's model input, or why it cannot be classified; never raises."""
    try:
        return load_input(
            path, options.profile, max_bytes=options.limits.max_bytes,
            max_pixels=options.limits.max_pixels, follow_symlinks=options.follow_symlinks,
            name=name,
        )
    except InputError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not take the batch down
        log.exception("unexpected error reading %s", path)
        return InputError("internal", f"unexpected error reading {name}: {exc}")


def load_all(jobs: list[tuple[Path, str]], options: LoadOptions) -> list[Loaded]:
    """``load_one`` for each (path, name), in order; what a worker runs for one chunk."""
    return [load_one(path, name, options) for path, name in jobs]


LoadFunction = Callable[[list[tuple[Path, str]], LoadOptions], list[Loaded]]


def _init_worker(owner_pid: int) -> None:
    """In each worker: Ctrl-C is the owner's to handle (it finishes its batch, then stops the
    workers), and the worker exits when its owner dies, even by kill -9 (workers are forked by
    the forkserver, so no parent-death signal reaches them, and they hold their own task pipe
    open: without this they would wait for tasks forever)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(owner_pid,), name="owner-watch", daemon=True).start()


def _exit_with(owner_pid: int) -> None:
    try:
        owner = os.pidfd_open(owner_pid)
    except ProcessLookupError:
        os._exit(1)
    select.select([owner], [], [])  # readable once the owner has exited
    os._exit(1)


class Loaders:
    """Load batches here or on ``workers`` processes (0: always here); see the module doc."""

    def __init__(self, workers: int, options: LoadOptions, load: LoadFunction = load_all) -> None:
        self.workers = workers
        self.options = options
        self._load = load  # what workers run: module-level, so they can import it
        self._executor: ProcessPoolExecutor | None = None
        self._starting: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last_used = time.monotonic()

    def load(self, paths: list[Path], names: list[str] | None = None) -> list[Loaded]:
        """One result per path, in order. ``names`` are how error messages call the files."""
        jobs = list(zip(paths, names or [p.name for p in paths], strict=True))
        executor = self._executor if self._worth_pooling(paths) else None
        if executor is None:
            return self._load(jobs, self.options)
        self._last_used = time.monotonic()
        try:
            return self._load_pooled(executor, jobs)
        except BrokenProcessPool:
            log.error("a decode worker died; loading its batch again one file at a time")
            self._restart()
            return [self._load_alone(job) for job in jobs]

    def _worth_pooling(self, paths: list[Path]) -> bool:
        if self.workers < 1 or len(paths) < 2:
            return False
        worth = len(paths) >= MIN_POOLED_FILES or _average_size(paths) >= MIN_POOLED_AVERAGE_BYTES
        if worth and self._executor is None:
            self._start_in_background()
        return worth

    def _load_pooled(self, executor: ProcessPoolExecutor, jobs: list) -> list[Loaded]:
        """Two chunks per worker: few round trips, and a slow file holds up only its chunk."""
        size = -(-len(jobs) // (2 * self.workers))
        futures = [
            executor.submit(self._load, jobs[i : i + size], self.options)
            for i in range(0, len(jobs), size)
        ]
        return [item for future in futures for item in future.result()]

    def _load_alone(self, job: tuple[Path, str]) -> Loaded:
        """One file on its own worker: if that worker dies too, the file is the cause."""
        try:
            return self.start().submit(self._load, [job], self.options).result()[0]
        except BrokenProcessPool:
            self._restart()
            log.error("%s crashed a decode worker", job[1])
            return InputError("decoder-crashed", f"{job[1]} crashed the image decoder")

    # --- the workers' lifetime ----------------------------------------------------------

    def _start_in_background(self) -> None:
        if self._starting is None:  # only the thread calling load() starts or stops workers
            self._starting = threading.Thread(
                target=self._start_quietly, name="start-decoders", daemon=True
            )
            self._starting.start()

    def _start_quietly(self) -> None:
        try:
            self.start()
        except Exception as exc:  # noqa: BLE001 - then every batch loads here, as with 0 workers
            log.error("decode workers could not start (%s); loading in this process", exc)

    def start(self) -> ProcessPoolExecutor:
        """Start the workers (forkserver: a clean process, not a fork of this threaded one)
        and run one no-op on each, so they are ready when ``load`` first sees them."""
        with self._lock:
            if self._executor is None:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["worker.loading"])
                executor = ProcessPoolExecutor(
                    self.workers, mp_context=context, initializer=_init_worker,
                    initargs=(os.getpid(),),
                )
                list(executor.map(abs, range(self.workers)))
                self._executor = executor
                self._last_used = time.monotonic()
                log.info("%d decode workers ready", self.workers)
            return self._executor

    def _restart(self) -> None:
        self.close()
        self.start()

    def release_if_idle(self) -> None:
        """Stop the workers if no big batch came for a while (call when nothing is to do)."""
        if self._executor is not None and time.monotonic() - self._last_used > IDLE_SECONDS:
            log.info("stopping idle decode workers")
            self.close()

    def close(self) -> None:
        if self._starting is not None:
            self._starting.join()
        with self._lock:
            executor, self._executor, self._starting = self._executor, None, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _average_size(paths: list[Path]) -> float:
    total = 0
    for path in paths:
        try:
            total += os.lstat(path).st_size
        except OSError:
            pass
    return total / len(paths)
