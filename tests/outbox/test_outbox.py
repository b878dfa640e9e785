"""Durable rows, torn-tail repair, replay lookup, and moves that never overwrite."""

from __future__ import annotations

import csv
import errno
import json
import os
import threading

import pytest

from worker.archive import move_unique, place
from worker.errors import ConfigError, InputError
from worker.files import write_atomic
from worker.outbox.records import Row, csv_columns, error_record, iso_utc
from worker.outbox.writer import Outbox

NAMES = [str(d) for d in range(10)]
NASTY = 'a, "quoted"\nnew line ünï\u2028\x85.png'  # the last two end a line for str.splitlines


def _row(i: int, file: str = "x.png") -> Row:
    return Row(id=f"id{i}", file=file, label="3", confidence=0.9, class_index=3, sha256="ab" * 32,
               model="m", processed_at="2026-01-01T00:00:00.000Z",
               probabilities={n: (0.9 if n == "3" else 0.01) for n in NAMES})


def test_rows_land_in_both_files_and_parse(tmp_path):
    box = Outbox(tmp_path, NAMES)
    box.record([_row(1, NASTY), _row(2)])
    box.close()
    with open(tmp_path / "predictions.csv", newline="", encoding="utf-8") as fh:
        records = list(csv.DictReader(fh))
    assert [r["file"] for r in records] == [NASTY, "x.png"]
    assert list(records[0])[:3] == ["file", "label", "confidence"]
    assert {"class_index", "sha256", "model", "processed_at", "p_0", "p_9"} <= set(records[0])
    lines = (tmp_path / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["file"] == NASTY


def test_header_written_once(tmp_path):
    for i in range(3):
        box = Outbox(tmp_path, NAMES)
        box.record([_row(i)])
        box.close()
    text = (tmp_path / "predictions.csv").read_text(encoding="utf-8")
    assert text.count("file,label,confidence") == 1


def test_daemons_sharing_an_outbox_take_turns(tmp_path):
    """Two daemons starting on a new outbox write one header, and their batches land whole
    and in the same order in both files (each Outbox holds its own lock)."""
    start = threading.Barrier(2)

    def daemon(first: int) -> None:
        start.wait()
        box = Outbox(tmp_path, NAMES)
        for i in range(first, first + 200, 10):
            box.record([_row(n, NASTY) for n in range(i, i + 10)])
        box.close()

    threads = [threading.Thread(target=daemon, args=(first,)) for first in (0, 1000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with open(tmp_path / "predictions.csv", newline="", encoding="utf-8") as fh:
        csv_ids = [r["id"] for r in csv.DictReader(fh)]
    lines = (tmp_path / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert csv_ids == [json.loads(line)["id"] for line in lines]
    assert sorted(csv_ids) == sorted(f"id{n}" for n in [*range(200), *range(1000, 1200)])


def test_other_models_outbox_is_refused(tmp_path):
    Outbox(tmp_path, NAMES).close()
    with pytest.raises(ConfigError, match="another model"):
        Outbox(tmp_path, ["T-shirt/top"] * 10)


def test_a_crash_between_the_two_files_is_replayed_into_the_csv_only(tmp_path, faults):
    box = Outbox(tmp_path, NAMES)
    box.record([_row(1), _row(2)])
    faults.fail(os, "write", when=lambda path: path.endswith("predictions.csv"),
                error=OSError(errno.EIO, "the process dies here"))
    with pytest.raises(OSError, match="dies here"):
        box.record([_row(3)])  # durable in the JSONL, not yet in the CSV
    faults.clear()
    assert box.written_ids({"id1", "id3", "id9"}) == ({"id1"}, {"id1", "id3"})
    box.record([_row(1), _row(3)], written=box.written_ids({"id1", "id3"}))
    box.close()
    with open(tmp_path / "predictions.csv", newline="", encoding="utf-8") as fh:
        assert [r["id"] for r in csv.DictReader(fh)] == ["id1", "id2", "id3"]
    lines = (tmp_path / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["id1", "id2", "id3"]


def test_archive_keeps_or_deletes_the_input(tmp_path):
    for on_success, archived in (("keep", ["x.png"]), ("delete", [])):
        box = Outbox(tmp_path / on_success, NAMES, on_success=on_success)
        src = tmp_path / f"{on_success}.png"
        src.write_bytes(b"1")
        box.archive(src, "x.png", "c1")
        box.close()
        assert not src.exists()
        assert os.listdir(tmp_path / on_success / "processed") == archived


def test_quarantine_puts_the_input_and_its_error_record_side_by_side(tmp_path):
    box = Outbox(tmp_path, NAMES)
    src = tmp_path / "claimed.png"
    src.write_bytes(b"not an image")
    error = InputError("not-an-image", "sub/x.png is not a readable image")
    record = error_record(error, claim_id="c1", file="sub/x.png", time=iso_utc(0), model="m",
                          model_version="v1")
    dest = box.quarantine(src, "sub/x.png", "c1", record)
    box.close()
    assert dest == tmp_path / "failed" / "sub" / "x.png" and dest.read_bytes() == b"not an image"
    assert not src.exists()
    saved = json.loads((tmp_path / "failed" / "sub" / "x.png.error.json").read_text())
    assert saved == {"file": "sub/x.png", "kind": "not-an-image", "message": error.message,
                     "time": "1970-01-01T00:00:00.000Z", "id": "c1", "model": "m", "model_version": "v1"}
    assert sorted(os.listdir(dest.parent)) == ["x.png", "x.png.error.json"], "no temporary file left"


def test_write_atomic_replaces_whole_or_not_at_all(tmp_path, faults):
    target = tmp_path / "card.json"
    write_atomic(target, "old")
    faults.fail(os, "replace", when=lambda path: True, error=OSError(errno.EIO, "crash"))
    with pytest.raises(OSError):
        write_atomic(target, "new")
    faults.clear()
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["card.json"]
    write_atomic(target, b"new")
    assert target.read_text() == "new"


def test_move_never_overwrites(tmp_path):
    dest = tmp_path / "processed"
    for i in range(2):
        src = tmp_path / f"src{i}.png"
        src.write_bytes(bytes([i]))
        move_unique(src, dest, "x.png", f"c{i}")
    assert (dest / "x.png").read_bytes() == b"\x00"
    assert (dest / "x.c1.png").read_bytes() == b"\x01"


def test_place_is_idempotent(tmp_path):
    src = tmp_path / "s.png"
    src.write_bytes(b"1")
    first = place(src, tmp_path / "failed", "x.png", "c1")
    again = place(src, tmp_path / "failed", "x.png", "c1")
    assert first == again and len(list((tmp_path / "failed").iterdir())) == 1


def test_place_uses_a_short_name_at_the_top_when_both_names_are_taken(tmp_path):
    dest = tmp_path / "processed"
    dest.mkdir()
    (dest / "x.png").write_bytes(b"a")
    (dest / "x.c1.png").write_bytes(b"b")
    src = tmp_path / "s.png"
    src.write_bytes(b"c")
    assert place(src, dest, "x.png", "c1") == dest / "c1.png"
    (dest / "c2.png").write_bytes(b"d")
    (dest / "x.c2.png").write_bytes(b"e")
    taken = r"x\.png: taken; x\.c2\.png: taken; c2\.png: taken"
    with pytest.raises(OSError, match=rf"cannot place x\.png .*{taken}"):
        place(src, dest, "x.png", "c2")


def test_rows_carry_model_version_and_review_in_the_last_columns(tmp_path):
    box = Outbox(tmp_path, NAMES)
    box.record([Row(**{**_row(1).__dict__, "model_version": "abc123",
                       "review": "low-confidence unlike-training", "review_score": 2.5})])
    box.close()
    with open(tmp_path / "predictions.csv", newline="", encoding="utf-8") as fh:
        [header, record] = list(csv.reader(fh))
    assert header[-4:] == ["p_9", "model_version", "review", "review_score"]
    assert record[-3:] == ["abc123", "low-confidence unlike-training", "2.500"]
    line = json.loads((tmp_path / "predictions.jsonl").read_text())
    assert (line["model_version"], line["review"], line["review_score"]) == (
        "abc123", "low-confidence unlike-training", 2.5)


def test_an_outbox_started_with_model_version_last_keeps_its_columns(tmp_path):
    """A CSV of the release before the review flag: rows end at model_version, as its header."""
    header = csv_columns(NAMES, later=1)
    (tmp_path / "predictions.csv").write_text(",".join(header) + "\r\n")
    box = Outbox(tmp_path, NAMES)
    box.record([Row(**{**_row(1).__dict__, "model_version": "abc123", "review": "low-margin"})])
    box.close()
    with open(tmp_path / "predictions.csv", newline="", encoding="utf-8") as fh:
        [kept, record] = list(csv.reader(fh))
    assert kept == header and header[-1] == "model_version" and record[-1] == "abc123"
    assert json.loads((tmp_path / "predictions.jsonl").read_text())["review"] == "low-margin"


def test_an_outbox_started_before_model_version_keeps_its_columns(tmp_path):
    """The header upgrade rule: old readers of an old CSV keep working."""
    old_header = ",".join(["file", "label", "confidence", "class_index", "sha256", "model",
                           "processed_at", "id", *(f"p_{n}" for n in NAMES)])
    (tmp_path / "predictions.csv").write_text(old_header + "\r\n")
    box = Outbox(tmp_path, NAMES)
    box.record([Row(**{**_row(1).__dict__, "model_version": "abc123"})])
    box.close()
    with open(tmp_path / "predictions.csv", newline="", encoding="utf-8") as fh:
        [header, record] = list(csv.reader(fh))
    assert ",".join(header) == old_header and len(record) == len(header)
    assert json.loads((tmp_path / "predictions.jsonl").read_text())["model_version"] == "abc123"


def test_written_ids_find_a_documents_page_rows_by_their_claim(tmp_path):
    """A replay after a crash skips each page row already written, not only the first page's."""
    box = Outbox(tmp_path, NAMES)
    box.record([_row(1, "a.pdf#1"), Row(**{**_row(1, "a.pdf#3").__dict__, "id": "id1#3"}), _row(2)])
    assert box.written_ids({"id1"}) == ({"id1", "id1#3"}, {"id1", "id1#3"})
    box.close()


def test_write_atomic_gives_the_permissions_of_a_plain_open(tmp_path):
    """A card, an error record or a report must be readable by others as the umask allows (a
    service's user reads a model card root wrote), not kept at mkstemp's 0600."""
    write_atomic(tmp_path / "card.json", "{}")
    (tmp_path / "plain.json").write_text("{}")
    assert (tmp_path / "card.json").stat().st_mode & 0o777 == (tmp_path / "plain.json").stat().st_mode & 0o777


def test_a_row_with_a_path_longer_than_the_csv_modules_cell_limit_is_read_back(tmp_path):
    """--recursive reaches paths past PATH_MAX, and a person may paste anything into a cell:
    a cell over csv's default 128 Ki characters made every later start fail reading it back."""
    deep = "d" * 250 + "/"
    box = Outbox(tmp_path, NAMES)
    box.record([_row(1, deep * 600 + "x.png"), _row(2)])
    assert box.written_ids({"id1", "id2"}) == ({"id1", "id2"}, {"id1", "id2"})
    box.close()
