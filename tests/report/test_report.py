"""worker report: streamed, filtered, least sure first, against a truth, and as one HTML file."""

from __future__ import annotations

import json
import re

import pytest
from factories import digit_stroke, write
from outboxes import outbox_with, row
from typer.testing import CliRunner

from worker.cli import app
from worker.report import Caps, Filters, build_report

runner = CliRunner()


def test_a_damaged_line_is_counted_and_skipped_never_a_traceback(tmp_path):
    outbox = outbox_with(tmp_path, [row("a.png", "1", 0.99), row("b.png", "2", 0.98)])
    jsonl = outbox / "predictions.jsonl"
    lines = jsonl.read_bytes().splitlines(keepends=True)
    jsonl.write_bytes(lines[0] + b'{"file": "x.png", "lab\n' + b"not json at all\n" + lines[1] + b'{"torn')
    result = runner.invoke(app, ["report", "--outbox", str(outbox)])
    assert result.exit_code == 0, result.output
    assert "2 predictions" in result.output and "3 line(s) of predictions.jsonl skipped" in result.output
    assert "Traceback" not in result.output


def test_review_queue_is_least_sure_first_by_confidence_then_margin(tmp_path):
    rows = [row(f"{i:02d}.png", "3", 0.99) for i in range(30)]
    rows += [row("tie-wide.png", "4", 0.6), row("tie-close.png", "4", 0.6, second="9", second_p=0.39),
             row("least.png", "7", 0.4, second="1", second_p=0.35), row("sure-but-wrong.png", "8", 0.97)]
    report = build_report(outbox_with(tmp_path, rows), caps=Caps(review=4))
    # at 0.6 each: "tie-wide" spreads the rest (margin 0.6 - 0.044), "tie-close" puts it on 9
    # (margin 0.21): the smaller margin is the less sure
    assert [r["file"] for r in report["review"]] == ["least.png", "tie-close.png", "tie-wide.png",
                                                     "sure-but-wrong.png"]
    assert report["review"][0]["second"] == "1" and report["review_more"] == 30
    text = runner.invoke(app, ["report", "--outbox", str(tmp_path / "outbox"), "--review", "2"]).output
    assert "least.png -> 7 (0.400; 1 by" in text and "... and 32 more" in text


def test_rows_the_review_flag_names_come_first_and_are_counted(tmp_path):
    """A sure shirt read as an 8 is what the flag is for: it goes before merely unsure digits."""
    rows = [row(f"{i:02d}.png", "3", 0.99) for i in range(10)]
    rows += [row("unsure.png", "4", 0.5), row("shirt.png", "8", 0.999, review=("unlike-training",)),
             row("close.png", "1", 0.55, second="7", second_p=0.44, review=("low-confidence", "low-margin"))]
    report = build_report(outbox_with(tmp_path, rows), caps=Caps(review=3))
    assert [r["file"] for r in report["review"]] == ["close.png", "shirt.png", "unsure.png"]
    assert report["flagged"] == 2
    assert report["flagged_by_reason"] == {"unlike-training": 1, "low-confidence": 1, "low-margin": 1}
    text = runner.invoke(app, ["report", "--outbox", str(tmp_path / "outbox")]).output
    assert "flagged for review: 2 (" in text and "shirt.png -> 8 (0.999; " in text
    assert "[unlike-training]" in text


def test_filters_by_time_model_label_and_folder(tmp_path):
    rows = [row("a/1.png", "1", 0.9, at="2026-11-19T23:59:59.999Z"),
            row("a/2.png", "2", 0.9, at="2026-11-20T00:00:00.000Z"),
            row("a/b/3.png", "3", 0.9, at="2026-11-20T23:59:59.999Z", version="v2"),
            row("ab/4.png", "3", 0.9, at="2026-11-21T00:00:00.000Z")]
    outbox = outbox_with(tmp_path, rows, failures=[("a/bad.png", "corrupt"), ("c/bad.png", "empty")])

    def files(**options) -> list[str]:
        report = build_report(outbox, filters=Filters.parse(**options))
        return [r["file"] for r in report["review"]] + [f["file"] for f in report["failures"]]

    one_day = files(since="2026-11-20", until="2026-11-20")
    assert sorted(one_day) == ["a/2.png", "a/b/3.png", "a/bad.png", "c/bad.png"]
    assert sorted(files(folder="a")) == ["a/1.png", "a/2.png", "a/b/3.png", "a/bad.png"], "not ab/"
    assert files(model="v2") == ["a/b/3.png"]
    assert sorted(files(label="3")) == ["a/b/3.png", "ab/4.png"], "error records have no label"


def test_options_validate_and_read_their_variables(tmp_path, monkeypatch):
    outbox = outbox_with(tmp_path, [row("a.png", "1", 0.5)])
    assert runner.invoke(app, ["report", "--outbox", str(outbox), "--review", "-1"]).exit_code == 2
    assert runner.invoke(app, ["report", "--outbox", str(outbox), "--low-confidence", "1.5"]).exit_code == 2
    bad_date = runner.invoke(app, ["report", "--outbox", str(outbox), "--since", "last tuesday"])
    assert bad_date.exit_code == 78 and "not a date" in bad_date.output
    monkeypatch.setenv("WORKER_LOW_CONFIDENCE", "0.4")
    assert "0 below 0.4" in runner.invoke(app, ["report", "--outbox", str(outbox)]).output


