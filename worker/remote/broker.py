"""``--broker``: the Celery app the watcher sends batches with and the classify workers run.

One definition for both sides, so they agree on what makes a batch safe to lose a worker:

- acks late, and a task whose worker process dies is put back (``task_reject_on_worker_lost``);
- each worker process takes one task at a time (prefetch 1), so a batch waits in Redis, where
  any worker can take it, not behind a busy one;
- a task a worker took and never answered (the whole host died) goes back on the queue after
  ``visibility_timeout`` seconds, which must be longer than a batch takes;
- the task and its answer travel as msgpack (raw bytes, no pickle: a message can run no code),
  sealed with an HMAC where a key is shared, and are checked at the edge (``broker_messages``);
- a task has a time limit inside the visibility timeout (``time_limits``): a slow batch is
  answered, its unfinished files as ``too-slow``, before Redis would hand it to another worker.

The answer is not left in Celery's result backend: the worker pushes ``[task id, answer]`` on
the list the task names (``reply_to``, one per watcher) in the same Redis, where the watcher
blocks on it (BLPOP) while it has nothing else to do: no polling, one round trip an answer.
Celery's result client subscribes to every task it sends and, once Redis has been away long
enough, gives up for good ("the Celery application must be restarted").

Celery is imported only in ``make_app``, and this module's callers only with ``--broker``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from worker.errors import ConfigError
from worker.urls import safe_url

TASK = "worker.classify"
QUEUE = "worker.classify"
# Seconds; a task of ~1 MiB of pages takes well under one on a core, a 200-page PDF (the
# most a document may have) a minute or so.
VISIBILITY_TIMEOUT = 300.0
REPLY_KEY = "worker:answers:{}"  # by watcher
ANSWER_SECONDS = 3600  # answers nobody collected (their watcher died) expire after this
# A worker answers a batch within this share of the visibility timeout (240 s of the default
# 300: room for eight documents at the default --decode-timeout, 30 s, each); files it has not
# decoded by then are ``too-slow``. Celery's soft limit comes a quarter of the rest later (the
# worker answers in time unless a step ignores its deadline), its hard limit (the process
# killed) half of it later: all inside the visibility timeout, so a batch is answered before
# Redis hands it to another worker.
BATCH_SHARE = 0.8
BATCH_SECONDS = BATCH_SHARE * VISIBILITY_TIMEOUT
# LPOP with a count (the watcher takes its answers by the dozen) came with Redis 6.2.
REDIS_MIN_VERSION = (6, 2)
# A shared key shorter than this is a password, not a key.
KEY_MIN_BYTES = 16
KEY_ENV = "WORKER_BROKER_KEY"


@dataclasses.dataclass(frozen=True)
class TimeLimits:
    batch: float  # the worker's own deadline for a batch
    soft: float  # Celery's task_soft_time_limit
    hard: float  # Celery's task_time_limit


def time_limits(batch_seconds: float | None, visibility_timeout: float) -> TimeLimits:
    """The limits of one task, all inside ``visibility_timeout`` (``batch_seconds`` None: its
    ``BATCH_SHARE``), or ConfigError."""
    if visibility_timeout <= 0:
        raise ConfigError("--visibility-timeout must be a positive number of seconds")
    batch = BATCH_SHARE * visibility_timeout if batch_seconds is None else batch_seconds
    if batch <= 0:
        raise ConfigError("--batch-timeout must be a positive number of seconds")
    if batch >= visibility_timeout:
        raise ConfigError(f"--batch-timeout {batch:g} s must end before --visibility-timeout "
                          f"{visibility_timeout:g} s: raise the one or lower the other")
    grace = (visibility_timeout - batch) / 4
    return TimeLimits(batch, batch + grace, batch + 2 * grace)


def make_app(broker: str, *, visibility_timeout: float = VISIBILITY_TIMEOUT,
             limits: TimeLimits | None = None):
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
    if limits is not None:
        app.conf.update(task_soft_time_limit=limits.soft, task_time_limit=limits.hard)
    return app


def redis_client(url: str):
    """A plain Redis client for the answers and the death counts: fails at once when Redis is
    away (the callers try again later)."""
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)


def check_version(client, url: str) -> None:
    """ConfigError if the Redis at ``url`` is older than ``REDIS_MIN_VERSION``."""
    version = str(client.info("server").get("redis_version", "0"))
    numbers = tuple(int(part) if part.isdigit() else 0 for part in version.split(".")[:2])
    if numbers < REDIS_MIN_VERSION:
        wanted = ".".join(map(str, REDIS_MIN_VERSION))
        raise ConfigError(f"the Redis at {safe_url(url)} is version {version}; --broker needs Redis {wanted} "
                          "or later (LPOP with a count)")


def broker_url(url: str | None, url_file: Path | None) -> str | None:
    """The Redis URL from ``--broker`` (or ``WORKER_BROKER``) or from ``--broker-url-file``, which
    keeps its password out of ``ps``; ConfigError if both or the file cannot be read."""
    if url_file is None:
        return url
    if url is not None:
        raise ConfigError("give --broker or --broker-url-file, not both")
    try:
        text = url_file.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--broker-url-file {url_file}: cannot read it ({exc})") from None
    if not text or "\n" in text:
        raise ConfigError(f"--broker-url-file {url_file} must hold one Redis URL on one line")
    return text


def load_key(key_file: Path | None, environ=os.environ) -> bytes | None:
    """The shared key from ``--broker-key-file`` or ``WORKER_BROKER_KEY`` (surrounding blanks
    dropped), or None: no key, messages unsealed. ConfigError if it is too short."""
    from worker.remote.messages import read_key

    if key_file is not None:
        try:
            key = read_key(key_file.read_bytes())
        except OSError as exc:
            raise ConfigError(f"--broker-key-file {key_file}: cannot read it ({exc.strerror})") from None
        where = f"--broker-key-file {key_file}"
    else:
        key, where = read_key(environ.get(KEY_ENV)), KEY_ENV
    if key is not None and len(key) < KEY_MIN_BYTES:
        raise ConfigError(f"{where}: the key must have at least {KEY_MIN_BYTES} bytes "
                          "(e.g. openssl rand -hex 32)")
    return key

