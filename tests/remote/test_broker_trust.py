"""What ``--broker`` trusts (issue 23): a value anyone pushed on the watcher's reply list, a
forged or damaged answer, a task whose ``reply_to`` is a key of another type, a batch that
outlasts its time, the Redis URL and its password, a Redis too old. Each is dropped, counted
and logged, or refused at start with one line; none stops the watcher or the worker, and no
forged answer becomes a row. Real Redis (Debian's redis-server on a free loopback port) where
the edge is Redis itself."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
from conftest import FakeClassifier, errors
from factories import digit_stroke
from hypothesis import given, settings
from hypothesis import strategies as st
from services import REDIS_SERVER
from typer.testing import CliRunner

from worker import defaults
from worker.cli import app
from worker.daemon.metrics import Metrics
from worker.errors import ConfigError
from worker.preprocess import Limits
from worker.remote.answer_message import pack_answer, parse_answer
from worker.remote.broker import BATCH_SECONDS, broker_url, load_key, make_app, time_limits
from worker.remote.classify_worker import Host, classify
from worker.remote.task_message import Task, TaskFile, pack_task, parse_task

needs_redis = pytest.mark.skipif(not os.path.exists(REDIS_SERVER), reason="needs Debian's redis-server")
KEY = b"k" * 32


def _png() -> bytes:
    import cv2

    return cv2.imencode(".png", 255 - digit_stroke())[1].tobytes()


class Watching:
    """A watcher's pipeline with one file out: a real Broker on a real Redis, the fake model."""

    def __init__(self, boxes, fake_classifier, url: str, key: bytes | None = None) -> None:
        from worker.daemon.claims import Claims
        from worker.outbox.writer import Outbox
        from worker.remote.connection import Broker
        from worker.remote.watcher import RemotePipeline

        inbox, self.outbox = boxes
        self.data = _png()
        (inbox / "seven.png").write_bytes(self.data)
        self.metrics = Metrics()
        self.broker = Broker(url, key=key)
        self.claims = Claims(inbox)
        self.pipeline = RemotePipeline(fake_classifier, Outbox(self.outbox, fake_classifier.class_names),
                                       self.claims, broker=self.broker, in_flight=8, retry=5,
                                       resend_after=600, limits=Limits(), decode_threads=1,
                                       clock=time.monotonic,
                                       metrics=self.metrics)
        self.pipeline.process([self.claims.claim("seven.png")])
        [self.flight] = self.pipeline.flights

    def push(self, *values: bytes) -> int:
        """Push on the reply list as anyone reaching Redis could; returns the files finished."""
        self.broker.redis.rpush(self.broker.replies, *values)
        return self.pipeline.collect()

    def rejected(self, reason: str) -> float:
        return self.metrics.registry.get_sample_value("worker_broker_rejected_total", {"reason": reason}) or 0

    def close(self) -> None:
        self.pipeline.close()
        self.claims.close()


@pytest.fixture
def watching(boxes, fake_classifier, redis):
    made = []

    def start(key: bytes | None = None) -> Watching:
        made.append(Watching(boxes, fake_classifier, redis.url, key))
        return made[-1]

    yield start
    for one in made:
        one.close()


def _answer(flight, key: bytes | None, *, label: int = 7, **changes) -> bytes:
    """An answer to ``flight`` as a worker would give it (one image, ``label`` sure), changed."""
    task_id = changes.pop("task_id", flight.task_id)
    fields = {"model": (flight.classifier.name, flight.classifier.version),
              "files": [{"id": f.claim_id, "pages": []} for f in flight.files],
              "probabilities": np.eye(10, dtype=np.float32)[[label]].tobytes(), "reviews": [[]]}
    fields.update(changes)
    return pack_answer(task_id, key, **fields)


def _rows(outbox) -> list[str]:
    path = outbox / "predictions.jsonl"
    return path.read_text().splitlines() if path.exists() else []


# -- 1. a value that is not msgpack on the reply list -------------------------------------------

