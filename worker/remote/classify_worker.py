from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded

from worker import defaults
from worker.daemon.classify import model_inputs
from worker.errors import InputError, ModelError
from worker.model.artifact import card_path
from worker.model.classifier import Classifier, Scored
from worker.preprocess import Limits, LoadedInput, load_bytes
from worker.remote.answer_message import pack_answer
from worker.remote.broker import (
    ANSWER_SECONDS,
    BATCH_SECONDS,
    TASK,
    check_version,
    make_app,
    redis_client,
    time_limits,
)
from worker.remote.liveness import Heart
from worker.remote.messages import Rejected
from worker.remote.task_message import Task, parse_task

log = logging.getLogger(__name__)

DEATHS_KEY = "worker:deaths:{}"  # by task id (the batch) and by claim id (a file)
DEATHS_SECONDS = 24 * 3600
KEPT_MODELS = 2  # versions kept loaded: the one serving and the one being rolled to


class Host:
    """What one worker process keeps between tasks: its models, loaded on first use, its
    Redis connection for the death counts and answers (``redis``: a client given, or one made
    at first use), the shared key and a batch's time."""

    def __init__(self, models: Path, broker: str, threads: int, *, key: bytes | None = None,
                 batch_seconds: float = BATCH_SECONDS, redis=None, clock=time.monotonic) -> None:
        self.models = Path(models)
        self.broker = broker
        self.threads = threads
        self.key = key
        self.batch_seconds = batch_seconds
        self.clock = clock
        self.name = socket.gethostname()
        self._classifiers: dict[tuple[str, str], Classifier] = {}
        self._redis = redis
        self._heart: Heart | None = None

    def classifier(self, name: str, version: str) -> Classifier:
        key = (name, version)
        if key not in self._classifiers:
            path = find_version(self.models, name, version)
            if path is None:
                raise ModelError(f"{self.name} has no model {name} version {version} in {self.models}")
            classifier = Classifier(path, threads=self.threads)
            if classifier.version != version:
                raise ModelError(f"{path} is version {classifier.version}, not {version}")
            while len(self._classifiers) >= KEPT_MODELS:
                self._classifiers.pop(next(iter(self._classifiers)))
            self._classifiers[key] = classifier
        return self._classifiers[key]

    @property
    def redis(self):
        if self._redis is None:
            self._redis = redis_client(self.broker)
        return self._redis

    @property
    def heart(self) -> Heart:
        """This process's heartbeat (a pool process is forked after the Host is made: each
        has its own, named by its pid)."""
        if self._heart is None or self._heart.pid != os.getpid():
            self._heart = Heart(self.redis, self.key)
        return self._heart

    def answer(self, task: Task, frame: bytes) -> None:
        """Push the answer on the watcher's list. A list that is a key of another type (a
        forged ``reply_to``), or any refusal of Redis' own, drops it with one log line: the
        watcher sends an unanswered batch again. Redis being away raises (the task goes back)."""
        from redis.exceptions import ResponseError

        pipe = self.redis.pipeline()
        pipe.rpush(task.reply_to, frame)
        pipe.expire(task.reply_to, ANSWER_SECONDS)
        try:
            pipe.execute()
        except ResponseError as exc:
            log.error("batch %s cannot be answered on %s (%s): dropped", task.task_id, task.reply_to, exc)

    def died_holding(self, key: str) -> int:
        """How many workers died with this in hand before; counts this try as one more
        until ``done(key)``."""
        pipe = self.redis.pipeline()
        pipe.incr(DEATHS_KEY.format(key))
        pipe.expire(DEATHS_KEY.format(key), DEATHS_SECONDS)
        return int(pipe.execute()[0]) - 1

    def done(self, *keys: str) -> None:
        self.redis.delete(*(DEATHS_KEY.format(k) for k in keys))


def find_version(models: Path, name: str, version: str) -> Path | None:
    """``models/<name>/<version>/<name>.keras``, or the plain ``models/<name>.keras`` if that
    is the version (a model kept without versions). Names that would leave the folder are none."""
    if any("/" in part or part.startswith(".") or not part for part in (name, version)):
        return None
    for path in (models / name / version / f"{name}.keras", models / f"{name}.keras"):
        if card_path(path).is_file():
            return path
    return None


