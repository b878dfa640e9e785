"""The messages of ``--broker``, parsed into typed records at the edge.

A watcher sends a **task** (a Celery task whose arguments are ``[body, seal]``); a classify
worker pushes an **answer** (``msgpack [body, seal]``) on the watcher's reply list, keeps a
**heartbeat** (its host, pid and the batch in hand, under a key with a short TTL) and, as it
takes a batch, leaves a **taken** record naming itself (``worker/remote/liveness.py``). ``body`` is
the msgpack of a dict; ``seal`` is an HMAC-SHA256 over the message's kind and ``body`` with the
shared key (``--broker-key-file`` or ``WORKER_BROKER_KEY``), or empty without a key. Anyone who
can reach Redis can read a queued task and push on any list, so nothing read from it is
trusted: with a key, a message without its seal is refused before it is read; with or without
one, a message is checked field by field (types, lengths, ranges) and an answer against the
batch it answers (its task id, claim ids, model name and version, one row of finite
probabilities summing to 1 per model input). The sha256 of a file is never in a message: the
watcher computes it from the bytes it sent.

What fails a check raises ``Rejected`` with a short ``reason``, the label of
``worker_broker_rejected_total``:

    malformed     not msgpack, or not the frame [body, seal]
    unsigned      no seal where a key is set
    bad-seal      a seal that is not the key's
    schema        a field missing, of the wrong type, too long or out of range
    unknown-task  an answer for no batch this watcher has out
    duplicate     an answer for a batch finished already (a batch sent twice is answered twice)
    wrong-files   claim ids not the ones sent, in their order, each once
    wrong-model   not the model name and version the task asked for
    bad-scores    probabilities not finite in [0, 1], not one row per model input, or not summing to 1
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from dataclasses import dataclass, fields

import numpy as np

from worker.model.review_flag import SHARE as REVIEW_REASONS
from worker.preprocess import Limits

# What the frame and its fields may be: enough for any real batch, little for a hostile one.
MAX_FRAME_BYTES = 256 * 1024 * 1024
MAX_FILES = 4096
MAX_TEXT = 4096  # an error message, a refusal
MAX_NAME = 8192  # a file's inbox-relative path (PATH_MAX, with room for \xNN escapes)
MAX_PAGES = 10_000
# Each row of probabilities is a softmax: its sum is 1 up to float32 rounding over the classes.
SUM_TOLERANCE = 1e-3
REPLY_TO = re.compile(r"worker:answers:[0-9a-f]{32}")
TASK_ID = re.compile(r"[0-9A-Za-z-]{1,64}")
CLAIM_ID = re.compile(r"[0-9A-Za-z._#-]{1,128}")
ERROR_KIND = re.compile(r"[a-z][a-z0-9-]{0,39}")
HOST = re.compile(r"[0-9A-Za-z._-]{1,253}")
MAX_PID = 2**22  # Linux's pid_max at most
TASK, ANSWER, HEARTBEAT, TAKEN = b"task", b"answer", b"heartbeat", b"taken"


class Rejected(Exception):
    """A message that failed a check; ``reason`` is one of the module docstring's."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def read_key(text: bytes | str | None) -> bytes | None:
    """The shared key from a file's or the environment's text (surrounding blanks dropped), or
    None; a key too short to resist a guess is refused by the caller (``broker.load_key``)."""
    if text is None:
        return None
    key = (text.encode() if isinstance(text, str) else text).strip()
    return key or None


def seal(kind: bytes, body: bytes, key: bytes | None) -> bytes:
    if key is None:
        return b""
    return hmac.new(key, kind + b"\0" + body, hashlib.sha256).digest()


def _opened(kind: bytes, frame, key: bytes | None) -> dict:
    """The body of ``[body, seal]`` as a dict, once its seal is checked (with a key)."""
    import msgpack

    if not (isinstance(frame, list | tuple) and len(frame) == 2
            and all(isinstance(part, bytes) for part in frame)):
        raise Rejected("malformed", "not the frame [body, seal]")
    body, got = frame
    if key is not None:
        if not got:
            raise Rejected("unsigned", f"a {kind.decode()} without a seal")
        if not hmac.compare_digest(got, seal(kind, body, key)):
            raise Rejected("bad-seal", f"a {kind.decode()} sealed with another key")
    try:
        values = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several kinds for bad bytes
        raise Rejected("malformed", f"body is not msgpack ({type(exc).__name__})") from None
    if not isinstance(values, dict):
        raise Rejected("malformed", "body is not a map")
    return values