@needs_redis
def test_garbage_on_the_reply_list_is_dropped_counted_and_logged_once(watching, caplog):
    one = watching()
    garbage = [b"\xc1 not msgpack", b"", msgpack.packb({"a": 1}), msgpack.packb([1, 2, 3]), b"\x92\xc4"]
    assert one.push(*garbage) == 0, "nothing finished, nothing raised"
    assert one.push(b"\xc1 again") == 0
    assert one.rejected("malformed") == len(garbage) + 1
    assert sum("dropped" in r.message for r in caplog.records) == 1, "one line, not one a message"
    assert one.pipeline.busy(), "the batch still waits for its real answer"
    assert one.push(_answer(one.flight, None)) == 1
    assert [line.count('"label": "7"') for line in _rows(one.outbox)] == [1]


# -- 2. answers checked; sha256 ours; with a key, sealed ----------------------------------------

@needs_redis
def test_a_forged_answer_of_the_old_form_never_becomes_a_row(watching):
    """The form a forger copied from a queued task before: a '7' as 1, sha256 all zeros."""
    one = watching()
    forged = {"version": one.flight.classifier.version, "files": [{"sha256": "0" * 64, "pages": []}],
              "probabilities": np.eye(10, dtype=np.float32)[[1]].tobytes(), "reviews": [[]], "scores": None}
    one.push(msgpack.packb([one.flight.task_id, forged]))
    assert _rows(one.outbox) == [] and one.pipeline.busy()


@needs_redis
@pytest.mark.parametrize(("changes", "reason"), [
    ({"model": ("fake", "another-version")}, "wrong-model"),
    ({"model": ("other-model", "fake-1")}, "wrong-model"),
    ({"files": [{"id": "not-sent", "pages": []}]}, "wrong-files"),
    ({"files": []}, "wrong-files"),
    ({"probabilities": np.full((1, 10), 0.5, np.float32).tobytes()}, "bad-scores"),
    ({"probabilities": np.array([[np.nan] + [0.0] * 9], np.float32).tobytes()}, "bad-scores"),
    ({"probabilities": np.array([[2.0, -1.0] + [0.0] * 8], np.float32).tobytes()}, "bad-scores"),
    ({"probabilities": np.eye(10, dtype=np.float32)[[1, 2]].tobytes()}, "bad-scores"),
    ({"reviews": [["rm -rf"]]}, "schema"),
    ({"task_id": "f" * 32}, "unknown-task"),
], ids=lambda v: v if isinstance(v, str) else "-".join(v))
def test_an_answer_that_does_not_fit_its_batch_is_dropped(watching, changes, reason):
    one = watching()
    assert one.push(_answer(one.flight, None, **changes)) == 0
    assert one.rejected(reason) == 1 and _rows(one.outbox) == []
    assert one.push(_answer(one.flight, None)) == 1, "the real answer is still taken"


@needs_redis
def test_the_sha256_is_the_watchers_own_and_the_answer_is_taken_once(watching):
    one = watching()
    genuine = _answer(one.flight, None)
    assert one.push(genuine, genuine) == 1
    assert one.push(genuine) == 0
    assert one.rejected("duplicate") == 2
    [row] = _rows(one.outbox)
    assert f'"sha256": "{hashlib.sha256(one.data).hexdigest()}"' in row


@needs_redis
def test_with_a_key_an_answer_without_its_seal_is_dropped(watching):
    one = watching(KEY)
    assert one.push(_answer(one.flight, None), _answer(one.flight, b"another key, long enough")) == 0
    assert (one.rejected("unsigned"), one.rejected("bad-seal")) == (1, 1) and _rows(one.outbox) == []
    assert one.push(_answer(one.flight, KEY)) == 1


@needs_redis
def test_with_a_key_the_task_is_sealed(watching, redis):
    """The Celery message on the queue carries [body, seal]; the seal is the key's."""
    import base64
    import hmac
    import json

    one = watching(KEY)
    message = json.loads(one.broker.redis.lindex("worker.classify", 0))
    body, seal = msgpack.unpackb(base64.b64decode(message["body"]))[0]

    assert seal == hmac.new(KEY, b"task\0" + body, hashlib.sha256).digest()


class ListRedis:
    """Enough of Redis for a worker's answers, death counts and taken records, keeping what was
    pushed and set."""

    def __init__(self) -> None:
        self.pushed: list[tuple[str, bytes]] = []
        self.counts: dict[str, int] = {}
        self.values: dict[str, bytes] = {}

    def set(self, key, value, ex=None):
        self.values[key] = value

    def pipeline(self):
        return self

    def rpush(self, key, value):
        self.pushed.append((key, value))

    def incr(self, key):
        self.counts[key] = self.counts.get(key, 0) + 1

    def expire(self, key, seconds):
        pass

    def execute(self):
        return [max(self.counts.values(), default=1)]

    def delete(self, *keys):
        for key in keys:
            self.counts.pop(key, None)


