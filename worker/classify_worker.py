"""``worker classify-worker``: a Celery worker that classifies the batches a watcher sends.

A task names the model (name and version) and carries each file's claim id, name and bytes;
the answer is each file's error or digest and page numbers, and the batch's scores (the
calibrated probabilities and review of each model input). The worker runs the version the
task names, found in its models folder (``models/<name>/<version>/``), or refuses the task:
it never answers with another model than the one the rows will name.

A worker may be killed in the middle of a batch (kill -9, out of memory, a decoder that
crashes the process): the task goes back to the queue and another worker takes it. A file
that kills every worker that opens it must not keep the batch going round for ever, so deaths
are counted in Redis, which outlives the process. A first try runs the batch whole; a batch
that was in hand when a worker died is run again a file at a time, each file's count raised
while it is in hand and cleared after; a file in hand at ``CRASHES_BEFORE_SET_ASIDE`` deaths
is answered as ``worker-crashed`` without being opened, and the rest of its batch goes on.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import numpy as np

from worker import defaults
from worker.broker import ANSWER_SECONDS, TASK, limits_from_dict, make_app, redis_client
from worker.classify import model_inputs
from worker.errors import InputError, ModelError
from worker.model import Classifier, Scored, card_path
from worker.preprocess import LoadedInput, load_bytes

log = logging.getLogger(__name__)

DEATHS_KEY = "worker:deaths:{}"  # by task id (the batch) and by claim id (a file)
DEATHS_SECONDS = 24 * 3600
KEPT_MODELS = 2  # versions kept loaded: the one serving and the one being rolled to


class Host:
    """What one worker process keeps between tasks: its models, loaded on first use, and its
    Redis connection for the death counts."""

    def __init__(self, models: Path, broker: str, threads: int) -> None:
        self.models = Path(models)
        self.broker = broker
        self.threads = threads
        self.name = socket.gethostname()
        self._classifiers: dict[tuple[str, str], Classifier] = {}
        self._redis = None

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

    def answer(self, reply_to: str, task_id: str, answer: dict) -> None:
        import msgpack

        pipe = self.redis.pipeline()
        pipe.rpush(reply_to, msgpack.packb([task_id, answer]))
        pipe.expire(reply_to, ANSWER_SECONDS)
        pipe.execute()

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


def classify(host: Host, task_id: str, model: dict, files: list, limits: dict, reply_to: str) -> None:
    """The task: ``files`` are ``[claim_id, name, bytes]``; the answer (``encode``'s, or a
    refusal) is pushed on the watcher's list ``reply_to``. The watcher waits for an answer, so
    a batch that fails here is answered too, as refused (it sends it again later); only Redis'
    own errors escape (the task then goes back on the queue: see ``run``)."""
    from redis.exceptions import RedisError

    try:
        answer = _answer(host, task_id, model, files, limits)
    except RedisError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever it is, the watcher must hear of it
        log.exception("batch %s failed", task_id)
        answer = {"refused": f"{host.name} failed on the batch: {exc!r}"}
    host.answer(reply_to, task_id, answer)


def _answer(host: Host, task_id: str, model: dict, files: list, limits: dict) -> dict:
    try:
        classifier = host.classifier(model["name"], model["version"])
    except ModelError as exc:
        log.error("refused a batch: %s", exc)
        return {"refused": str(exc)}
    limits = limits_from_dict(limits)
    if host.died_holding(task_id):
        log.warning("batch %s was in hand when a worker died: running it a file at a time", task_id)
        loaded, scored = _one_at_a_time(host, classifier, files, limits)
    else:
        loaded = [_load(data, name, classifier, limits) for _, name, data in files]
        scored = _score(classifier, loaded)
    host.done(task_id)
    return encode(classifier.version, loaded, scored)


def _one_at_a_time(host: Host, classifier: Classifier, files: list, limits) -> tuple[list, Scored | None]:
    loaded, parts = [], []
    for claim_id, name, data in files:
        deaths = host.died_holding(claim_id)
        if deaths >= defaults.CRASHES_BEFORE_SET_ASIDE:
            log.error("%s was in hand each time a worker died (%d times): set aside", name, deaths)
            item = InputError("worker-crashed", f"{name} was being classified each time a classify worker "
                                                f"died ({deaths} times); set aside so the others go on")
        else:
            item = _load(data, name, classifier, limits)
            if not isinstance(item, InputError):
                parts.append(_score(classifier, [item]))
        host.done(claim_id)
        loaded.append(item)
    return loaded, _joined(parts)


def _load(data: bytes, name: str, classifier: Classifier, limits) -> LoadedInput | InputError:
    try:
        return load_bytes(data, classifier.profile, name=name, limits=limits)
    except InputError as exc:
        return exc
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


def encode(version: str, loaded: list, scored: Scored | None) -> dict:
    """The answer, in msgpack's types: each file's error or digest and pages, then the scores
    of the model inputs in order (a document gives one per page with ink)."""
    files = []
    for item in loaded:
        if isinstance(item, InputError):
            files.append({"error": [item.kind, item.message, item.bytes_read]})
        else:
            files.append({"sha256": item.sha256, "pages": [n for n, _ in item.pages]})
    answer = {"version": version, "files": files, "probabilities": None, "reviews": [], "scores": None}
    if scored is not None:
        answer["probabilities"] = np.ascontiguousarray(scored.probabilities, np.float32).tobytes()
        answer["reviews"] = [list(r) for r in scored.reviews]
        if scored.review_scores is not None:
            answer["scores"] = np.ascontiguousarray(scored.review_scores, np.float32).tobytes()
    return answer


def decode(answer: dict, classes: int) -> tuple[list[LoadedInput | InputError], Scored | None]:
    """The watcher's side of ``encode``: each file as a LoadedInput without pixels (its digest
    and pages), or its InputError; and the scores."""
    loaded: list[LoadedInput | InputError] = []
    for item in answer["files"]:
        if "error" in item:
            kind, message, bytes_read = item["error"]
            error = InputError(kind, message)
            error.bytes_read = bytes_read
            loaded.append(error)
        else:
            pages = tuple((n, None) for n in item["pages"])
            loaded.append(LoadedInput(pixels=None, sha256=item["sha256"], pages=pages))
    if answer["probabilities"] is None:
        return loaded, None
    probabilities = np.frombuffer(answer["probabilities"], np.float32).reshape(-1, classes)
    scores = None if answer["scores"] is None else np.frombuffer(answer["scores"], np.float32)
    return loaded, Scored(probabilities, [list(r) for r in answer["reviews"]], scores)


_host: Host | None = None


def run(broker: str, *, models: Path, concurrency: int, threads: int, visibility_timeout: float,
        loglevel: str = "INFO") -> None:
    """Start the Celery worker (it returns when the worker is stopped)."""
    global _host
    _host = Host(models, broker, threads)
    app = make_app(broker, visibility_timeout=visibility_timeout)

    @app.task(name=TASK, bind=True)
    def classify_task(task, model: dict, files: list, limits: dict, reply_to: str) -> None:
        from celery.exceptions import Reject
        from redis.exceptions import RedisError

        try:
            classify(_host, task.request.id, model, files, limits, reply_to)
        except RedisError as exc:  # no answer could be given: back on the queue, for later
            raise Reject(str(exc), requeue=True) from exc

    app.worker_main(["worker", "--pool", "prefork", "--concurrency", str(concurrency),
                     "--queues", app.conf.task_default_queue, "--loglevel", loglevel,
                     "--hostname", f"classify-{os.getpid()}@%h",
                     "--without-gossip", "--without-mingle"])
