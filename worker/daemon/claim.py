"""One claim: the record of a claimed file, its id, and the names it goes by in ``.work/<daemon>/``.

A flat claim is named ``<claim-id>=<relative path>`` (``%`` and ``/`` escaped); a nested one is
the folder ``<claim-id>/`` holding the relative path. A claim adopted from a dead daemon gets
``.<n>`` after its id: how many daemons died holding it.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from worker.safe_paths import NAME_MAX, parts_of

PATH_MAX = 4096  # bytes in a path the kernel takes whole
SEPARATOR = "="  # between claim id (hex) and the escaped relative path
ATTEMPT = "."  # between claim id and the number of daemons that died holding the claim
# What a daemon's folder, lock (less ".lock") or claim (up to "=") is named: <hex id>[.<crashes>]
TOKEN = re.compile(r"[0-9a-f]+(\.[0-9]+)?")


@dataclass(frozen=True)
class Claim:
    id: str
    rel: str  # path relative to the inbox, "/" separated
    path: Path  # where the claimed file is now
    folder: Path | None = None  # the claim's own folder, for the nested form only
    crashes: int = 0  # how many daemons died while holding this claim
    arrived: float | None = None  # when it arrived whole in the inbox (unknown for a crash's claims)
    size: int | None = None  # bytes when claimed, from the claim's own lstat (None: a crash's claim)


_id_lock = threading.Lock()
_last_micros = 0


def claim_size(claim: Claim) -> int:
    """The claimed file's bytes: as seen when claimed, or now (0 if it cannot be seen)."""
    if claim.size is not None:
        return claim.size
    try:
        return os.lstat(claim.path).st_size
    except OSError:
        return 0


def new_id() -> str:
    """20 hex digits: the time in microseconds (13; never the same or earlier twice in one
    process), then 28 random bits (7) so that daemons sharing an inbox never make the same id.
    A daemon's ids sort in the order it made them, so a replay after a crash (which takes the
    claims in name order) writes rows in their first order: a batch cut between its JSONL and
    CSV appends ends with both files listing it alike."""
    global _last_micros
    with _id_lock:
        _last_micros = max(time.time_ns() // 1000, _last_micros + 1)
        micros = _last_micros
    return f"{micros:013x}{os.urandom(4).hex()[:7]}"


def flat_name(claim_id: str, rel: str) -> str:
    return claim_id + SEPARATOR + rel.replace("%", "%25").replace("/", "%2F")


def parse_flat_name(name: str) -> tuple[str, str]:
    token, escaped = name.split(SEPARATOR, 1)
    return parse_token(token)[0], unquote(escaped)  # every "%" in it starts one of our two escapes


def parse_token(token: str) -> tuple[str, int]:
    """A claim's name up to ``=`` (or its folder's name): the claim id, and how many daemons
    died holding it (``<id>.<n>``; no suffix: none)."""
    claim_id, _, crashes = token.partition(ATTEMPT)
    return claim_id, int(crashes) if crashes.isdigit() else 0


def one_more_crash(name: str) -> str:
    """The name a claim gets when it is adopted from a dead daemon."""
    token, separator, rest = name.partition(SEPARATOR)
    claim_id, crashes = parse_token(token)
    return f"{claim_id}{ATTEMPT}{crashes + 1}{separator}{rest}"


def parse_claim_name(name: str) -> tuple[str, int, str] | None:
    """(claim id, crashes, relative path) of a flat claim's name, or None if it is none of ours:
    no ``<hex id>[.<n>]=`` before the path, or a path that would leave the inbox."""
    token, separator, escaped = name.partition(SEPARATOR)
    if not separator or not TOKEN.fullmatch(token):
        return None
    rel = unquote(escaped)  # every "%" in it starts one of our two escapes
    if parts_of(rel) is None:
        return None
    claim_id, crashes = parse_token(token)
    return claim_id, crashes, rel


def stray_name(name: str) -> str:
    """The inbox name for a stray: what follows ``=`` (the writer's part), visible (no leading
    dot, which scans skip); escapes stay as they are, so it is one plain name."""
    token, separator, rest = name.partition(SEPARATOR)
    return (rest if separator and rest else name).lstrip(".") or "unnamed"


def fitting_prefix(prefix: str, name: str) -> str:
    """``<prefix>-<name>``, cut to NAME_MAX bytes."""
    raw = os.fsencode(f"{prefix}-{name}")[:NAME_MAX]
    return os.fsdecode(raw)


def fitting(claim_id: str, name: str) -> str:
    """``name`` cut (keeping a short suffix) until ``flat_name(claim_id, name)`` fits NAME_MAX."""
    stem, dot, suffix = name.rpartition(".")
    suffix = f".{suffix}" if dot and stem and len(suffix) <= 16 else ""
    stem = name[: len(name) - len(suffix)]
    while len(os.fsencode(flat_name(claim_id, stem + suffix))) > NAME_MAX:
        stem = os.fsdecode(os.fsencode(stem)[:-8])
    return stem + suffix


def claim_name(mine: Path, claim_id: str, rel: str) -> str | None:
    """The flat name of a claim in our folder ``mine`` (None: too long, claim it nested). A path
    so long that the nested form would pass PATH_MAX gets a flat name from its last part only:
    its row still names the whole path, though after a crash it is recovered by that part."""
    name = flat_name(claim_id, rel)
    if len(os.fsencode(name)) <= NAME_MAX:
        return name
    nested = f"{mine}/{claim_id}/{rel}"
    if len(os.fsencode(nested)) < PATH_MAX:
        return None
    return flat_name(claim_id, fitting(claim_id, rel.rsplit("/", 1)[-1]))
