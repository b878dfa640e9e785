"""Loading on decode workers: the same results as in-process, and no file lost to a dead worker."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from factories import digit_stroke, write

from worker.errors import InputError
from worker.loading import Loaders, LoadOptions, load_all
from worker.preprocess import DIGITS, LoadedInput

OPTIONS = LoadOptions(DIGITS)


def crash_on_marker(jobs, options):
    """A decoder that dies (as on a hostile file) when it meets a file named crash*."""
    if any(path.name.startswith("crash") for path, _ in jobs):
        os._exit(70)
    return load_all(jobs, options)


@pytest.fixture
def files(tmp_path):
    paths = []
    for i in range(40):
        paths.append(write(tmp_path / f"{i:02d}.png", np.roll(digit_stroke(), i % 7 - 3, axis=1)))
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    return [*paths, tmp_path / "empty.png", tmp_path / "corrupt.png"]


@pytest.fixture
def loaders():
    made = []

    def make(**kwargs):
        made.append(Loaders(2, OPTIONS, **kwargs))
        return made[-1]

    yield make
    for item in made:
        item.close()


def same(a, b) -> bool:
    if isinstance(a, InputError):
        return isinstance(b, InputError) and (a.kind, a.message) == (b.kind, b.message)
    return isinstance(b, LoadedInput) and a.sha256 == b.sha256 and np.array_equal(a.pixels, b.pixels)


def test_workers_load_exactly_what_this_process_loads(files, loaders):
    pool = loaders()
    pool.start()
    expected = load_all([(p, p.name) for p in files], OPTIONS)
    got = pool.load(files)
    assert len(got) == len(files)
    assert all(same(a, b) for a, b in zip(expected, got, strict=True))
    assert [e.kind for e in got if isinstance(e, InputError)] == ["empty", "truncated"]


def test_a_lone_file_loads_here_without_starting_workers(files, loaders):
    pool = loaders()
    assert isinstance(pool.load(files[:1])[0], LoadedInput)
    assert pool._starting is None


def test_a_killed_worker_costs_no_file(files, loaders):
    pool = loaders()
    victim = next(iter(pool.start()._processes))
    os.kill(victim, signal.SIGKILL)
    got = pool.load(files)
    assert sum(isinstance(r, LoadedInput) for r in got) == 40
    assert victim not in pool.start()._processes  # new workers took over


def test_a_file_that_kills_its_worker_is_refused_alone(files, tmp_path, loaders):
    crash = tmp_path / "crash.png"
    crash.write_bytes(files[0].read_bytes())
    pool = loaders(load=crash_on_marker)
    pool.start()
    got = pool.load([*files[:35], crash])
    assert sum(isinstance(r, LoadedInput) for r in got) == 35
    assert got[-1].kind == "decoder-crashed" and "crash.png" in got[-1].message
    assert isinstance(pool.load(files[:35])[0], LoadedInput)  # and the workers work again