def test_truth_from_folders_a_csv_and_reviews(tmp_path):
    rows = [row("3/a.png", "3", 0.9), row("3/b.png", "5", 0.9), row("5/c.png", "5", 0.9),
            row("misc/d.png", "1", 0.9), row("e.png", "7", 0.9)]
    outbox = outbox_with(tmp_path, rows)
    truth = build_report(outbox, truth="folders")["truth"]
    assert truth["rows"] == 3 and truth["accuracy"] == round(2 / 3, 4), "misc/ is no label; e.png has none"
    by_label = {c["label"]: c for c in truth["classes"]}
    assert by_label["3"] == {"label": "3", "precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}
    assert by_label["5"]["precision"] == 0.5 and by_label["5"]["recall"] == 1.0
    assert truth["confusion"] == {"labels": ["3", "5"], "matrix": [[1, 1], [0, 1]]}

    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("file,label\ne.png,7\n3/b.png,3\n")
    (outbox / "reviews.jsonl").write_text(json.dumps({"id": rows[4].id, "label": "1"}) + "\n")
    truth = build_report(outbox, truth=str(labels_csv))["truth"]
    assert truth["rows"] == 2 and truth["accuracy"] == 0.0, "the review (1) wins over the CSV (7)"
    text = runner.invoke(app, ["report", "--outbox", str(outbox), "--truth", "folders"]).output
    assert "4 rows, accuracy 0.5000" in text, "folders, and the review of e.png"
    assert "confusion (rows: true, columns: predicted)" in text


def test_html_report_is_self_contained_with_pictures_and_linked_mistakes(tmp_path):
    rows = [row("3/a.png", "3", 0.95), row("3/b.png", "5", 0.91), row("5/c.png", "5", 0.99)]
    outbox = outbox_with(tmp_path, rows, failures=[("bad.png", "corrupt")])
    for r in rows:
        write(outbox / "processed" / r.file, 255 - digit_stroke(200))
    html = tmp_path / "report.html"
    result = runner.invoke(app, ["report", "--outbox", str(outbox), "--truth", "folders",
                                 "--html", str(html)])
    assert result.exit_code == 0, result.output
    page = html.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page), "nothing fetched: it opens offline"
    assert page.count("data:image/jpeg;base64,") >= 3 and page.count("data:image/png;base64,") >= 3
    assert 'href="#mistakes-0-1"' in page and 'id="mistakes-0-1"' in page
    assert "3 taken for 5: 1" in page and "corrupt" in page


def test_html_report_of_an_outbox_whose_inputs_were_deleted_says_so(tmp_path):
    outbox = outbox_with(tmp_path, [row("a.png", "1", 0.5)])
    html = tmp_path / "r.html"
    assert runner.invoke(app, ["report", "--outbox", str(outbox), "--html", str(html)]).exit_code == 0
    assert "input not kept" in html.read_text()


@pytest.mark.parametrize("name", ["<script>alert(1)</script>.png", 'q"uote.png'])
def test_html_report_escapes_what_files_are_called(tmp_path, name):
    outbox = outbox_with(tmp_path, [row(name, "1", 0.5)])
    html = tmp_path / "r.html"
    assert runner.invoke(app, ["report", "--outbox", str(outbox), "--html", str(html)]).exit_code == 0
    page = html.read_text()
    assert name not in page and "alert(1)</script>" not in page, "only the report's own script"
    assert page.count("<script>") == 1


def test_a_big_outbox_summarised_in_parts_says_what_one_pass_says(tmp_path, monkeypatch):
    """The parallel path (one part per process, merged in file order) against one pass."""
    from worker.report import parallel

    rows = [row(f"{i % 10}/{i:04d}.png", str((i * 7) % 10), 0.5 + (i % 50) / 100,
                at=f"2026-11-{1 + i % 9:02d}T{i % 24:02d}:00:00.000Z",
                review=("low-margin",) if i % 37 == 0 else ()) for i in range(600)]
    outbox = outbox_with(tmp_path, rows)
    jsonl = outbox / "predictions.jsonl"
    lines = jsonl.read_bytes().splitlines(keepends=True)
    jsonl.write_bytes(b"".join(lines[:300]) + b"damaged\n" + b"".join(lines[300:]))
    caps = Caps(review=30, gallery=5, mistakes=3)
    one = build_report(outbox, truth="folders", caps=caps)
    monkeypatch.setattr(parallel, "PARALLEL_BYTES", 0)
    cut, real_parts = [], parallel.parts
    monkeypatch.setattr(parallel, "parts", lambda path, count: cut.append(count) or real_parts(path, count))
    for processes in (2, 3):
        monkeypatch.setattr(parallel.os, "cpu_count", lambda n=processes: n)
        assert build_report(outbox, truth="folders", caps=caps) == one
    assert cut == [2, 3], "summarised in parts"


def _sigterm_in_worker(path, filters, start, end):
    """Stands in for the report's part worker: says how it would take a SIGTERM."""
    import signal
    from types import SimpleNamespace

    return SimpleNamespace(default=signal.getsignal(signal.SIGTERM) == signal.SIG_DFL), None


def test_the_reports_workers_end_on_sigterm_whatever_the_parent_does(tmp_path, monkeypatch):
    """Under the daemon or uvicorn, SIGTERM only sets a flag; a forked part worker must not
    inherit that, or the pool's SIGTERM at its end leaves it alive and the report waits for ever."""
    import signal
    from types import SimpleNamespace

    from worker.report import parallel

    jsonl = tmp_path / "predictions.jsonl"
    jsonl.write_text("".join(f'{{"file": "{i}.png"}}\n' for i in range(100)))
    monkeypatch.setattr(parallel, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(parallel, "_work", _sigterm_in_worker)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        template = SimpleNamespace(truth=None)  # _work is replaced: only its truth is read
        defaults = [part.default for part, _ in parallel.summarise(jsonl, template, Filters())]
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert defaults == [True, True]
