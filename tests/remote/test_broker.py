"""The pieces of ``--broker`` that need no Redis: the answer's round trip through its message, the
death counts that set a poison file aside (on a stand-in for Redis), the model a worker may
run, the settings. End to end with a real Redis: test_remote.py."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import errors
from factories import digit_stroke

from worker import defaults
from worker.daemon.settings import Settings
from worker.errors import ConfigError, InputError
from worker.model.classifier import Classifier, Scored
from worker.preprocess import Limits, LoadedInput
from worker.remote.answer_message import parse_answer
from worker.remote.classify_worker import Host, classify, encode, find_version
from worker.remote.liveness_messages import Heartbeat, Taken
from worker.remote.task_message import Task, TaskFile, pack_task, parse_task
from worker.urls import safe_url

REPLY_TO = "worker:answers:" + "0" * 32


def _task(task_id: str, files: list, version: str = "v1", limits: Limits | None = None) -> Task:
    return Task(task_id, ("mnist", version), tuple(TaskFile(*f) for f in files), limits or Limits(), REPLY_TO)


def test_an_answer_survives_its_message_with_errors_images_and_document_pages():
    pixels = np.zeros((28, 28, 1), np.float32)
    truncated = InputError("truncated", "a.png is cut short")
    truncated.bytes_read = 17
    loaded = [LoadedInput(pixels, "aa"), truncated,
              LoadedInput(pixels, "bb", pages=((1, pixels), (3, pixels)))]
    probabilities = np.eye(10, dtype=np.float32)[[4, 7, 2]]
    scored = Scored(probabilities, [[], ["low-margin"], []], np.array([0.5, 1.5, 0.25], np.float32))
    task = _task("t0", [["c1", "a", b"x"], ["c2", "b", b"y"], ["c3", "c", b"z"]])
    answer = parse_answer(encode(task, None, "v1", loaded, scored), None)
    scores = answer.check(["c1", "c2", "c3"], ("mnist", "v1"), 10)
    assert np.array_equal(scores.probabilities, probabilities) and scores.reviews == [[], ["low-margin"], []]
    assert np.array_equal(scores.review_scores, scored.review_scores)
    assert answer.files[1].error == ("truncated", "a.png is cut short", 17), \
        "a file still being written is told apart"
    assert answer.files[2].pages == (1, 3) and answer.files[0].pages == ()


def test_an_answer_with_no_good_file_has_no_scores():
    task = _task("t0", [["c1", "e", b"x"]])
    answer = parse_answer(encode(task, None, "v1", [InputError("empty", "e")], None), None)
    assert answer.check(["c1"], ("mnist", "v1"), 10) is None and answer.files[0].error[0] == "empty"


class DictRedis:
    """Enough of Redis for the death counts: INCR, EXPIRE, DELETE, pipelines; RPUSH for answers;
    SET for the heartbeat and taken records."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.lists: dict[str, list] = {}

    def pipeline(self):
        return Pipe(self)

    def incr(self, key):
        self.values[key] = self.values.get(key, 0) + 1
        return self.values[key]

    def expire(self, key, seconds):
        return True

    def delete(self, *keys):
        for key in keys:
            self.values.pop(key, None)

    def set(self, key, value, ex=None):
        self.values[key] = value

    def rpush(self, key, value):
        self.lists.setdefault(key, []).append(value)


class Pipe:
    def __init__(self, redis: DictRedis) -> None:
        self.redis, self.calls = redis, []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))

    def execute(self):
        return [getattr(self.redis, name)(*args, **kwargs) for name, args, kwargs in self.calls]


@pytest.fixture
def host(real_model_path):
    return Host(real_model_path.parent, "redis://unused", threads=1, redis=DictRedis())


def _png(data: np.ndarray) -> bytes:
    import cv2

    return cv2.imencode(".png", data)[1].tobytes()


def _run(host: Host, task_id: str, files: list):
    classifier = Classifier(defaults.MODEL, threads=1)
    classify(host, task_id, pack_task(_task(task_id, files, classifier.version), None))
    answer = parse_answer(host.redis.lists[REPLY_TO].pop(), None)
    assert answer.task_id == task_id
    return answer