def _pack(kind: bytes, values: dict, key: bytes | None) -> list[bytes]:
    import msgpack

    body = msgpack.packb(values, use_bin_type=True)
    return [body, seal(kind, body, key)]


# -- checks of one field ------------------------------------------------------------------------

def _text(value, what: str, *, limit: int = MAX_TEXT, pattern: re.Pattern | None = None) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise Rejected("schema", f"{what} is not a text of 1 to {limit} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise Rejected("schema", f"{what} has characters it may not have")
    return value


def _list(value, what: str, *, limit: int = MAX_FILES) -> list:
    if not isinstance(value, list) or len(value) > limit:
        raise Rejected("schema", f"{what} is not a list of at most {limit}")
    return value


def _field(values: dict, name: str):
    if name not in values:
        raise Rejected("schema", f"no {name}")
    return values[name]


def _model(value) -> tuple[str, str]:
    if not isinstance(value, dict):
        raise Rejected("schema", "model is not a map")
    return (_text(value.get("name"), "model name", limit=200),
            _text(value.get("version"), "model version", limit=200))


def _int(value, what: str, *, low: int = 0, high: int = 2**62) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Rejected("schema", f"{what} is not a whole number in [{low}, {high}]")
    return value


# -- the task -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskFile:
    claim_id: str
    name: str
    data: bytes


@dataclass(frozen=True)
class Task:
    task_id: str
    model: tuple[str, str]  # name, version
    files: tuple[TaskFile, ...]
    limits: Limits
    reply_to: str


def pack_task(task: Task, key: bytes | None) -> list[bytes]:
    values = {"task": task.task_id, "model": {"name": task.model[0], "version": task.model[1]},
              "files": [[f.claim_id, f.name, f.data] for f in task.files],
              "limits": {f.name: getattr(task.limits, f.name) for f in fields(Limits)},
              "reply_to": task.reply_to}
    return _pack(TASK, values, key)


def parse_task(args, task_id: str, key: bytes | None) -> Task:
    """A Celery task's arguments as a ``Task``, or ``Rejected``. ``task_id`` is Celery's: the
    body must name the same (a sealed body cannot be replayed under another id)."""
    if not isinstance(args, list | tuple):
        raise Rejected("malformed", "arguments are not a list")
    values = _opened(TASK, list(args), key)
    if _field(values, "task") != task_id:
        raise Rejected("schema", "the body names another task id")
    files = tuple(_task_file(item) for item in _list(_field(values, "files"), "files"))
    return Task(task_id=_text(task_id, "task id", pattern=TASK_ID), model=_model(_field(values, "model")),
                files=files, limits=_limits(_field(values, "limits")),
                reply_to=_text(_field(values, "reply_to"), "reply_to", pattern=REPLY_TO))


def _task_file(item) -> TaskFile:
    if not (isinstance(item, list) and len(item) == 3 and isinstance(item[2], bytes)):
        raise Rejected("schema", "a file is not [claim id, name, bytes]")
    return TaskFile(_text(item[0], "claim id", pattern=CLAIM_ID), _text(item[1], "name", limit=MAX_NAME),
                    item[2])


def _limits(value) -> Limits:
    if not isinstance(value, dict):
        raise Rejected("schema", "limits is not a map")
    default = Limits()
    chosen = {}
    for f in fields(Limits):
        if f.name not in value:
            continue
        kind = type(getattr(default, f.name))
        number = value[f.name]
        if isinstance(number, bool) or not isinstance(number, int | float) or \
                (kind is int and not isinstance(number, int)) or not math.isfinite(number) or number <= 0:
            raise Rejected("schema", f"limit {f.name} is not a positive {kind.__name__}")
        chosen[f.name] = min(kind(number), getattr(default, f.name))  # a task may tighten, never loosen
    return Limits(**chosen)


# -- the answer ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileAnswer:
    """One file's part of an answer: its error (kind, message, bytes read) or its pages."""

    claim_id: str
    error: tuple[str, str, int | None] | None = None
    pages: tuple[int, ...] = ()

    @property
    def inputs(self) -> int:
        """How many model inputs (rows of probabilities) this file has."""
        return 0 if self.error is not None else max(1, len(self.pages))


@dataclass(frozen=True)
class Answer:
    """An answer, its fields checked; ``check`` checks it against the batch it answers."""

    task_id: str
    refused: str | None = None
    model: tuple[str, str] | None = None
    files: tuple[FileAnswer, ...] = ()
    probabilities: bytes | None = None
    reviews: tuple[tuple[str, ...], ...] = ()
    scores: bytes | None = None

    def check(self, claim_ids: list[str], model: tuple[str, str], classes: int) -> Scores | None:
        """Against the batch: the claim ids it sent in their order, the model it asked for, one
        row of ``classes`` probabilities per model input. Returns the scores (None without a
        model input), or raises ``Rejected``."""
        if [f.claim_id for f in self.files] != claim_ids:
            raise Rejected("wrong-files", "claim ids are not those sent, in order, once each")
        if self.model != model:
            raise Rejected("wrong-model", f"answered by {self.model}, not the {model} asked for")
        inputs = sum(f.inputs for f in self.files)
        return _scores(self.probabilities, self.reviews, self.scores, inputs, classes)


@dataclass(frozen=True)
class Scores:
    probabilities: np.ndarray  # (inputs, classes) float32, each row finite in [0, 1], summing to 1
    reviews: list[list[str]]
    review_scores: np.ndarray | None


def pack_answer(task_id: str, key: bytes | None, *, refused: str | None = None,
                model: tuple[str, str] | None = None, files: list[dict] = (),
                probabilities: bytes | None = None, reviews: list = (), scores: bytes | None = None) -> bytes:
    import msgpack

    if refused is not None:
        values = {"task": task_id, "refused": refused[:MAX_TEXT]}
    else:
        values = {"task": task_id, "model": {"name": model[0], "version": model[1]}, "files": list(files),
                  "probabilities": probabilities, "reviews": list(reviews), "scores": scores}
    return msgpack.packb(_pack(ANSWER, values, key), use_bin_type=True)


def parse_answer(raw, key: bytes | None) -> Answer:
    """A value read from the reply list as an ``Answer``, or ``Rejected``."""
    import msgpack

    if not isinstance(raw, bytes) or len(raw) > MAX_FRAME_BYTES:
        raise Rejected("malformed", "not a frame of bytes")
    try:
        frame = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_bin_len=MAX_FRAME_BYTES)
    except Exception as exc:  # noqa: BLE001
        raise Rejected("malformed", f"not msgpack ({type(exc).__name__})") from None
    values = _opened(ANSWER, frame, key)
    task_id = _text(_field(values, "task"), "task id", pattern=TASK_ID)
    if "refused" in values:
        return Answer(task_id, refused=_text(values["refused"], "refusal"))
    files = tuple(_file_answer(item) for item in _list(_field(values, "files"), "files"))
    reviews = tuple(_review(item) for item in _list(_field(values, "reviews"), "reviews",
                                                      limit=MAX_FILES * MAX_PAGES))
    return Answer(task_id, model=_model(_field(values, "model")), files=files,
                  probabilities=_optional_bytes(_field(values, "probabilities"), "probabilities"),
                  reviews=reviews, scores=_optional_bytes(_field(values, "scores"), "scores"))


