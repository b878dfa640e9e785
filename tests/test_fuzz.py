"""Fuzzing the data path: random file names (any bytes, up to NAME_MAX a name and PATH_MAX a
path) and mutated image bytes (real PNG, JPEG and TIFF files, bit-flipped, cut, spliced) through
the real daemon (``--once``, recursive, the fake classifier). Every file dropped ends as exactly
one row or one error record, the daemon never dies, memory stays bounded. And a writer's
attacks on the daemon's own state: random folders, files, names, symlinks and FIFOs planted in
``.work``, folders swapped for symlinks between the scan and the claim: the daemon never dies and
touches nothing outside the inbox and the outbox.

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

from worker.daemon.loop import Daemon
from worker.daemon.settings import Settings
from worker.daemon.watch import is_ignored
from worker.outbox.records import ERROR_SUFFIX, FAILED_DIR, JSONL_NAME

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


# --- a writer's attacks on the daemon's own state: .work planted, folders swapped for symlinks ---

TOKENS = ["0123456789abcdef0123", "0123456789abcdef0124.1", "deadbeef", "zz", "", "."]
ESCAPED = ["..%2F..%2Foutside%2Fx.png", "{outside}%2Fy.png", "..", ".", "", "a%2F..%2F..%2Fb.png",
           "%2e%2e%2Fz.png", "ok.png", "%", "a%2F%2Fb.png"]
planted_names = st.builds(
    lambda token, separator, rest: token + separator + rest,
    st.sampled_from(TOKENS), st.sampled_from(["=", ""]),
    st.sampled_from(ESCAPED) | st.text(min_size=0, max_size=12),
).filter(lambda n: n not in ("", ".", "..") and "/" not in n and "\0" not in n and len(n.encode()) < 250)
planted = st.tuples(
    st.sampled_from(["work", "dead", "dead-nested", "locked"]),  # where in .work
    st.sampled_from(["file", "folder", "link-to-folder", "link-to-file", "fifo"]),
    planted_names,
)


def _plant(work: Path, where: str, kind: str, name: str, outside: Path, png: bytes) -> None:
    folder = {"work": work, "dead": work / "deadbeefdeadbeef0000",
              "dead-nested": work / "deadbeefdeadbeef0000" / "0123456789abcdef0125",
              "locked": work / "0000000000000000dead"}[where]
    folder.mkdir(parents=True, exist_ok=True)
    if where == "locked":
        (work / "0000000000000000dead.lock").touch()  # a dead daemon's lock: its folder is adopted
    path = folder / name.replace("{outside}", str(outside).replace("/", "%2F"))
    if os.path.lexists(path):
        return
    if kind == "file":
        path.write_bytes(png)
    elif kind == "folder":
        path.mkdir()
        (path / "inner.png").write_bytes(png)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        os.symlink(outside if kind == "link-to-folder" else outside / "keep.png", path)


def _everything_but(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple]:
    seen = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) not in skip]
        for name in dirs + files:
            info = os.lstat(os.path.join(folder, name))
            seen[os.path.join(folder, name)] = (info.st_mode, info.st_size, info.st_ino, info.st_mtime_ns)
    return seen


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from(["plain", "writable-by-others", "symlink"]),
    st.lists(planted, max_size=8),
    st.lists(st.tuples(st.sampled_from(["a", "b", "c/d"]), st.booleans()), min_size=1, max_size=4),
)
def test_planted_work_and_swapped_folders_never_reach_outside(work_kind, plants, subfolders):
    """Whatever a writer leaves in ``.work`` (folders, files, names, symlinks, FIFOs), and
    whichever folders it swaps for symlinks between the scan and the claim, the daemon does not
    crash and writes, moves or deletes nothing outside the inbox and the outbox."""
    import time

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inbox, outbox, outside = root / "inbox", root / "outbox", root / "outside"
        png = SEEDS[0]
        (outside / "a").mkdir(parents=True)
        (outside / "keep.png").write_bytes(png)
        (outside / "a" / "x.png").write_bytes(png)
        work = inbox / ".work"
        if work_kind == "symlink":
            inbox.mkdir()
            os.symlink(outside, work)
        else:
            work.mkdir(parents=True)
            os.chmod(work, 0o777 if work_kind == "writable-by-others" else 0o755)
            for where, kind, name in plants:
                _plant(work, where, kind, name, outside, png)
        for folder, _ in subfolders:
            (inbox / folder).mkdir(parents=True, exist_ok=True)
            (inbox / folder / "x.png").write_bytes(png)
        before = _everything_but(root, (inbox, outbox))
        daemon = Daemon(Settings(inbox=inbox, outbox=outbox, once=True, settle=0, recursive=True),
                        FakeClassifier())
        daemon.start()
        daemon.intake.ready(time.time(), 0)  # the scan has seen every sub/x.png
        for folder, swap in subfolders:
            if swap and not os.path.islink(inbox / folder):
                os.rename(inbox / folder, inbox / f".moved-{folder.replace('/', '-')}")
                os.symlink(outside if folder != "c/d" else outside / "a", inbox / folder)
        try:
            for _ in range(200):
                daemon.step()
                if daemon.idle():
                    break
            daemon.pipeline.finish_pending()
        finally:
            daemon.close()
        assert _everything_but(root, (inbox, outbox)) == before, "nothing outside written or moved"


# --- damaged lines of our own outbox: every reader counts and skips them, never crashes ---

GOOD_ROW = {
    "file": "7/a.png", "label": "7", "confidence": 0.9, "class_index": 7, "sha256": "ab" * 32,
    "model": "mnist", "processed_at": "2026-11-20T10:00:00.000Z", "id": "0123456789abcdef0123",
    "probabilities": {**{str(d): 0.01 for d in range(10)}, "7": 0.9}, "model_version": "v1",
    "review": "", "review_score": 0.5,
}
REQUIRED = ("file", "label", "confidence", "processed_at", "id", "probabilities")
other_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308, 5e-324]),
    st.text(max_size=20), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.floats(allow_nan=False) | st.text(max_size=3), max_size=3),
)


@st.composite
def damaged_lines(draw) -> tuple[bytes, bool]:
    """A line of predictions.jsonl (without its newline) with typed damage, and whether it
    surely is no row."""
    record, surely = dict(GOOD_ROW), False
    for key in draw(st.lists(st.sampled_from([*GOOD_ROW, "page", "file_bytes"]), min_size=1, max_size=4)):
        value = draw(other_values)
        if draw(st.booleans()) and key in record:
            del record[key]
            surely |= key in REQUIRED
        elif type(value) is not type(GOOD_ROW.get(key)):
            record[key] = value
            surely |= key in REQUIRED and not (key == "confidence" and type(value) is int and 0 <= value <= 1)
    line = json.dumps(record).encode()  # NaN and Infinity as Python writes them: not JSON
    how = draw(st.sampled_from(["whole", "cut", "garbage"]))
    if how == "cut":
        return line[: draw(st.integers(1, len(line) - 1))], True
    if how == "garbage":
        at = draw(st.integers(0, len(line)))
        return line[:at] + draw(st.binary(min_size=1, max_size=8)).replace(b"\n", b"") + line[at:], False
    return line, surely


@settings(max_examples=EXAMPLES * 4, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(damaged_lines(), min_size=1, max_size=8), st.booleans(), st.integers(0, 3))
def test_damaged_outbox_lines_are_counted_and_skipped_by_every_reader(damaged, torn, review):
    """Each field replaced by a value of another type (huge numbers, NaN, lists, ...), lines cut
    and spliced, the last one torn: the report (text, JSON, HTML) and the page's readers never
    crash, and every line is a row or counted as skipped."""
    from worker.report import HTML_CAPS, Caps, Filters, format_report, gather, to_dict
    from worker.report.html import write_html
    from worker.web import outbox_view
    from worker.web.live import LiveOutbox

    lines_ = [json.dumps(GOOD_ROW).encode()] + [line for line, _ in damaged]
    body = b"\n".join(lines_) + (b"" if torn else b"\n")
    surely = sum(is_damage for _, is_damage in damaged[:-1]) + (torn or damaged[-1][1])
    with tempfile.TemporaryDirectory() as tmp:
        outbox = Path(tmp, "outbox")
        outbox.mkdir()
        (outbox / JSONL_NAME).write_bytes(body)
        for caps in (Caps(review=review), HTML_CAPS):
            summary, skipped = gather(outbox, filters=Filters(), truth="folders", caps=caps)
            report = to_dict(outbox, Filters(), summary, skipped, review=review)
            format_report(report)
            json.dumps(report)
            assert report["predictions"] + report["skipped_lines"] == len(lines_)
            assert report["skipped_lines"] >= surely and report["predictions"] >= 1
        write_html(Path(tmp, "report.html"), report, summary, outbox)
        newest = outbox_view.newest_rows(outbox, 200)
        assert newest and all(outbox_view.brief_row(row) for row in newest)
        outbox_view.review_queue(outbox, 200)
        assert outbox_view.record_of(outbox, GOOD_ROW["file"]) is not None
        live = LiveOutbox(outbox, outbox)  # the page's live list and queue: the same rows
        live.look()
        assert live.latest(200)["rows"] == [outbox_view.brief_row(row) for row in newest]
        assert live.review(200)
