"""``worker classify-worker`` logs as every other command does: each line on stderr in our format
(the local time in ISO 8601 with its zone, the level, the logger; under systemd the journal's
priority instead), from its main process and its pool's alike; no Celery banner, and no
several-line warning about running as root (the tests run as root: one line of ours instead).

A real classify worker against a real redis-server, given a task it must drop (logged by the pool
process that ran it), then stopped with SIGTERM to its main process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import REPO
from factories import wait_for

from worker.remote.broker import TASK, make_app

OUR_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d "
                      r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
JOURNAL_LINE = re.compile(r"<[2-7]>[\w.]+: ")
BANNER_WORDS = ("[config]", "[queues]", "-------", "transport:", "concurrency:", "superuser",
                "SecurityWarning")


@pytest.mark.parametrize("journal", [False, True], ids=["terminal", "journal"])
def test_every_line_is_ours_and_there_is_no_banner(redis, tmp_path, journal):
    err_path = tmp_path / "stderr"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "JOURNAL_STREAM"))}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with open(err_path, "wb") as err, open(tmp_path / "stdout", "wb") as out:
        if journal:  # stderr is the journal's stream, as systemd names it
            info = os.fstat(err.fileno())
            env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
        proc = subprocess.Popen([sys.executable, "-m", "worker", "classify-worker", "--broker", redis.url,
                                 "--concurrency", "1", "--models", str(REPO / "models")],
                                stdout=out, stderr=err, env=env, start_new_session=True)
    try:
        def stderr() -> str:
            return err_path.read_text(errors="replace")

        assert wait_for(lambda: " ready." in stderr() or proc.poll() is not None, 90), stderr()
        make_app(redis.url).send_task(TASK, args=["not a batch"])
        assert wait_for(lambda: "dropped, not answered" in stderr() or proc.poll() is not None, 60), stderr()
        proc.send_signal(signal.SIGTERM)  # to the main process, which stops its pool
        assert proc.wait(60) == 0, stderr()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    # stdout: only what Celery's stop handler writes there itself (no setting silences it)
    printed = [line for line in (tmp_path / "stdout").read_text().splitlines() if line.strip()]
    assert printed == ["worker: Warm shutdown (MainProcess)"], printed
    lines = [line for line in stderr().splitlines() if line.strip()]
    form = JOURNAL_LINE if journal else OUR_LINE
    assert lines and all(form.match(line) for line in lines), "\n".join(lines)
    assert not any(word in line for line in lines for word in BANNER_WORDS), "\n".join(lines)
    pool_line = [line for line in lines for level in ("ERROR ", "<3>")
                 if f"{level}worker.remote.classify_worker: task" in line]
    assert pool_line, "the pool process's line is there, in our format"
    assert sum("running as root" in line for line in lines) == (os.geteuid() == 0)
