"""From review to model: export the reviewed inputs as a folder per label; train on such a folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from factories import digit_stroke, write
from outboxes import outbox_with, row
from typer.testing import CliRunner

from worker.cli import app
from worker.preprocess import DIGITS
from worker.training.reviewed import read_extra

runner = CliRunner()


def _export(review_lines: list[str], outbox, target):
    """``worker export-reviewed target`` of an outbox whose reviews.jsonl holds these lines."""
    (outbox / "reviews.jsonl").write_text("\n".join(review_lines) + "\n")
    result = runner.invoke(app, ["export-reviewed", str(target), "--outbox", str(outbox)])
    assert result.exit_code == 0, result.output
    return result


def test_reviewed_inputs_are_exported_under_the_label_a_person_gave(tmp_path):
    rows = [row("in/a.png", "7", 0.6), row("b.png", "3", 0.99), row("gone.png", "5", 0.5)]
    outbox = outbox_with(tmp_path, rows)
    for r in rows[:2]:
        write(outbox / "processed" / r.file, 255 - digit_stroke(100))
    decisions = [(rows[0], "3"), (rows[0], "1"), (rows[1], "3"), (rows[2], "6")]  # a's second decision wins
    lines = [json.dumps({"id": r.id, "file": r.file, "predicted": r.label, "label": label})
             for r, label in decisions]
    result = _export(lines, outbox, tmp_path / "set")
    assert "exported 2 image(s) under 2 label(s)" in result.output
    assert "1 reviewed input(s) were not kept" in result.output
    assert [p.name for p in (tmp_path / "set" / "1").iterdir()] == [f"{rows[0].id}-a.png"]
    assert [p.name for p in (tmp_path / "set" / "3").iterdir()] == [f"{rows[1].id}-b.png"]


def test_nothing_reviewed_is_a_clear_error(tmp_path):
    outbox = outbox_with(tmp_path, [row("a.png", "1", 0.9)])
    result = runner.invoke(app, ["export-reviewed", str(tmp_path / "set"), "--outbox", str(outbox)])
    assert result.exit_code == 78 and "nothing has been reviewed" in result.output


def test_an_extra_folder_is_read_through_the_same_preprocessing(tmp_path):
    write(tmp_path / "x" / "3" / "a.png", 255 - digit_stroke(100))
    write(tmp_path / "x" / "3" / "b.jpg", 255 - digit_stroke(60))
    write(tmp_path / "x" / "misc" / "c.png", 255 - digit_stroke(60))
    (tmp_path / "x" / "3" / "notes.txt").write_text("not an image")
    inputs, labels = read_extra(tmp_path / "x", [str(d) for d in range(10)], DIGITS)
    assert inputs.shape == (2, 28, 28, 1) and labels.tolist() == [3, 3]
    assert 0.9 < inputs.max() <= 1.0


@pytest.mark.slow
def test_train_adds_the_extra_folder_to_the_training_split_only(tmp_path):
    from worker.training.train import train

    for i in range(6):
        write(tmp_path / "x" / "7" / f"{i}.png", 255 - np.roll(digit_stroke(100), i * 5, axis=1))
    result = train(dataset="mnist", arch="lenet", epochs=1, limit=2000, validation=500,
                   output=tmp_path / "m.keras", extra=tmp_path / "x", verbose=0,
                   publish_mode="always")  # one epoch: no good yet, and not what this is about
    assert result.card["extra"] == {"path": str(tmp_path / "x"), "images": 6}
    assert result.card["train_size"] == 1500 + 6 and result.card["validation_size"] == 500


def test_a_bad_line_of_reviews_is_skipped_and_counted(tmp_path):
    """A page's id with a file that is not of that page, a foreign line, a torn one: each is
    counted and skipped; the good decisions are still exported."""
    rows = [row("a.png", "7", 0.6)]
    outbox = outbox_with(tmp_path, rows)
    write(outbox / "processed" / "a.png", 255 - digit_stroke(100))
    lines = [json.dumps({"id": f"{rows[0].id}#2", "file": "a.png", "predicted": "7", "label": "1"}),
             json.dumps({"id": "../../x", "file": "a.png", "predicted": "7", "label": "1"}),
             json.dumps({"id": rows[0].id, "file": "a.png", "predicted": "7", "label": 3}),
             json.dumps(["not", "a", "decision"]),
             json.dumps({"id": rows[0].id, "file": "a.png", "predicted": "7", "label": "3"}),
             '{"id": "torn']
    result = _export(lines, outbox, tmp_path / "set")
    assert "exported 1 image(s) under 1 label(s)" in result.output
    assert "5 line(s) of reviews.jsonl were not decisions and were skipped" in result.output
    assert [p.name for p in (tmp_path / "set" / "3").iterdir()] == [f"{rows[0].id}-a.png"]


@pytest.mark.parametrize("label", ["T-shirt/top", "100%", ".hidden", "..", "a\\b"])
def test_a_class_name_is_one_folder_both_ways(label):
    from worker.training.reviewed import folder_label, label_folder

    folder = label_folder(label)
    assert "/" not in folder and "\0" not in folder and not folder.startswith(".")
    assert folder_label(folder) == label


def test_fashion_classes_are_exported_as_folders_train_extra_reads_back(tmp_path):
    from worker.preprocess import OBJECTS
    from worker.training.datasets import FASHION_MNIST

    classes = list(FASHION_MNIST.class_names)
    rows = [row("shirt.png", "7", 0.6)]
    outbox = outbox_with(tmp_path, rows)
    write(outbox / "processed" / "shirt.png", 255 - digit_stroke(100))
    decision = {"id": rows[0].id, "file": "shirt.png", "predicted": "7", "label": "T-shirt/top"}
    (outbox / "reviews.jsonl").write_text(json.dumps(decision) + "\n")
    result = runner.invoke(app, ["export-reviewed", str(tmp_path / "set"), "--outbox", str(outbox)])
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "set").iterdir()] == ["T-shirt%2Ftop"]
    _, labels = read_extra(tmp_path / "set", classes, OBJECTS)
    assert labels.tolist() == [classes.index("T-shirt/top")]