@pytest.mark.slow
def test_a_file_in_hand_at_two_deaths_is_set_aside_and_the_others_answered(host):
    """The task as a worker runs it, after the deaths a poison file would have caused: the
    whole batch once, then the poison alone twice."""
    good = _png(255 - digit_stroke())
    files = [["c1", "one.png", good], ["c2", "poison.png", good], ["c3", "three.png", good]]
    host.redis.values.update({"worker:deaths:t1": 3, "worker:deaths:c2": 2})
    answer = _run(host, "t1", files)
    kinds = [item.error and item.error[0] for item in answer.files]
    assert kinds == [None, "worker-crashed", None]
    assert len(np.frombuffer(answer.probabilities, np.float32)) == 2 * 10
    assert [k for k in host.redis.values if not k.startswith("worker:alive:")] == [], \
        "counts and the taken record cleared once the batch is answered"


@pytest.mark.slow
def test_a_batch_a_worker_died_holding_once_is_run_a_file_at_a_time(host):
    good = _png(255 - digit_stroke())
    host.redis.values["worker:deaths:t2"] = 1
    answer = _run(host, "t2", [["c1", "a.png", good], ["c2", "b.png", b"not an image"]])
    assert answer.files[1].error[0] == "not-an-image"
    assert answer.files[0].error is None


@pytest.mark.slow
def test_a_version_the_worker_does_not_have_is_refused(host):
    classify(host, "t3", pack_task(_task("t3", [], "no-such-version"), None))
    answer = parse_answer(host.redis.lists[REPLY_TO].pop(), None)
    assert "no-such-version" in answer.refused


def test_find_version_takes_the_versioned_folder_or_nothing(tmp_path):
    (tmp_path / "mnist" / "abc").mkdir(parents=True)
    (tmp_path / "mnist" / "abc" / "mnist.json").write_text("{}")
    assert find_version(tmp_path, "mnist", "abc") == tmp_path / "mnist" / "abc" / "mnist.keras"
    assert find_version(tmp_path, "mnist", "other") is None
    assert find_version(tmp_path / "mnist", "..", "mnist/abc") is None, "a task cannot name a path"


def test_limits_travel_in_the_task():
    limits = Limits(max_pixels=123, max_pages=4)
    assert parse_task(pack_task(_task("t", [], limits=limits), None), "t", None).limits == limits


def test_the_password_never_reaches_the_log():
    assert safe_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert safe_url("redis://user:s3cret@host/0") == "redis://user:***@host/0"
    assert safe_url("redis://host:6379/0") == "redis://host:6379/0"
    assert "s3cret" not in Settings(broker="redis://:s3cret@h:1/0").describe()


def test_a_broker_that_is_not_redis_is_a_config_error(boxes):
    inbox, outbox = boxes
    with pytest.raises(ConfigError, match="Redis URL"):
        Settings(inbox=inbox, outbox=outbox, broker="amqp://host//").validate()
    with pytest.raises(ConfigError, match="in-flight"):
        Settings(inbox=inbox, outbox=outbox, in_flight=0).validate()


def test_a_batch_that_fails_on_the_worker_is_answered_as_refused(monkeypatch):
    """The watcher waits for an answer: a failure must reach it (it sends the batch again)."""
    host = Host(defaults.MODELS_DIR, "redis://unused", threads=1, redis=DictRedis())

    def broken(name, version):
        raise RuntimeError("out of file handles")

    monkeypatch.setattr(host, "classifier", broken)
    classify(host, "t4", pack_task(_task("t4", []), None))
    answer = parse_answer(host.redis.lists[REPLY_TO].pop(), None)
    assert answer.task_id == "t4" and "out of file handles" in answer.refused


class FakeBroker:
    """The watcher's side of Redis, recording sends; answers only what a test hands it."""

    up = True
    replies = REPLY_TO
    key = None

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.last: Task | None = None
        self.waiting: list[bytes] = []

    def send(self, task_id: str, args: list) -> bool:
        self.sent.append(task_id)
        self.last = parse_task(args, task_id, None)
        return True

    def answers(self, timeout: float = 0) -> list:
        answers, self.waiting = self.waiting, []
        return answers

    def restarted(self) -> bool:
        return False

    snapshot = None  # what the next look at the heartbeats sees (None: no look yet)
    forgotten: list[str] = []

    def liveness(self, task_ids, rejected):
        return self.snapshot

    def forget(self, task_id: str) -> None:
        self.forgotten = [*self.forgotten, task_id]