def _file_answer(item) -> FileAnswer:
    if not isinstance(item, dict):
        raise Rejected("schema", "a file's answer is not a map")
    claim_id = _text(item.get("id"), "claim id", pattern=CLAIM_ID)
    if "error" in item:
        error = item["error"]
        if not (isinstance(error, list) and len(error) == 3):
            raise Rejected("schema", "an error is not [kind, message, bytes read]")
        bytes_read = None if error[2] is None else _int(error[2], "bytes read")
        return FileAnswer(claim_id, error=(_text(error[0], "error kind", pattern=ERROR_KIND),
                                           _text(error[1], "error message"), bytes_read))
    pages = _list(item.get("pages"), "pages", limit=MAX_PAGES)
    numbers = tuple(_int(n, "page", low=1, high=MAX_PAGES) for n in pages)
    if any(a >= b for a, b in zip(numbers, numbers[1:], strict=False)):
        raise Rejected("schema", "page numbers are not increasing")
    return FileAnswer(claim_id, pages=numbers)


def _review(item) -> tuple[str, ...]:
    reasons = _list(item, "review", limit=len(REVIEW_REASONS))
    if not all(isinstance(r, str) and r in REVIEW_REASONS for r in reasons):
        raise Rejected("schema", "a review reason that is none of the review flag's")
    return tuple(reasons)


def _optional_bytes(value, what: str) -> bytes | None:
    if value is not None and not isinstance(value, bytes):
        raise Rejected("schema", f"{what} is neither bytes nor nil")
    return value


