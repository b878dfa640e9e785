"""Shared fixtures: a fake classifier for focused daemon tests, the real model for slow ones,
and an autouse check that no test leaks a thread."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from browsing import CHROMIUM, CHROMIUM_ARGS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from worker import defaults  # noqa: E402
from worker.model import publish  # noqa: E402
from worker.model.classifier import Classifier, Scored  # noqa: E402
from worker.outbox.records import CSV_NAME, ERROR_SUFFIX, FAILED_DIR  # noqa: E402
from worker.preprocess import DIGITS  # noqa: E402
from worker.training import datasets  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TEST_USER = "worker-test"  # made by ./scripts/test; runs the daemon as the shipped unit's User=


def other_user_ids() -> tuple[int, int] | None:
    """(uid, gid) of TEST_USER, a user other than the tests' own; None where there is none."""
    import pwd

    try:
        entry = pwd.getpwnam(TEST_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def drain(inbox: Path, outbox: Path, classifier, **settings) -> None:
    """``worker watch --once`` in this process (with the fake classifier, say)."""
    from worker.daemon.loop import Daemon
    from worker.daemon.settings import Settings

    daemon = Daemon(Settings(inbox=inbox, outbox=outbox, once=True, settle=0.2, retry=0.01, **settings),
                    classifier)
    assert daemon.run(threading.Event()) >= 0


def records_by_file(outbox: Path) -> dict[str, str]:
    """file -> "row" or the error kind; a file with two records fails the test."""
    seen: dict[str, str] = {}
    found = [(r["file"], "row") for r in rows(outbox)] + [(e["file"], e["kind"]) for e in errors(outbox)]
    for file, what in found:
        assert file not in seen, f"{file} has two records"
        seen[file] = what
    return seen


class FakeClassifier:
    """Stands in for ``worker.model.classifier.Classifier``: label = the image's brightest row // 3."""

    def __init__(self) -> None:
        self.class_names = [str(d) for d in range(10)]
        self.profile = DIGITS
        self.name = "fake"
        self.version = "fake-1"
        self.card = {"dataset": "mnist"}
        self.runtime = "fake"
        self.signature = None  # no files on disk: never reloaded on its own
        self.calls = 0

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        probs = np.full((len(batch), 10), 0.01, np.float32)
        for i, image in enumerate(batch):
            probs[i, int(np.argmax(image.sum(axis=(1, 2)))) // 3] = 0.91
        return probs

    def predict(self, batch: np.ndarray) -> Scored:
        probabilities = self.predict_proba(batch)
        return Scored(probabilities, [[] for _ in probabilities], None)

    predictions = Classifier.predictions


@pytest.fixture
def fake_classifier() -> FakeClassifier:
    return FakeClassifier()


@pytest.fixture
def redis(tmp_path):
    """Debian's redis-server on a free loopback port of this test's own, killed at its end."""
    from services import RedisServer

    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


@pytest.fixture(scope="session", autouse=True)
def shipped_models_serve() -> None:
    """A fresh clone's models/ has no ``current`` (it is not in git): the first command that
    names a model sets it up, and tests that read the shipped model's files directly need it
    done before them."""
    from worker.model.repository import ensure_seeded

    ensure_seeded(defaults.MODELS_DIR)


@pytest.fixture(scope="session")
def real_model_path() -> Path:
    path = defaults.MODEL
    assert path.is_file(), f"the shipped model {path} is missing"
    return path


@pytest.fixture
def served(tmp_path, real_model_path) -> Path:
    """A models folder with the shipped model published as its first version."""
    model = tmp_path / "models" / "mnist.keras"
    publish.publish_checked(real_model_path, model)
    return model


@pytest.fixture(autouse=True)
def no_thread_leak():
    before = set(threading.enumerate())
    yield
    leaked = [  # watchdog's InotifyFD is one reader thread per process, shared by design
        t for t in threading.enumerate()
        if t not in before and t.is_alive() and type(t).__name__ != "InotifyFD"
    ]
    for thread in leaked:
        thread.join(timeout=2)
    leaked = [t for t in leaked if t.is_alive()]
    assert not leaked, f"threads leaked: {leaked}"


@pytest.fixture
def other_file_system(tmp_path):
    """A tmpfs mounted for the test: an outbox on another file system than the inbox."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@contextmanager
def running(daemon):
    """The daemon's run() on a thread, from when it is ready (watching) until the block ends;
    then stopped (a SIGTERM's flag), and it must have ended."""
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop, ready.set))
    thread.start()
    try:
        assert ready.wait(10), "the daemon never got ready"
        yield thread
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive(), "the daemon did not stop"


@pytest.fixture
def boxes(tmp_path):
    """An inbox (made) and an outbox (left for the daemon to make)."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    return inbox, outbox


def rows(outbox: Path) -> list[dict]:
    """The CSV's rows, parsed."""
    with open(outbox / CSV_NAME, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def errors(outbox: Path) -> list[dict]:
    """Every error record in the outbox's quarantine, in path order."""
    return [json.loads(p.read_text()) for p in sorted((outbox / FAILED_DIR).rglob(f"*{ERROR_SUFFIX}"))]


class Faults:
    """Make system calls fail at the boundary, for the paths a test names, as a full disk or a
    crash would: ``faults.fail(os, "link", when=lambda path: ..., error=OSError(...))``.
    ``when`` sees the call's first path argument (or, for an fd, the file it is open on)."""

    def __init__(self, monkeypatch) -> None:
        self.monkeypatch = monkeypatch
        self.failures = 0
        self.patched: list[tuple[object, str, object]] = []

    def fail(self, module, name: str, *, when, error, before=None) -> None:
        real = getattr(module, name)

        def faulty(target, *args, **kwargs):
            if when(_path_of(target)):
                self.failures += 1
                if before is not None:  # what the call managed before failing (a torn write)
                    before(real, target, *args, **kwargs)
                raise error
            return real(target, *args, **kwargs)

        self.patched.append((module, name, real))
        self.monkeypatch.setattr(module, name, faulty)

    def before(self, module, name: str, *, when, action) -> None:
        """Not a failure: run ``action(path)`` just before each matching call, which then runs
        (another process acting at that instant, e.g. a writer appending)."""
        real = getattr(module, name)

        def spied(target, *args, **kwargs):
            path = _path_of(target)
            if when(path):
                action(path)
            return real(target, *args, **kwargs)

        self.patched.append((module, name, real))
        self.monkeypatch.setattr(module, name, spied)

    def clear(self) -> None:
        """The system works again (the test's monkeypatch still restores all at the end)."""
        for module, name, real in reversed(self.patched):
            setattr(module, name, real)
        self.patched.clear()


def _path_of(target) -> str:
    if not isinstance(target, int):
        return os.fsdecode(target)
    try:
        return os.readlink(f"/proc/self/fd/{target}")
    except OSError:
        return ""


@pytest.fixture
def faults(monkeypatch) -> Faults:
    return Faults(monkeypatch)


@pytest.fixture(scope="session")
def mnist_test():
    data = datasets.load("mnist")
    return data.test_images, data.test_labels


@pytest.fixture
def staging(tmp_path) -> Path:
    """Where files are written before they are renamed into the inbox whole."""
    folder = tmp_path / "staging"
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium through Playwright, one a test module."""
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (./scripts/test installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