def test_a_batch_unanswered_too_long_is_sent_again_and_a_second_answer_dropped(boxes, fake_classifier):
    from worker.daemon.claims import Claims
    from worker.outbox.writer import Outbox
    from worker.remote.watcher import RemotePipeline

    inbox, outbox = boxes
    (inbox / "one.png").write_bytes(_png(255 - digit_stroke()))
    now = [1000.0]
    broker = FakeBroker()
    claims = Claims(inbox)
    pipeline = RemotePipeline(fake_classifier, Outbox(outbox, fake_classifier.class_names), claims,
                              broker=broker, in_flight=8, retry=5, resend_after=60, limits=Limits(),
                              decode_threads=1, clock=lambda: now[0])
    try:
        pipeline.process([claims.claim("one.png")])
        now[0] += 59
        pipeline.collect()
        assert len(broker.sent) == 1, "not yet overdue"
        now[0] += 2
        pipeline.collect()
        assert broker.sent == [broker.sent[0]] * 2, "sent again under the same task id"
        task = Task(broker.sent[0], ("fake", "fake-1"), broker.last.files, Limits(), REPLY_TO)
        answer = encode(task, None, "fake-1", [LoadedInput(np.zeros((28, 28, 1), np.float32), "ab")],
                        Scored(np.eye(10, dtype=np.float32)[[3]], [[]], None))
        broker.waiting = [answer, answer]  # both runs answered
        assert pipeline.collect() == 1 and not pipeline.busy()
    finally:
        pipeline.close()
        claims.close()
    assert [line.count('"label"') for line in (outbox / "predictions.jsonl").read_text().splitlines()] == [1]


def test_a_batch_of_unreadable_files_is_not_sent_and_each_gets_its_error(boxes, fake_classifier, tmp_path):
    from worker.daemon.claims import Claims
    from worker.outbox.writer import Outbox
    from worker.remote.watcher import RemotePipeline

    inbox, outbox = boxes
    (tmp_path / "elsewhere.png").write_bytes(_png(255 - digit_stroke()))
    (inbox / "link.png").symlink_to(tmp_path / "elsewhere.png")
    broker = FakeBroker()
    claims = Claims(inbox)
    pipeline = RemotePipeline(fake_classifier, Outbox(outbox, fake_classifier.class_names), claims,
                              broker=broker, in_flight=8, retry=5, resend_after=60, limits=Limits(),
                              decode_threads=1, clock=time.time)
    try:
        pipeline.process([claims.claim("link.png")])
        assert pipeline.collect() == 1 and broker.sent == []
    finally:
        pipeline.close()
        claims.close()
    [error] = errors(outbox)
    assert (error["file"], error["kind"]) == ("link.png", "not-a-regular-file")


def test_a_batch_whose_worker_is_gone_is_sent_again_at_once_and_counted(boxes, fake_classifier):
    from worker.daemon.claims import Claims
    from worker.daemon.metrics import Metrics
    from worker.outbox.writer import Outbox
    from worker.remote.liveness import Snapshot
    from worker.remote.watcher import RemotePipeline

    inbox, outbox = boxes
    (inbox / "one.png").write_bytes(_png(255 - digit_stroke()))
    broker, claims, metrics = FakeBroker(), Claims(inbox), Metrics()
    pipeline = RemotePipeline(fake_classifier, Outbox(outbox, fake_classifier.class_names), claims,
                              broker=broker, in_flight=8, retry=5, resend_after=600, limits=Limits(),
                              decode_threads=1, clock=time.monotonic, metrics=metrics)
    try:
        pipeline.process([claims.claim("one.png")])
        [task_id] = broker.sent
        alive = Heartbeat("host-b", 2, None, 0.0)
        broker.snapshot = Snapshot(alive={alive.worker: alive}, taken={task_id: Taken(task_id, "host-a", 1)})
        pipeline.collect()
        assert broker.sent == [task_id] * 2 and broker.forgotten == [task_id]
        assert metrics.registry.get_sample_value("worker_remote_resent_total", {"reason": "worker-gone"}) == 1
        assert metrics.registry.get_sample_value("worker_remote_workers_alive") == 1
        broker.snapshot = Snapshot(alive={alive.worker: alive}, taken={task_id: Taken(task_id, "host-b", 2)})
        pipeline.collect()
        assert broker.sent == [task_id] * 2, "taken again by a live worker: left alone"
        pipeline.drop_pending()  # unanswered: left claimed, no wait for it at close
    finally:
        pipeline.close()
        claims.close()
