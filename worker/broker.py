"""``--broker``: the Celery app the watcher sends batches with and the classify workers run.

One definition for both sides, so they agree on what makes a batch safe to lose a worker:

- acks late, and a task whose worker process dies is put back (``task_reject_on_worker_lost``);
- each worker process takes one task at a time (prefetch 1), so a batch waits in Redis, where
  any worker can take it, not behind a busy one;
- a task a worker took and never answered (the whole host died) goes back on the queue after
  ``visibility_timeout`` seconds, which must be longer than a batch takes;
- the task and its answer travel as msgpack (raw bytes, no pickle: a message can run no code).

The answer is not left in Celery's result backend: the worker pushes ``[task id, answer]`` on
the list the task names (``reply_to``, one per watcher) in the same Redis, where the watcher
blocks on it (BLPOP) while it has nothing else to do: no polling, one round trip an answer.
Celery's result client subscribes to every task it sends and, once Redis has been away long
enough, gives up for good ("the Celery application must be restarted").

Celery is imported only in ``make_app``, and this module's callers only with ``--broker``.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit, urlunsplit

from worker.preprocess import Limits

TASK = "worker.classify"
QUEUE = "worker.classify"
# Seconds; a task of ~1 MiB of pages takes well under one on a core, a 200-page PDF (the
# most a document may have) a minute or so.
VISIBILITY_TIMEOUT = 300.0
REPLY_KEY = "worker:answers:{}"  # by watcher
ANSWER_SECONDS = 3600  # answers nobody collected (their watcher died) expire after this


def make_app(broker: str, *, visibility_timeout: float = VISIBILITY_TIMEOUT):
    from celery import Celery

    app = Celery("worker", broker=broker, set_as_current=False)
    # Unacked tasks are looked for every second, so one is back soon after its timeout.
    transport = {"visibility_timeout": visibility_timeout, "unacked_restore_interval": 1,
                 "unacked_restore_throttle": 1}
    app.conf.update(
        task_serializer="msgpack",
        accept_content=["msgpack"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits out a broker that is down
        worker_send_task_events=False,
    )
    return app


def redis_client(url: str):
    """A plain Redis client for the answers and the death counts: fails at once when Redis is
    away (the callers try again later)."""
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)


def limits_to_dict(limits: Limits) -> dict:
    return dataclasses.asdict(limits)


def limits_from_dict(values: dict) -> Limits:
    default = Limits()
    return Limits(**{f.name: type(getattr(default, f.name))(values[f.name])
                     for f in dataclasses.fields(Limits) if f.name in values})


def safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