def classify(host: Host, task_id: str, args) -> None:
    """The task: ``args`` are a ``broker_messages`` task; its answer (or a refusal) is pushed on
    the watcher's list. The watcher waits for an answer, so a batch that fails here is answered
    too, as refused (it sends it again later). A task that fails its checks is dropped with one
    log line. Only Redis being away escapes (the task then goes back on the queue: see ``run``)."""
    from redis.exceptions import ConnectionError as RedisAway
    from redis.exceptions import TimeoutError as RedisSlow

    try:
        task = parse_task(args, task_id, host.key)
    except Rejected as exc:
        log.error("task %s dropped, not answered: %s", task_id, exc)
        return
    host.heart.taking(task_id)  # before any work: the watcher sees who has it
    try:
        frame = _answer(host, task)
    except (RedisAway, RedisSlow):
        host.heart.done(task_id)
        raise
    except Exception as exc:  # noqa: BLE001 - whatever it is, the watcher must hear of it
        log.exception("batch %s failed", task_id)
        frame = pack_answer(task_id, host.key, refused=f"{host.name} failed on the batch: {exc!r}")
    try:
        host.answer(task, frame)
    finally:
        host.heart.done(task_id)


def _answer(host: Host, task: Task) -> bytes:
    try:
        classifier = host.classifier(*task.model)
    except ModelError as exc:
        log.error("refused a batch: %s", exc)
        return pack_answer(task.task_id, host.key, refused=str(exc))
    batch = Batch(classifier, task.limits, host.clock() + host.batch_seconds, host.clock)
    if host.died_holding(task.task_id):
        log.warning("batch %s was in hand when a worker died: running it a file at a time", task.task_id)
        loaded, scored = _one_at_a_time(host, batch, task.files)
    else:
        loaded = [batch.load(f.data, f.name) for f in task.files]
        scored = _score(classifier, loaded)
    host.done(task.task_id)
    return encode(task, host.key, classifier.version, loaded, scored)


@dataclasses.dataclass
class Batch:
    """A batch's model, limits and deadline: each document's decode deadline is cut to the
    batch's time left, and a file not started in time is ``too-slow``."""

    classifier: Classifier
    limits: Limits
    deadline: float
    clock: Callable[[], float]

    def load(self, data: bytes, name: str) -> LoadedInput | InputError:
        left = self.deadline - self.clock()
        if left <= 0:
            return InputError("too-slow", f"{name} was not decoded within the batch's time on the classify "
                                          "worker (its batch held other slow files); drop it again alone")
        limits = dataclasses.replace(self.limits, decode_seconds=min(self.limits.decode_seconds, left))
        try:
            return _load(data, name, self.classifier, limits)
        except SoftTimeLimitExceeded:  # Celery's backstop: the batch is answered now
            self.deadline = float("-inf")
            return InputError("too-slow", f"{name} was still being decoded at the batch's time limit")


def _one_at_a_time(host: Host, batch: Batch, files) -> tuple[list, Scored | None]:
    loaded, parts = [], []
    for file in files:
        deaths = host.died_holding(file.claim_id)
        if deaths >= defaults.CRASHES_BEFORE_SET_ASIDE:
            log.error("%s was in hand each time a worker died (%d times): set aside", file.name, deaths)
            item = InputError("worker-crashed", f"{file.name} was being classified each time a classify "
                                                f"worker died ({deaths} times); set aside so the others "
                                                "go on")
        else:
            item = batch.load(file.data, file.name)
            if not isinstance(item, InputError):
                parts.append(_score(batch.classifier, [item]))
        host.done(file.claim_id)
        loaded.append(item)
    return loaded, _joined(parts)


def _load(data: bytes, name: str, classifier: Classifier, limits) -> LoadedInput | InputError:
    try:
        return load_bytes(data, classifier.profile, name=name, limits=limits)
    except InputError as exc:
        return exc
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:  # noqa: BLE001 - a decoder bug fails its file, not the batch
        log.exception("unexpected error reading %s", name)
        return InputError("internal", f"unexpected error reading {name}: {exc}")


def _score(classifier: Classifier, loaded: list) -> Scored | None:
    inputs = model_inputs(loaded)
    return None if inputs is None else classifier.predict(inputs)


def _joined(parts: list[Scored]) -> Scored | None:
    if not parts:
        return None
    scores = None if parts[0].review_scores is None else np.concatenate([p.review_scores for p in parts])
    return Scored(np.concatenate([p.probabilities for p in parts]),
                  [r for p in parts for r in p.reviews], scores)


