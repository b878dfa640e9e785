"""Liveness the watcher can see (issue 29): the heartbeat and the taken record as messages
(sealed, checked, bound to their key), the rules that send a batch again, and a worker's
heartbeat on a real Redis. End to end with killed and frozen workers: test_remote.py."""

from __future__ import annotations

import json
import os

import pytest
from services import REDIS_SERVER, RedisServer
from typer.testing import CliRunner

from worker.cli import app
from worker.remote.liveness import ALIVE_SECONDS, UNTAKEN_SECONDS, Heart, Snapshot, forget, look, to_resend
from worker.remote.liveness_messages import (
    Heartbeat,
    Taken,
    pack_heartbeat,
    pack_taken,
    parse_heartbeat,
    parse_taken,
)
from worker.remote.messages import Rejected

KEY = b"k" * 32
A, B = ("host-a", 101), ("host-b", 202)


def _beat(worker, task=None, idle=0.0) -> Heartbeat:
    return Heartbeat(*worker, task, idle)


def test_a_heartbeat_and_a_taken_record_survive_their_messages_sealed():
    beat = _beat(A, "t1")
    assert parse_heartbeat(pack_heartbeat(beat, KEY), KEY, A) == beat
    taken = Taken("t1", *A)
    assert parse_taken(pack_taken(taken, KEY), KEY, "t1") == taken


@pytest.mark.parametrize(("raw", "reason"), [
    (pack_heartbeat(_beat(A), None), "unsigned"),
    (pack_heartbeat(_beat(A), b"x" * 32), "bad-seal"),
    (pack_heartbeat(_beat(B), KEY), "schema"),  # a live worker's heartbeat copied under A's key
    (pack_heartbeat(_beat(A, idle=-1.0), KEY), "schema"),
    (b"\xc1", "malformed"),
    (b"x" * 5000, "malformed"),
])
def test_a_heartbeat_that_fails_a_check_keeps_nobody_alive(raw, reason):
    with pytest.raises(Rejected) as caught:
        parse_heartbeat(raw, KEY, A)
    assert caught.value.reason == reason


def test_a_taken_record_copied_under_another_batch_is_refused():
    with pytest.raises(Rejected) as caught:
        parse_taken(pack_taken(Taken("t1", *A), KEY), KEY, "t2")
    assert caught.value.reason == "schema"


def test_a_batch_whose_taker_has_no_heartbeat_is_sent_again_at_once():
    snapshot = Snapshot(alive={B: _beat(B, "t2")}, taken={"t1": Taken("t1", *A), "t2": Taken("t2", *B)})
    assert to_resend({"t1": 100.0, "t2": 100.0}, snapshot, now=100.5) == {"t1": "worker-gone"}


def test_a_batch_nobody_took_is_sent_again_only_while_a_worker_sits_idle():
    sent = {"t1": 100.0}
    late = 100.0 + UNTAKEN_SECONDS
    busy = Snapshot(alive={A: _beat(A, "t9"), B: _beat(B, idle=UNTAKEN_SECONDS - 1)}, taken={})
    assert to_resend(sent, busy, now=late) == {}, "queued behind busy workers is not lost"
    idle = Snapshot(alive={A: _beat(A, "t9"), B: _beat(B, idle=UNTAKEN_SECONDS)}, taken={})
    assert to_resend(sent, idle, now=late - 0.1) == {}, "not yet"
    assert to_resend(sent, idle, now=late) == {"t1": "untaken"}
    assert to_resend(sent, Snapshot(alive={}, taken={}), now=late + 100) == {}, \
        "no worker at all: it waits in the queue for one"


class AwayRedis:
    """A Redis that cannot be reached."""

    def pipeline(self):
        return self

    def set(self, *args, **kwargs):
        pass

    def execute(self):
        raise ConnectionError("away")


def test_a_batch_that_could_not_be_recorded_is_not_in_hand():
    """Redis away as a worker takes a batch: the task goes back on the queue (the error goes up),
    and the worker's heartbeat, once Redis is back, says idle, not busy with it."""
    heart = Heart(AwayRedis(), None, host="host-a", pid=101)
    with pytest.raises(ConnectionError):
        heart.taking("t1")
    assert heart.task is None


needs_redis = pytest.mark.skipif(not os.path.exists(REDIS_SERVER), reason="needs Debian's redis-server")


@pytest.fixture
def server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


@pytest.fixture
def redis(server):
    import redis as client

    return client.Redis.from_url(server.url)


@needs_redis
def test_a_worker_seen_by_its_heartbeat_and_its_batch_by_its_record(redis):
    now = [50.0]
    heart = Heart(redis, KEY, host="host-a", pid=101, clock=lambda: now[0])
    now[0] += 7
    heart.beat()
    redis.set("worker:alive:host-b:202", b"forged")
    rejected = []
    snapshot = look(redis, KEY, ["t1", "t2"], rejected.append)
    assert snapshot.alive == {A: _beat(A, idle=7.0)} and snapshot.taken == {}
    assert [r.reason for r in rejected] == ["malformed"]
    heart.taking("t1")
    snapshot = look(redis, KEY, ["t1", "t2"])
    assert snapshot.alive[A].task == "t1" and snapshot.taken == {"t1": Taken("t1", *A)}
    assert 0 < redis.ttl("worker:alive:host-a:101") <= ALIVE_SECONDS
    heart.done("t1")
    assert look(redis, KEY, ["t1"]).taken == {}, "the record goes with the answer"
    heart.taking("t2")
    forget(redis, "t2")
    assert look(redis, KEY, ["t2"]).taken == {}, "the watcher forgets it as it sends it again"


@needs_redis
def test_a_stopped_worker_deletes_its_heartbeat(redis):
    heart = Heart(redis, None, host="host-a", pid=101)
    heart.start()
    assert A in look(redis, None, []).alive
    heart.stop()
    assert look(redis, None, []).alive == {}, "gone at once, not after its TTL"


@needs_redis
def test_status_shows_the_workers_alive_by_heartbeat(boxes, server, redis):
    inbox, outbox = boxes
    Heart(redis, KEY, host="host-a", pid=101).taking("t1")
    Heart(redis, KEY, host="host-b", pid=202).beat()
    Heart(redis, b"x" * 32, host="host-c", pid=303).beat()  # sealed with another key: not counted
    args = ["status", "--inbox", str(inbox), "--outbox", str(outbox), "--broker", server.url]
    env = {"WORKER_BROKER_KEY": KEY.decode()}
    text = CliRunner().invoke(app, args, env=env).output
    assert "2 classify worker process(es) alive (1 busy), 0 batch(es) queued" in text, text
    report = json.loads(CliRunner().invoke(app, [*args, "--json"], env=env).output)
    assert [(w["host"], w["pid"], w["batch"]) for w in report["broker"]["workers"]] == \
        [("host-a", 101, "t1"), ("host-b", 202, None)]
