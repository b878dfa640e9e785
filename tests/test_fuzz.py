"""Fuzzing the data path: random file names (any bytes, up to NAME_MAX a name and PATH_MAX a
path) and mutated image bytes (real PNG, JPEG and TIFF files, bit-flipped, cut, spliced) through
the real daemon (``--once``, recursive, the fake classifier). Every file dropped ends as exactly
one row or one error record, the daemon never dies, memory stays bounded.

A short run is part of the suite; a long one by hand:
``WORKER_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import tempfile
import threading
from pathlib import Path

import cv2
from conftest import FakeClassifier
from factories import digit_stroke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.daemon import Daemon
from worker.outbox import ERROR_SUFFIX, FAILED_DIR, JSONL_NAME
from worker.settings import Settings
from worker.watch import is_ignored

EXAMPLES = int(os.environ.get("WORKER_FUZZ_EXAMPLES", "25"))
PATH_MAX = 4096
SEEDS = [
    cv2.imencode(suffix, 255 - cv2.resize(digit_stroke(), (64, 64)))[1].tobytes()
    for suffix in (".png", ".jpg", ".tif")
]

name_bytes = st.binary(min_size=1, max_size=255).filter(
    lambda b: b"/" not in b and b"\x00" not in b and b not in (b".", b"..")
)
paths = st.lists(name_bytes, min_size=1, max_size=16).filter(
    lambda parts: len(b"/".join(parts)) < PATH_MAX - 200  # room for the inbox's own path
)


@st.composite
def mutated_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        how = draw(st.sampled_from(["flip", "cut", "splice", "insert"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if how == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "cut":
            del data[at:]
        elif how == "splice":
            del data[at : at + draw(st.integers(1, 256))]
        else:
            data[at:at] = draw(st.binary(max_size=64))
    return bytes(data)


def _drop(inbox: bytes, parts: list[bytes], data: bytes) -> bytes | None:
    """Write the file; its inbox-relative path, or None if the path cannot be made."""
    rel = b"/".join(parts)
    path = os.path.join(inbox, rel)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
    except OSError:  # a part already made as a file, or the other way round
        return None
    return rel


def _recorded(outbox: Path) -> list[bytes]:
    """The exact name bytes of every row and error record; a document's page rows (``page``,
    ``file`` ending in ``#<page>``) count once, for the file they came from."""
    def name(record: dict) -> bytes:
        raw = base64.b64decode(record["file_bytes"]) if "file_bytes" in record else record["file"].encode()
        return raw[: raw.rindex(b"#")] if "page" in record else raw

    found = []
    if (outbox / JSONL_NAME).exists():
        rows_ = [json.loads(line) for line in (outbox / JSONL_NAME).read_text().splitlines()]
        found += [name(row) for row in rows_ if "#" not in row["id"]]
    found += [name(json.loads(p.read_text())) for p in (outbox / FAILED_DIR).rglob(f"*{ERROR_SUFFIX}")]
    return found


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(paths, mutated_images()), min_size=1, max_size=6))
def test_every_dropped_file_ends_as_exactly_one_record(files):
    with tempfile.TemporaryDirectory() as tmp:
        inbox, outbox = Path(tmp, "inbox"), Path(tmp, "outbox")
        inbox.mkdir()
        dropped = {rel for parts, data in files if (rel := _drop(os.fsencode(inbox), parts, data))}
        expected = {rel for rel in dropped if not is_ignored(os.fsdecode(rel))}
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        settings_ = Settings(inbox=inbox, outbox=outbox, once=True, settle=0, recursive=True)
        Daemon(settings_, FakeClassifier()).run(threading.Event())
        recorded = _recorded(outbox)
        assert sorted(recorded) == sorted(expected), "each file exactly one row or error record"
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 512 * 1024  # KiB
