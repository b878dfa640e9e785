"""How a ``--broker`` watcher reports its own health, against a real Redis (Debian's
redis-server) and no classify worker: ``/readyz`` follows Redis, the remote gauges stay sane
when idle, and the log says once when no worker answers and once when one does again (the
test answers a task itself, as a worker would, from the real queue)."""

from __future__ import annotations

import base64
import json
import logging
import os
import urllib.error
import urllib.request

import msgpack
import numpy as np
import pytest
import redis as redis_py
from conftest import rows, running
from factories import digit_stroke, wait_for, write
from services import REDIS_SERVER

from worker.daemon.loop import Daemon
from worker.daemon.metrics import Metrics, MetricsServer
from worker.daemon.settings import Settings
from worker.model.classifier import Scored
from worker.preprocess import LoadedInput
from worker.remote.broker import QUEUE
from worker.remote.classify_worker import encode
from worker.remote.connection import Broker
from worker.remote.silence import SILENCE_SHARE
from worker.remote.task_message import parse_task
from worker.remote.watcher import remote_pipeline

pytestmark = pytest.mark.skipif(not os.path.exists(REDIS_SERVER), reason="needs Debian's redis-server")


@pytest.fixture
def watcher(boxes, redis, fake_classifier):
    """A daemon with --broker on the test's Redis and --metrics on a free port, its
    ``--resend-after`` 2 s; yields (daemon, metrics server) while it runs."""
    inbox, outbox = boxes
    metrics = Metrics()
    server = MetricsServer(metrics, "127.0.0.1:0")
    server.start()
    settings = Settings(inbox=inbox, outbox=outbox, settle=0.1, broker=redis.url, resend_after=2)
    daemon = Daemon(settings, fake_classifier, metrics=metrics,
                    make_pipeline=remote_pipeline(Broker(redis.url), settings))
    try:
        with running(daemon):
            yield daemon, server
    finally:
        server.stop()


def _get(server: MetricsServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{server.address}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _metric(server: MetricsServer, name: str) -> float | None:
    for line in _get(server, "/metrics")[1].splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[-1])
    return None


def test_readyz_is_503_while_the_broker_is_down_and_its_return_is_not_a_warning(watcher, redis, caplog):
    _, server = watcher
    caplog.set_level(logging.INFO, logger="worker.remote.connection")
    assert wait_for(lambda: _get(server, "/readyz")[0] == 200, 10)
    assert _metric(server, "worker_broker_up") == 1
    redis.kill()
    assert wait_for(lambda: _get(server, "/readyz")[0] == 503, 10), "ready while Redis is down"
    assert _metric(server, "worker_broker_up") == 0
    assert _get(server, "/healthz")[0] == 200, "the loop still turns: healthy, not ready"
    redis.start()
    assert wait_for(lambda: _get(server, "/readyz")[0] == 200, 10)
    said = [(r.levelno, r.getMessage()) for r in caplog.records if "broker" in r.getMessage()]
    assert [level for level, text in said if "unreachable" in text] == [logging.ERROR]
    assert [level for level, text in said if "reachable again" in text] == [logging.INFO]


def test_the_oldest_batch_is_0_seconds_old_when_none_is_out(watcher):
    _, server = watcher
    assert wait_for(lambda: _metric(server, "worker_remote_batches") == 0, 10)
    for _ in range(20):  # each scrape a later turn of the loop
        assert _metric(server, "worker_remote_oldest_seconds") == 0.0


def _answer_one_task(redis_url: str) -> None:
    """Do what a classify worker does with the first task on the queue: answer it, on the
    reply list the task names, with a '3' for each of its files."""
    client = redis_py.Redis.from_url(redis_url)
    message = json.loads(client.rpop(QUEUE))
    args, _, _ = msgpack.unpackb(base64.b64decode(message["body"]))
    task = parse_task(args, message["headers"]["id"], None)
    loaded = [LoadedInput(np.zeros((28, 28, 1), np.float32), "-") for _ in task.files]
    scored = Scored(np.eye(10, dtype=np.float32)[[3] * len(task.files)], [[] for _ in task.files], None)
    client.rpush(task.reply_to, encode(task, None, task.model[1], loaded, scored))
    client.close()


def test_no_answer_from_any_worker_is_said_once_and_an_answer_after_it_too(watcher, boxes, redis, caplog):
    inbox, outbox = boxes
    daemon, _ = watcher
    assert daemon.pipeline.silence.after == SILENCE_SHARE * 2
    caplog.set_level(logging.INFO, logger="worker.remote.silence")
    write(inbox / "one.png", digit_stroke())

    def said(words: str) -> list[int]:
        return [r.levelno for r in caplog.records if words in r.getMessage()]

    assert wait_for(lambda: said("no classify worker has answered"), 10)
    assert wait_for(lambda: len(said("sent again")) >= 2, 15), "the resends, 2 s apart: time has passed"
    assert said("no classify worker has answered") == [logging.WARNING], "said once, not each turn"
    _answer_one_task(redis.url)
    assert wait_for(lambda: (outbox / "predictions.csv").exists() and len(rows(outbox)) == 1, 10)
    assert said("classify workers answer again") == [logging.INFO]
    assert rows(outbox)[0]["label"] == "3"
