"""The outbox's files belong to the daemon but people read them, open them in spreadsheets and save
them back: repair cuts only a torn last record of a file in our own format, never follows a
symlink, and sets aside whole anything it does not recognise (issue 22, 3). And a file name
never reaches a spreadsheet as a formula."""

from __future__ import annotations

import csv
import json
import os
import stat
import threading

import pytest
from conftest import rows
from factories import digit_stroke, write

from worker.daemon.loop import Daemon
from worker.daemon.settings import Settings
from worker.errors import ConfigError
from worker.outbox.records import CSV_NAME, JSONL_NAME, Row, csv_columns
from worker.outbox.writer import Outbox

NAMES = [str(d) for d in range(10)]
NASTY = 'a, "quoted"\nnew line ünï\u2028\x85.png'


def _row(i: int, file: str = "x.png") -> Row:
    return Row(id=f"id{i}", file=file, label="3", confidence=0.9, class_index=3, sha256="ab" * 32,
               model="m", processed_at="2026-01-01T00:00:00.000Z",
               probabilities={n: (0.9 if n == "3" else 0.01) for n in NAMES})


def _records(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def _set_aside(folder, name: str) -> list:
    return sorted(p for p in folder.iterdir() if p.name.startswith(f"{name}.unrecognised-"))


def _resave_with_lf(path) -> list[list[str]]:
    """What pandas or LibreOffice on Linux do to the file: the same records, LF line ends."""
    records = _records(path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows(records)
    return records


def _outbox_with_rows(folder, count: int = 3) -> None:
    box = Outbox(folder, NAMES)
    box.record([_row(1, NASTY)] + [_row(i) for i in range(2, count + 1)])
    box.close()


# --- a file saved back by a reader ------------------------------------------------------------

def test_a_csv_saved_with_lf_line_ends_keeps_every_row(tmp_path):
    _outbox_with_rows(tmp_path)
    saved = _resave_with_lf(tmp_path / CSV_NAME)
    box = Outbox(tmp_path, NAMES)
    box.repair()
    box.record([_row(9)])
    box.close()
    assert _records(tmp_path / CSV_NAME) == saved + [_records_of(_row(9))]
    assert _set_aside(tmp_path, CSV_NAME) == []


def test_a_csv_saved_with_lf_line_ends_survives_a_reload(tmp_path):
    """SIGHUP reopens the files: the same checks as at start."""
    box = Outbox(tmp_path, NAMES)
    box.record([_row(1), _row(2)])
    saved = _resave_with_lf(tmp_path / CSV_NAME)
    box.reopen()
    box.record([_row(3)])
    box.close()
    assert _records(tmp_path / CSV_NAME) == saved + [_records_of(_row(3))]


def test_the_daemon_goes_on_after_an_lf_saved_csv(tmp_path, fake_classifier):
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    _outbox_with_rows(outbox)
    saved = _resave_with_lf(outbox / CSV_NAME)
    write(inbox / "=1+1.png", digit_stroke())
    Daemon(Settings(inbox=inbox, outbox=outbox, once=True, settle=0), fake_classifier).run(threading.Event())
    assert _records(outbox / CSV_NAME)[:len(saved)] == saved
    assert [r["file"] for r in rows(outbox)][len(saved) - 1:] == ["'=1+1.png"]
    last = (outbox / JSONL_NAME).read_text(encoding="utf-8").splitlines()[-1]
    assert json.loads(last)["file"] == "=1+1.png"
    assert _set_aside(outbox, CSV_NAME) == []


def test_an_lf_saved_csv_whose_last_line_lacks_its_end_is_set_aside_whole(tmp_path):
    """A file another program wrote is never cut: without a line end its last record may be
    whole. It is set aside as it is and a fresh file starts."""
    _outbox_with_rows(tmp_path)
    _resave_with_lf(tmp_path / CSV_NAME)
    before = (tmp_path / CSV_NAME).read_bytes().rstrip(b"\n")
    (tmp_path / CSV_NAME).write_bytes(before)
    box = Outbox(tmp_path, NAMES)
    box.record([_row(9)])
    box.close()
    [aside] = _set_aside(tmp_path, CSV_NAME)
    assert aside.read_bytes() == before
    assert _records(tmp_path / CSV_NAME) == [csv_columns(NAMES), _records_of(_row(9))]


@pytest.mark.parametrize("header", [
    b"name,score\r\n",  # another program's file
    b"," + ",".join(csv_columns(NAMES)).encode() + b"\n",  # pandas' to_csv with its index column
])
def test_a_csv_with_a_foreign_header_is_set_aside_not_cut(tmp_path, header):
    content = header + b"a.png,1\r\nb.png,2"  # no line end at the end: today's repair cut it
    (tmp_path / CSV_NAME).write_bytes(content)
    box = Outbox(tmp_path, NAMES)
    box.record([_row(1)])
    box.close()
    [aside] = _set_aside(tmp_path, CSV_NAME)
    assert aside.read_bytes() == content
    assert _records(tmp_path / CSV_NAME) == [csv_columns(NAMES), _records_of(_row(1))]


def test_another_models_csv_is_still_a_configuration_error(tmp_path):
    """Our own format for other classes is not a stranger's file: a wrong --outbox, refused."""
    Outbox(tmp_path, NAMES).close()
    with pytest.raises(ConfigError, match="another model"):
        Outbox(tmp_path, [f"c{n}" for n in NAMES])
    assert _set_aside(tmp_path, CSV_NAME) == []


@pytest.mark.parametrize("content", [b'[{"a": 1}, {"b": 2}]', b'{"a": 1}\n{"b": 2}', b"not json at all"])
def test_a_jsonl_not_in_our_format_is_set_aside_not_cut(tmp_path, content):
    (tmp_path / JSONL_NAME).write_bytes(content)
    box = Outbox(tmp_path, NAMES)
    box.record([_row(1)])
    box.close()
    [aside] = _set_aside(tmp_path, JSONL_NAME)
    assert aside.read_bytes() == content
    assert [json.loads(line)["id"] for line in (tmp_path / JSONL_NAME).read_text().splitlines()] == ["id1"]


def test_a_jsonl_whose_last_record_is_whole_but_unended_is_not_cut(tmp_path):
    """An editor that drops the last newline leaves a whole record: kept (set aside), not cut."""
    _outbox_with_rows(tmp_path)
    content = (tmp_path / JSONL_NAME).read_bytes().rstrip(b"\n")
    (tmp_path / JSONL_NAME).write_bytes(content)
    Outbox(tmp_path, NAMES).close()
    kept = b"".join(p.read_bytes() for p in [*_set_aside(tmp_path, JSONL_NAME), tmp_path / JSONL_NAME])
    assert content in kept


# --- symlinks and other non-files ---------------------------------------------------------------

@pytest.mark.parametrize("name", [CSV_NAME, JSONL_NAME])
def test_a_symlinked_outbox_file_is_set_aside_and_its_target_untouched(tmp_path, name):
    outbox, elsewhere = tmp_path / "outbox", tmp_path / "precious.txt"
    outbox.mkdir()
    elsewhere.write_bytes(b"someone's notes\nwithout a last line end")
    (outbox / name).symlink_to(elsewhere)
    box = Outbox(outbox, NAMES)
    box.record([_row(1)])
    box.reopen()  # SIGHUP: the same checks
    box.record([_row(2)])
    box.close()
    assert elsewhere.read_bytes() == b"someone's notes\nwithout a last line end"
    assert not (outbox / name).is_symlink() and (outbox / name).is_file()
    [aside] = _set_aside(outbox, name)
    assert aside.is_symlink() and aside.resolve() == elsewhere
    assert [r[7] for r in _records(outbox / CSV_NAME)[1:]] == ["id1", "id2"]


def test_a_folder_in_place_of_the_csv_is_set_aside(tmp_path):
    (tmp_path / CSV_NAME).mkdir()
    (tmp_path / CSV_NAME / "inside.txt").write_text("kept")
    box = Outbox(tmp_path, NAMES)
    box.record([_row(1)])
    box.close()
    [aside] = _set_aside(tmp_path, CSV_NAME)
    assert (aside / "inside.txt").read_text() == "kept"
    assert _records(tmp_path / CSV_NAME)[1][7] == "id1"


def test_a_fifo_in_place_of_the_jsonl_is_set_aside_unopened(tmp_path):
    """Opening a FIFO to write waits for a reader: it is never opened at all."""
    os.mkfifo(tmp_path / JSONL_NAME)
    box = Outbox(tmp_path, NAMES)
    box.record([_row(1)])
    box.close()
    [aside] = _set_aside(tmp_path, JSONL_NAME)
    assert stat.S_ISFIFO(aside.lstat().st_mode)
    assert json.loads((tmp_path / JSONL_NAME).read_text())["id"] == "id1"


# --- a torn record of our own is still cut -----------------------------------------------------

def _record_bytes(folder, row: Row) -> bytes:
    """The CSV record the daemon writes for ``row``, made by a real outbox beside the test's."""
    scratch = folder.parent / f"{folder.name}-scratch"
    box = Outbox(scratch, NAMES)
    box.record([row])
    box.close()
    header = ",".join(csv_columns(NAMES)).encode() + b"\r\n"
    return (scratch / CSV_NAME).read_bytes().removeprefix(header)


def _tear(folder, row: Row, keep: int) -> None:
    """A batch whose CSV append stopped after ``keep`` bytes of ``row``'s record (disk full, a
    kill): its JSON line is whole, since the JSONL is written and synced first."""
    with open(folder / JSONL_NAME, "ab") as fh:
        fh.write(json.dumps(row.to_json(), ensure_ascii=False).encode() + b"\n")
    with open(folder / CSV_NAME, "ab") as fh:
        fh.write(_record_bytes(folder, row)[:keep])


CUTS = {"first byte": lambda r: 1, "after a newline in the name": lambda r: r.index(b"\n") + 1,
        "in the last field": lambda r: len(r) - 4, "between CR and LF": lambda r: len(r) - 1}


@pytest.mark.parametrize("cut", CUTS)
def test_a_torn_last_record_of_ours_is_cut(tmp_path, cut):
    box = Outbox(tmp_path, NAMES)
    box.record([_row(1, NASTY)] + [_row(i) for i in range(2, 5000)])  # past one read chunk
    box.close()
    whole_csv = (tmp_path / CSV_NAME).read_bytes()
    torn = _row(5000, NASTY)
    record = _record_bytes(tmp_path, torn)
    _tear(tmp_path, torn, CUTS[cut](record))
    whole_jsonl = (tmp_path / JSONL_NAME).read_bytes()
    with open(tmp_path / JSONL_NAME, "ab") as fh:
        fh.write(b'{"file": "torn')
    box = Outbox(tmp_path, NAMES)
    # cut back, then the row the JSONL holds goes to the CSV at once (before any other batch)
    assert (tmp_path / CSV_NAME).read_bytes() == whole_csv + record
    assert (tmp_path / JSONL_NAME).read_bytes() == whole_jsonl
    assert box.written_ids({"id5000"}) == ({"id5000"}, {"id5000"}), "the replay writes nothing"
    box.close()
    assert _set_aside(tmp_path, CSV_NAME) == _set_aside(tmp_path, JSONL_NAME) == []


def test_a_torn_record_of_a_non_utf8_formula_like_name_is_cut(tmp_path):
    """The row read back from the JSONL gives the CSV record byte for byte: the name shown with
    ``\\xNN`` escapes, and neutralised; cut, then written whole from the JSONL."""
    _outbox_with_rows(tmp_path)
    whole = (tmp_path / CSV_NAME).read_bytes()
    torn = Row(**{**_row(7, "=caf\udce9.png").__dict__, "review": "low-margin", "review_score": 1.5})
    record = _record_bytes(tmp_path, torn)
    _tear(tmp_path, torn, len(record) - 5)
    Outbox(tmp_path, NAMES).close()
    assert (tmp_path / CSV_NAME).read_bytes() == whole + record


def test_a_torn_record_after_an_lf_saved_file_is_cut(tmp_path):
    """A file of our columns saved with LF line ends is ours to append to, and to repair."""
    _outbox_with_rows(tmp_path)
    _resave_with_lf(tmp_path / CSV_NAME)
    whole = (tmp_path / CSV_NAME).read_bytes()
    record = _record_bytes(tmp_path, _row(7))
    _tear(tmp_path, _row(7), 30)
    Outbox(tmp_path, NAMES).close()
    assert (tmp_path / CSV_NAME).read_bytes() == whole + record, "cut, then written whole"


def test_a_record_short_of_its_line_end_only_is_set_aside_not_cut(tmp_path):
    """Torn just before its CRLF, or another program's last line saved without a line end:
    the same bytes. Setting the file aside loses neither (a torn row of ours is written again
    by the replay)."""
    _outbox_with_rows(tmp_path)
    torn = _row(7)
    _tear(tmp_path, torn, len(_record_bytes(tmp_path, torn)) - 2)
    content = (tmp_path / CSV_NAME).read_bytes()
    box = Outbox(tmp_path, NAMES)
    box.record([torn], written=box.written_ids({"id7"}))
    box.close()
    [aside] = _set_aside(tmp_path, CSV_NAME)
    assert aside.read_bytes() == content
    assert _records(tmp_path / CSV_NAME) == [csv_columns(NAMES), _records_of(torn)]


@pytest.mark.parametrize("tail", [b'"half, a record\r\nstill inside quotes', b"half", b"y.png,3,0.9"])
def test_a_csv_tail_that_is_no_record_of_ours_is_set_aside_not_cut(tmp_path, tail):
    """A torn record is the start of a row the JSONL holds whole; anything else in its place
    (an edit, another program's line) is not ours to cut."""
    _outbox_with_rows(tmp_path)
    with open(tmp_path / CSV_NAME, "ab") as fh:
        fh.write(tail)
    content = (tmp_path / CSV_NAME).read_bytes()
    Outbox(tmp_path, NAMES).close()
    [aside] = _set_aside(tmp_path, CSV_NAME)
    assert aside.read_bytes() == content


def test_a_torn_jsonl_record_is_found_across_chunks(tmp_path):
    whole = json.dumps(_row(1).to_json()).encode() + b"\n" + b'{"file": "' + b"x" * 3_000_000 + b'"}\n'
    (tmp_path / JSONL_NAME).write_bytes(whole + b'{"fi')
    Outbox(tmp_path, NAMES).close()
    assert (tmp_path / JSONL_NAME).read_bytes() == whole


def test_clean_files_are_left_as_they_are(tmp_path):
    _outbox_with_rows(tmp_path)
    before = [(tmp_path / n).read_bytes() for n in (CSV_NAME, JSONL_NAME)]
    box = Outbox(tmp_path, NAMES)
    box.repair()
    box.close()
    assert [(tmp_path / n).read_bytes() for n in (CSV_NAME, JSONL_NAME)] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failed", CSV_NAME, JSONL_NAME, "processed"]


def test_a_torn_header_is_written_again(tmp_path):
    (tmp_path / CSV_NAME).write_bytes(b"file,label,confi")
    Outbox(tmp_path, NAMES).close()
    assert _records(tmp_path / CSV_NAME) == [csv_columns(NAMES)]
    assert _set_aside(tmp_path, CSV_NAME) == []


def test_a_stray_quote_far_from_the_end_does_not_make_a_torn_record(tmp_path):
    """Rows after an unpaired quote look like one long quoted field: more than one record's
    worth of lines is no torn record of ours, so the file is set aside, not cut."""
    _outbox_with_rows(tmp_path, count=2)
    with open(tmp_path / CSV_NAME, "ab") as fh:
        fh.write(b'"stray.png,3,0.9\r\n' + b"row.png,3,0.9,3,abc\r\n" * 5)
    content = (tmp_path / CSV_NAME).read_bytes()
    Outbox(tmp_path, NAMES).close()
    [aside] = _set_aside(tmp_path, CSV_NAME)
    assert aside.read_bytes() == content


# --- names that a spreadsheet would run --------------------------------------------------------

def _records_of(row: Row) -> list[str]:
    return [str(field) for field in row.to_csv()]


@pytest.mark.parametrize("name", ['=HYPERLINK("x")+1.png', "+1.png", "-2+3.png", "@SUM(A1).png",
                                  "\tx.png", "\rx.png"])
def test_a_name_a_spreadsheet_would_run_is_neutralised_in_the_csv_only(tmp_path, name):
    box = Outbox(tmp_path, NAMES)
    box.record([_row(1, name), _row(2, f"sub/{name}")])
    box.close()
    [_, first, second] = _records(tmp_path / CSV_NAME)
    assert first[0] == "'" + name
    assert second[0] == f"sub/{name}", "only a cell's first character makes a formula"
    lines = (tmp_path / JSONL_NAME).read_text(encoding="utf-8").split("\n")
    assert json.loads(lines[0])["file"] == name


# --- a batch cut short between its two writes ---------------------------------------------------

def _cut_short(folder, rows: list[Row]) -> None:
    """What a kill -9 between the JSONL's fsync and the CSV's write leaves: the batch in the
    JSONL only."""
    with open(folder / JSONL_NAME, "a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in rows)


def _ids(folder) -> tuple[list[str], list[str]]:
    csv_ids = [r[csv_columns(NAMES).index("id")] for r in _records(folder / CSV_NAME)[1:]]
    jsonl_ids = [json.loads(line)["id"] for line in (folder / JSONL_NAME).read_bytes().split(b"\n") if line]
    return csv_ids, jsonl_ids


def test_a_batch_cut_short_after_its_jsonl_write_reaches_the_csv_first_at_the_next_open(tmp_path):
    """The replay by claim id would write its CSV rows after whatever batch came first; the
    next open writes them at once, so both files keep one order."""
    before = 3
    _outbox_with_rows(tmp_path, before)
    cut = [_row(10, NASTY), _row(11), _row(12)]
    _cut_short(tmp_path, cut)
    box = Outbox(tmp_path, NAMES)
    written = box.written_ids({r.id for r in cut})
    assert written == ({r.id for r in cut},) * 2, "in both files before any replay"
    box.record(cut, written=written)  # the replay: nothing twice
    box.record([_row(20), _row(21)])
    box.close()
    csv_ids, jsonl_ids = _ids(tmp_path)
    assert csv_ids == jsonl_ids and len(jsonl_ids) == before + 5


def test_a_csv_that_does_not_end_on_a_recent_row_is_not_completed(tmp_path):
    """A last row deleted by hand (or a file saved back otherwise): nothing can be said of
    what the CSV lacks, and nothing is added to it at open."""
    _outbox_with_rows(tmp_path, 4)
    lines = (tmp_path / CSV_NAME).read_bytes().split(b"\r\n")
    (tmp_path / CSV_NAME).write_bytes(b"\r\n".join(lines[:2] + lines[3:]))  # the second row gone
    before = (tmp_path / CSV_NAME).read_bytes()
    Outbox(tmp_path, NAMES).close()
    assert (tmp_path / CSV_NAME).read_bytes() == before