def encode(task: Task, key: bytes | None, version: str, loaded: list, scored: Scored | None) -> bytes:
    """The answer: each file's claim id with its error or its pages, then the scores of the
    model inputs in order (a document gives one per page with ink)."""
    files = []
    for file, item in zip(task.files, loaded, strict=True):
        if isinstance(item, InputError):
            files.append({"id": file.claim_id, "error": [item.kind, item.message, item.bytes_read]})
        else:
            files.append({"id": file.claim_id, "pages": [n for n, _ in item.pages]})
    scores = {}
    if scored is not None:
        scores["probabilities"] = np.ascontiguousarray(scored.probabilities, np.float32).tobytes()
        scores["reviews"] = [list(r) for r in scored.reviews]
        if scored.review_scores is not None:
            scores["scores"] = np.ascontiguousarray(scored.review_scores, np.float32).tobytes()
    return pack_answer(task.task_id, key, model=(task.model[0], version), files=files, **scores)


_host: Host | None = None


def _beat_in_each_process() -> None:
    """Each pool process keeps its own heartbeat from its start to its stop."""
    from celery.signals import worker_process_init, worker_process_shutdown

    @worker_process_init.connect(weak=False)
    def start(**_) -> None:
        _host.heart.start()

    @worker_process_shutdown.connect(weak=False)
    def stop(**_) -> None:
        _host.heart.stop()


def _keep_our_logging(loglevel: str) -> None:
    """Celery logs through the handler the CLI set up, in the format of every other command (the
    journal's priorities under systemd), not in a format of its own: any receiver of its
    ``setup_logging`` signal makes it leave logging alone, in the main and the pool processes.
    ``loglevel`` is then the level of Celery's own loggers. Its warning about running as root
    (several lines, through ``warnings``) is said once, as one line of ours."""
    from celery.exceptions import SecurityWarning
    from celery.signals import setup_logging
    from celery.utils.log import get_multiprocessing_logger

    @setup_logging.connect(weak=False)
    def keep(**_) -> None:
        logging.getLogger("celery").setLevel(loglevel.upper())
        pool = get_multiprocessing_logger()  # billiard's: it keeps its lines from ours unless told
        pool.propagate = True
        pool.setLevel(logging.ERROR)

    warnings.filterwarnings("ignore", category=SecurityWarning)
    if os.geteuid() == 0:
        log.warning("running as root, which a classify worker does not need: the installed unit "
                    "runs it as user worker")


def run(broker: str, *, models: Path, concurrency: int, threads: int, visibility_timeout: float,
        batch_seconds: float | None = None, key: bytes | None = None, loglevel: str = "INFO") -> None:
    """Start the Celery worker (it returns when the worker is stopped). ConfigError for time
    limits that do not fit the visibility timeout or a Redis too old."""
    from redis.exceptions import RedisError

    global _host
    limits = time_limits(batch_seconds, visibility_timeout)
    _host = Host(models, broker, threads, key=key, batch_seconds=limits.batch)
    try:
        check_version(_host.redis, broker)
    except RedisError as exc:  # not there yet: Celery waits it out; the watcher checks too
        log.warning("cannot check the Redis version yet (%s)", exc)
    app = make_app(broker, visibility_timeout=visibility_timeout, limits=limits)
    _beat_in_each_process()
    _keep_our_logging(loglevel)

    @app.task(name=TASK, bind=True)
    def classify_task(task, *args, **kwargs) -> None:
        from celery.exceptions import Reject
        from redis.exceptions import ConnectionError as RedisAway
        from redis.exceptions import TimeoutError as RedisSlow

        try:
            classify(_host, task.request.id, list(args))
        except (RedisAway, RedisSlow) as exc:  # no answer could be given: back on the queue, for later
            raise Reject(str(exc), requeue=True) from exc

    # --quiet: no banner (its lines are in no log format; the start is logged in ours)
    app.worker_main(["--quiet", "worker", "--pool", "prefork", "--concurrency", str(concurrency),
                     "--queues", app.conf.task_default_queue, "--loglevel", loglevel,
                     "--hostname", f"classify-{os.getpid()}@%h",
                     "--without-gossip", "--without-mingle"])