REPLY_TO = "worker:answers:" + "a" * 32
ONE_FILE = (TaskFile("c1", "a.png", b"x"),)


def _task_args(key: bytes | None, *, task_id: str = "t1", version: str = "no-such-version",
               reply_to: str = REPLY_TO, files=ONE_FILE) -> list[bytes]:
    return pack_task(Task(task_id, ("mnist", version), tuple(files), Limits(), reply_to), key)


def test_with_a_key_a_worker_drops_a_task_without_its_seal_unanswered(tmp_path, caplog):
    store = ListRedis()
    host = Host(tmp_path, "redis://unused", 1, key=KEY, redis=store)
    classify(host, "t1", _task_args(None))
    classify(host, "t1", _task_args(b"another key, long enough"))
    classify(host, "t2", _task_args(KEY))  # sealed, but under another task id
    assert store.pushed == [], "never answered: its reply_to is not to be trusted"
    assert sum("dropped" in r.message for r in caplog.records) == 3
    classify(host, "t1", _task_args(KEY))
    [(key, frame)] = store.pushed
    assert key == REPLY_TO and "no-such-version" in parse_answer(frame, KEY).refused


def test_a_task_naming_a_list_that_is_not_an_answer_list_is_dropped(tmp_path):
    store = ListRedis()
    host = Host(tmp_path, "redis://unused", 1, redis=store)
    for reply_to in ("worker.classify", "worker:deaths:x", "unacked"):
        classify(host, "t1", _task_args(None, reply_to=reply_to))
    assert store.pushed == []


# -- 3. a reply_to of another type: answered or dropped once, never requeued ---------------------

@needs_redis
def test_a_reply_to_of_another_type_is_dropped_with_one_line(redis, tmp_path, caplog):
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    client.set(REPLY_TO, "a string, not a list")
    host = Host(tmp_path, redis.url, 1, redis=client)
    classify(host, "t1", _task_args(None))  # refused (no such model), and that answer cannot be pushed
    lines = [r.message for r in caplog.records if "cannot be answered" in r.message]
    assert len(lines) == 1 and "WRONGTYPE" in lines[0]
    assert client.get(REPLY_TO) == b"a string, not a list"


# -- 4. a batch's time: inside the visibility timeout ---------------------------------------------

def test_celery_time_limits_end_inside_the_visibility_timeout():
    conf = make_app("redis://unused", visibility_timeout=300,
                    limits=time_limits(BATCH_SECONDS, 300)).conf
    assert BATCH_SECONDS < conf.task_soft_time_limit < conf.task_time_limit < 300
    assert time_limits(None, 3).hard < 3, "tied: a short visibility timeout shortens the batch"
    with pytest.raises(ConfigError, match="visibility-timeout"):
        time_limits(300, 300)


def test_a_batch_timeout_past_the_visibility_timeout_is_exit_78(tmp_path):
    result = CliRunner().invoke(app, ["classify-worker", "--broker", "redis://127.0.0.1:1/0", "--models",
                                      str(tmp_path), "--visibility-timeout", "300", "--batch-timeout", "300"])
    assert result.exit_code == 78, result.output
    assert "--visibility-timeout" in result.output


@pytest.mark.slow
def test_a_batch_out_of_time_answers_its_other_files_as_too_slow(monkeypatch):
    """Each file takes 6 s of a 10 s batch: the first two decode (each with what is left of the batch
    as its decode deadline), the third is answered too-slow without being opened."""
    import worker.remote.classify_worker as classify_worker
    from worker.model.classifier import Classifier

    now = [0.0]
    deadlines = []
    real = classify_worker.load_bytes

    def slow_load(data, *args, limits, **kwargs):
        deadlines.append(limits.decode_seconds)
        now[0] += 6
        return real(data, *args, limits=limits, **kwargs)

    monkeypatch.setattr(classify_worker, "load_bytes", slow_load)
    store = ListRedis()
    host = Host(defaults.MODELS_DIR, "redis://unused", 1, batch_seconds=10, redis=store, clock=lambda: now[0])
    served = Classifier(defaults.MODEL, threads=1)
    files = [TaskFile(f"c{i}", f"{i}.png", _png()) for i in range(3)]
    args = _task_args(None, version=served.version, files=files)
    classify(host, "t1", args)
    answer = parse_answer(store.pushed[0][1], None)
    assert [f.error and f.error[0] for f in answer.files] == [None, None, "too-slow"]
    assert deadlines == [10.0, 4.0], "a decode never outlasts the batch"
    assert answer.check(["c0", "c1", "c2"], ("mnist", served.version), 10) is not None


