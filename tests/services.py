"""Real services for the tests and the bench of ``--broker``: Debian's ``redis-server`` on a
free loopback port, and ``worker classify-worker`` processes, each in its own process group
(a Celery worker is a main process and its pool's children: a host dying kills them all)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from factories import wait_for

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A Redis of the test's own, without persistence: a restart forgets everything, the worst
    case for the watcher."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        assert wait_for(self.answers, 10), "redis-server did not start"
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()


class ClassifyWorker:
    """``worker classify-worker`` with one pool process. ``prelude`` is Python run in the
    worker's main process first (a test's fault injection); its pool processes inherit it."""

    def __init__(self, url: str, log: Path, *, models: Path | None = None, visibility_timeout: float = 3,
                 prelude: str = "") -> None:
        self.args = ["classify-worker", "--broker", url, "--concurrency", "1",
                     "--visibility-timeout", str(visibility_timeout)]
        if models is not None:
            self.args += ["--models", str(models)]
        self.log = log
        self.prelude = prelude
        self.proc: subprocess.Popen | None = None

    def start(self) -> ClassifyWorker:
        code = f"{self.prelude}\nfrom worker.cli import app\napp(args={self.args!r}, prog_name='worker')\n"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=env)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> ClassifyWorker:
        assert wait_for(lambda: " ready." in self.output() or self.proc.poll() is not None, timeout), \
            self.output()
        assert self.proc.poll() is None, self.output()
        return self

    def kill(self) -> None:
        """kill -9 the whole worker (main process and pool), as a host dying would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
