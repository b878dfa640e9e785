"""The messages of ``--broker``, parsed into typed records at the edge: what every message has.

A watcher sends a **task** (a Celery task whose arguments are ``[body, seal]``); a classify
worker pushes an **answer** (``msgpack [body, seal]``) on the watcher's reply list, keeps a
**heartbeat** (its host, pid and the batch in hand, under a key with a short TTL) and, as it
takes a batch, leaves a **taken** record naming itself (``worker/remote/liveness.py``). Each kind
has its module (``task_message.py``, ``answer_message.py``, ``liveness_messages.py``); this one
holds what they share: the frame, its seal, the checks of one field and ``Rejected``. ``body`` is
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
import re

# What the frame and its fields may be: enough for any real batch, little for a hostile one.
MAX_FILES = 4096
MAX_TEXT = 4096  # an error message, a refusal
MAX_NAME = 8192  # a file's inbox-relative path (PATH_MAX, with room for \xNN escapes)
TASK_ID = re.compile(r"[0-9A-Za-z-]{1,64}")
CLAIM_ID = re.compile(r"[0-9A-Za-z._#-]{1,128}")


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


def open_frame(kind: bytes, frame, key: bytes | None) -> dict:
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


def pack_frame(kind: bytes, values: dict, key: bytes | None) -> list[bytes]:
    import msgpack

    body = msgpack.packb(values, use_bin_type=True)
    return [body, seal(kind, body, key)]


# -- checks of one field ------------------------------------------------------------------------

def check_text(value, what: str, *, limit: int = MAX_TEXT, pattern: re.Pattern | None = None) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise Rejected("schema", f"{what} is not a text of 1 to {limit} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise Rejected("schema", f"{what} has characters it may not have")
    return value


def check_list(value, what: str, *, limit: int = MAX_FILES) -> list:
    if not isinstance(value, list) or len(value) > limit:
        raise Rejected("schema", f"{what} is not a list of at most {limit}")
    return value


def get_field(values: dict, name: str):
    if name not in values:
        raise Rejected("schema", f"no {name}")
    return values[name]


def check_model(value) -> tuple[str, str]:
    if not isinstance(value, dict):
        raise Rejected("schema", "model is not a map")
    return (check_text(value.get("name"), "model name", limit=200),
            check_text(value.get("version"), "model version", limit=200))


def check_int(value, what: str, *, low: int = 0, high: int = 2**62) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Rejected("schema", f"{what} is not a whole number in [{low}, {high}]")
    return value