def _scores(probabilities: bytes | None, reviews, scores: bytes | None, inputs: int,
            classes: int) -> Scores | None:
    if inputs == 0:
        if probabilities is not None or scores is not None or reviews:
            raise Rejected("bad-scores", "scores for a batch without a model input")
        return None
    if probabilities is None or len(probabilities) != inputs * classes * 4:
        raise Rejected("bad-scores", f"not {inputs} rows of {classes} float32 probabilities")
    rows = np.frombuffer(probabilities, np.float32).reshape(inputs, classes)
    if not (np.isfinite(rows).all() and (rows >= 0).all() and (rows <= 1).all()
            and (np.abs(rows.sum(axis=1) - 1) <= SUM_TOLERANCE).all()):
        raise Rejected("bad-scores", "probabilities not finite in [0, 1] or not summing to 1")
    if len(reviews) != inputs:
        raise Rejected("bad-scores", f"not {inputs} reviews")
    review_scores = None
    if scores is not None:
        if len(scores) != inputs * 4:
            raise Rejected("bad-scores", f"not {inputs} float32 review scores")
        review_scores = np.frombuffer(scores, np.float32)
        if not (np.isfinite(review_scores).all() and (review_scores >= 0).all()):
            raise Rejected("bad-scores", "review scores not finite and positive")
    return Scores(rows, [list(r) for r in reviews], review_scores)


# -- liveness: the heartbeat and the taken record ----------------------------------------------

@dataclass(frozen=True)
class Heartbeat:
    """A classify worker process alive: ``task`` the batch in hand (None: idle), ``idle`` the
    seconds since it last had one."""

    host: str
    pid: int
    task: str | None
    idle: float

    @property
    def worker(self) -> tuple[str, int]:
        return (self.host, self.pid)


@dataclass(frozen=True)
class Taken:
    """A batch taken, by the worker process that took it."""

    task_id: str
    host: str
    pid: int

    @property
    def worker(self) -> tuple[str, int]:
        return (self.host, self.pid)


def pack_heartbeat(beat: Heartbeat, key: bytes | None) -> bytes:
    import msgpack

    values = {"host": beat.host, "pid": beat.pid, "task": beat.task, "idle": float(beat.idle)}
    return msgpack.packb(_pack(HEARTBEAT, values, key), use_bin_type=True)


def parse_heartbeat(raw, key: bytes | None, worker: tuple[str, int]) -> Heartbeat:
    """The value of the heartbeat key of ``worker`` (host, pid), or ``Rejected``: the body must
    name the same worker (a sealed heartbeat copied under another's key keeps nobody alive)."""
    values = _opened(HEARTBEAT, _frame(raw), key)
    host, pid = _text(_field(values, "host"), "host", pattern=HOST), _int(_field(values, "pid"), "pid",
                                                                          high=MAX_PID)
    if (host, pid) != worker:
        raise Rejected("schema", "a heartbeat naming another worker than its key")
    task = _field(values, "task")
    idle = _field(values, "idle")
    if isinstance(idle, bool) or not isinstance(idle, int | float) or not 0 <= idle < 1e9:
        raise Rejected("schema", "idle is not a number of seconds")
    task = None if task is None else _text(task, "task id", pattern=TASK_ID)
    return Heartbeat(host, pid, task, float(idle))


def pack_taken(taken: Taken, key: bytes | None) -> bytes:
    import msgpack

    values = {"task": taken.task_id, "host": taken.host, "pid": taken.pid}
    return msgpack.packb(_pack(TAKEN, values, key), use_bin_type=True)


def parse_taken(raw, key: bytes | None, task_id: str) -> Taken:
    """The taken record of batch ``task_id``, or ``Rejected`` (the body must name that batch)."""
    values = _opened(TAKEN, _frame(raw), key)
    if _field(values, "task") != task_id:
        raise Rejected("schema", "a taken record naming another batch than its key")
    return Taken(task_id, _text(_field(values, "host"), "host", pattern=HOST),
                 _int(_field(values, "pid"), "pid", high=MAX_PID))


def _frame(raw, limit: int = MAX_TEXT) -> list:
    """A small value read from Redis as the frame ``[body, seal]`` (still unopened)."""
    import msgpack

    if not isinstance(raw, bytes) or len(raw) > limit:
        raise Rejected("malformed", "not a small frame of bytes")
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001
        raise Rejected("malformed", f"not msgpack ({type(exc).__name__})") from None