# -- 5. the URL and its password, the key, the Redis version --------------------------------------

def test_the_broker_url_comes_from_a_file(tmp_path):
    url_file = tmp_path / "broker.url"
    url_file.write_text("redis://:s3cret@redis-host:6379/0\n")
    assert broker_url(None, url_file) == "redis://:s3cret@redis-host:6379/0"
    assert broker_url("redis://h/0", None) == "redis://h/0"
    with pytest.raises(ConfigError, match="not both"):
        broker_url("redis://h/0", url_file)
    with pytest.raises(ConfigError, match="cannot read"):
        broker_url(None, tmp_path / "missing")


@needs_redis
def test_status_reads_the_broker_url_from_a_file(boxes, redis, tmp_path):
    inbox, outbox = boxes
    url_file = tmp_path / "broker.url"
    url_file.write_text(redis.url + "\n")
    result = CliRunner().invoke(app, ["status", "--inbox", str(inbox), "--outbox", str(outbox),
                                      "--broker-url-file", str(url_file), "--json"])
    assert '"reachable": true' in result.output, result.output


def test_the_key_comes_from_a_file_or_the_environment(tmp_path):
    key_file = tmp_path / "broker.key"
    key_file.write_text("0123456789abcdef0123456789abcdef\n")
    assert load_key(key_file, environ={}) == b"0123456789abcdef0123456789abcdef"
    assert load_key(None, environ={"WORKER_BROKER_KEY": " from-the-environment-0123 "}) == \
        b"from-the-environment-0123"
    assert load_key(None, environ={}) is None
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        load_key(None, environ={"WORKER_BROKER_KEY": "short"})


class OldRedis:
    def info(self, section):
        return {"run_id": "r1", "redis_version": "6.0.16"}


def test_a_redis_older_than_6_2_is_exit_78_in_one_line(boxes, monkeypatch):
    import worker.remote.connection as remote

    monkeypatch.setattr(remote, "redis_client", lambda url: OldRedis())
    inbox, outbox = boxes
    result = CliRunner().invoke(app, ["-q", "watch", "--once", "--inbox", str(inbox), "--outbox", str(outbox),
                                      "--broker", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 78, result.output
    assert "6.0.16" in result.output and "6.2" in result.output
    assert len(result.output.strip().splitlines()) == 1


@needs_redis
def test_a_file_the_worker_refused_gets_its_error_record(watching):
    one = watching()
    files = [{"id": one.flight.files[0].claim_id, "error": ["not-an-image", "seven.png is no image", 12]}]
    assert one.push(_answer(one.flight, None, files=files, probabilities=None, reviews=[])) == 1
    [error] = errors(one.outbox)
    assert (error["file"], error["kind"]) == ("seven.png", "not-an-image")


# -- fuzz: random and mutated messages, both ways ------------------------------------------------

FUZZ_EXAMPLES = int(os.environ.get("WORKER_FUZZ_EXAMPLES", "25"))
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=40)
    | st.binary(max_size=64),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)


def _mutated(data: bytes, draw) -> bytes:
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        how = draw(st.sampled_from(["flip", "cut", "insert"]))
        if how == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


class MemoryBroker:
    """The watcher's side of Redis in memory: tasks sent are kept, answers handed in by the test."""

    up = True
    replies = REPLY_TO

    def __init__(self, key: bytes | None) -> None:
        self.key = key
        self.sent: list[list[bytes]] = []
        self.waiting: list[bytes] = []

    def send(self, task_id, args) -> bool:
        self.sent.append(args)
        return True

    def answers(self, timeout: float = 0) -> list[bytes]:
        answers, self.waiting = self.waiting, []
        return answers

    def restarted(self) -> bool:
        return False

    def liveness(self, task_ids, rejected):
        return None

    def forget(self, task_id) -> None:
        pass


def _forgeries(draw, flight, key) -> list[bytes]:
    """Random bytes, random msgpack, forged ids; with a key also a genuine answer mutated and
    random fields in the right frame (without one, some of those are well-formed answers: what
    the key is for)."""
    forged_ids = _answer(flight, None, task_id=draw(st.sampled_from(["0" * 32, "x"])))
    anyone = [draw(st.binary(max_size=200)), msgpack.packb(draw(msgpack_values)), forged_ids]
    if key is None:
        return anyone
    ours = {"task": flight.task_id, "model": {"name": "fake", "version": "fake-1"},
            "files": [{"id": flight.files[0].claim_id, "pages": []}],
            "probabilities": np.eye(10, dtype=np.float32)[[1]].tobytes(), "reviews": [[]], "scores": None}
    field = draw(st.sampled_from(sorted(ours)))
    body = msgpack.packb({**ours, field: draw(msgpack_values)}, use_bin_type=True)
    forged_seal = msgpack.packb([body, draw(st.binary(max_size=40))])
    return [*anyone, _mutated(_answer(flight, key), draw), forged_seal]


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(data=st.data(), key=st.sampled_from([KEY, None]))
def test_fuzzed_answers_never_stop_the_watcher_and_never_become_a_row(data, key):
    from worker.daemon.claims import Claims
    from worker.outbox.writer import Outbox
    from worker.remote.watcher import RemotePipeline

    fake = FakeClassifier()
    with tempfile.TemporaryDirectory() as tmp:
        inbox, outbox = Path(tmp) / "inbox", Path(tmp) / "outbox"
        inbox.mkdir()
        image = _png()
        (inbox / "seven.png").write_bytes(image)
        broker, claims = MemoryBroker(key), Claims(inbox)
        pipeline = RemotePipeline(fake, Outbox(outbox, fake.class_names), claims,
                                  broker=broker, in_flight=8, retry=5, resend_after=600, limits=Limits(),
                                  decode_threads=1, clock=time.monotonic, metrics=Metrics())
        try:
            pipeline.process([claims.claim("seven.png")])
            [flight] = pipeline.flights
            broker.waiting = _forgeries(data.draw, flight, key)
            assert pipeline.collect() == 0 and _rows(outbox) == []
            broker.waiting = [_answer(flight, key)]
            assert pipeline.collect() == 1
            [row] = _rows(outbox)
            assert hashlib.sha256(image).hexdigest() in row and '"label": "7"' in row
        finally:
            pipeline.close()
            claims.close()


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(data=st.data())
def test_fuzzed_tasks_never_stop_the_worker_and_unsealed_ones_are_never_answered(data):
    store = ListRedis()
    host = Host(Path(tempfile.gettempdir()) / "no-models-here", "redis://unused", 1, key=KEY, redis=store)
    genuine = _task_args(KEY)
    args = data.draw(st.sampled_from([
        [_mutated(genuine[0], data.draw), genuine[1]],
        [genuine[0], _mutated(genuine[1], data.draw)],
        data.draw(st.lists(msgpack_values, max_size=4)),
        [msgpack.packb(data.draw(msgpack_values)), data.draw(st.binary(max_size=40))],
    ]))
    classify(host, data.draw(st.sampled_from(["t1", "x" * 65, ""])), args)
    assert store.pushed == [] or args == genuine


def test_a_task_may_tighten_the_workers_limits_but_never_loosen_them():
    """Whoever may queue a task (anyone on an unshared Redis) must not switch off the size
    and bomb limits of the worker that decodes it."""
    loose = Limits(max_pixels=2**62, max_bytes=2**62, max_pages=10**9, decode_seconds=10**6)
    task = parse_task(pack_task(Task("t1", ("mnist", "v"), (), loose, REPLY_TO), None), "t1", None)
    assert task.limits == Limits()
    tight = Limits(max_pixels=1000, decode_seconds=1.0)
    task = parse_task(pack_task(Task("t1", ("mnist", "v"), (), tight, REPLY_TO), None), "t1", None)
    assert task.limits.max_pixels == 1000 and task.limits.decode_seconds == 1.0
