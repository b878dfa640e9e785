"""Folders of one's own labelled images as training sets: listing, checks, splits, the cache."""

from __future__ import annotations

import gzip

import cv2
import numpy as np
import pytest
from factories import digit_stroke
from typer.testing import CliRunner

from worker.cli import app
from worker.errors import ConfigError
from worker.preprocess import DIGITS, load_input
from worker.training import folder_dataset, folder_listing
from worker.training.datasets import IDX_NAMES
from worker.training.reviewed import label_folder


def _images(folder, count: int, start: int = 0, suffix: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        page = 255 - digit_stroke()
        cv2.line(page, (2, 2 + i % 20), (25, 25), 0, 1)
        cv2.imwrite(str(folder / f"{i:03d}{suffix}"), page)


def test_a_folder_per_class_with_nested_folders_and_escaped_names(tmp_path):
    _images(tmp_path / label_folder("T-shirt/top"), 4)
    _images(tmp_path / label_folder("T-shirt/top") / "summer" / "2024", 3, start=10)
    _images(tmp_path / "Ankle boot", 7)
    _images(tmp_path / "Bag, small", 6)
    (tmp_path / "Bag, small" / "notes.txt").write_text("not an image")
    (tmp_path / "Bag, small" / ".thumbs").mkdir()
    (tmp_path / "Bag, small" / ".thumbs" / "x.png").write_bytes(b"hidden")

    listing = folder_listing.list_folder(tmp_path)

    assert listing.class_names == ("Ankle boot", "Bag, small", "T-shirt/top")
    assert listing.layout == "class folders"
    assert np.bincount(listing.labels).tolist() == [7, 6, 7], "a nested folder is its class's"
    assert [p.name for p in listing.skipped] == ["notes.txt"], "hidden files are not even counted"


def test_class_names_keep_their_numeric_order():
    assert sorted(["10", "2", "1"], key=folder_listing.natural_key) == ["1", "2", "10"]


def test_idx_files_are_a_built_in_datasets_source_and_class_folders_are_ones_own(tmp_path):
    idx = tmp_path / "idx"
    idx.mkdir()
    for name in IDX_NAMES.values():
        (idx / f"{name}.gz").write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\0"))
    (idx / "extra").mkdir()
    _images(tmp_path / "own" / "a", 1)
    (tmp_path / "table").mkdir()
    (tmp_path / "table" / "labels.csv").write_text("file,label\n")

    assert not folder_listing.is_folder_dataset(idx)
    assert folder_listing.is_folder_dataset(tmp_path / "own")
    assert folder_listing.is_folder_dataset(tmp_path / "table")
    assert not folder_listing.is_folder_dataset(tmp_path / "nope")


def test_labels_csv_with_and_without_splits(tmp_path):
    _images(tmp_path / "scans", 12)
    quoted = '"naïve, no"'
    rows = [f"scans/{i:03d}.png,{'yes' if i % 2 else quoted}" for i in range(12)]
    (tmp_path / "labels.csv").write_text("file,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    listing = folder_listing.list_folder(tmp_path)
    assert listing.class_names == ("naïve, no", "yes") and listing.layout == "labels.csv"
    assert listing.splits == [None] * 12

    splits = ["test" if i < 2 else "train" for i in range(12)]
    (tmp_path / "labels.csv").write_text("file,label,split\n" + "\n".join(
        f"{row},{split}" for row, split in zip(rows, splits, strict=True)) + "\n")
    split_of = folder_dataset.assign_splits(folder_listing.list_folder(tmp_path), test_share=0.2,
                                            validation_share=0.1, seed=0)
    assert list(split_of[:2]) == ["test", "test"], "the table's test split is kept"
    assert "validation" in split_of and "test" not in split_of[2:]


def test_labels_csv_may_not_name_a_file_outside_the_folder(tmp_path):
    (tmp_path / "data").mkdir()
    _images(tmp_path, 1)
    (tmp_path / "data" / "labels.csv").write_text("file,label\n../000.png,a\n")
    with pytest.raises(ConfigError, match="no file inside"):
        folder_listing.list_folder(tmp_path / "data")


def test_a_class_with_too_few_images_is_refused_by_name(tmp_path):
    _images(tmp_path / "plenty", 20)
    _images(tmp_path / "rare", 3)
    with pytest.raises(ConfigError, match=r"'rare' \(3\)"):
        folder_listing.list_folder(tmp_path)


def test_one_class_is_not_a_classifier(tmp_path):
    _images(tmp_path / "only", 20)
    with pytest.raises(ConfigError, match="1 class"):
        folder_listing.list_folder(tmp_path)


@pytest.mark.parametrize("name", ["two\nlines", " padded", "=HYPERLINK(1)", "@SUM(1)", ""])
def test_class_names_that_would_break_a_row_are_refused(name):
    assert folder_listing.class_name_problem(name)


@pytest.mark.parametrize("name", ["T-shirt/top", "Ankle boot", "a, b", "naïve ✓", '"quoted"', "-1", "7"])
def test_class_names_of_any_printable_text_are_fine(name):
    assert folder_listing.class_name_problem(name) is None


def test_the_split_is_stratified_and_the_same_every_time(tmp_path):
    _images(tmp_path / "big", 100)
    _images(tmp_path / "small", 10)
    listing = folder_listing.list_folder(tmp_path)
    split_of = folder_dataset.assign_splits(listing, test_share=0.2, validation_share=0.1, seed=7)
    for c, (test, val) in enumerate([(20, 10), (2, 1)]):
        assert np.sum((listing.labels == c) & (split_of == "test")) == test
        assert np.sum((listing.labels == c) & (split_of == "validation")) == val
    again = folder_dataset.assign_splits(listing, test_share=0.2, validation_share=0.1, seed=7)
    assert list(again) == list(split_of)
    other = folder_dataset.assign_splits(listing, test_share=0.2, validation_share=0.1, seed=8)
    assert list(other) != list(split_of)


def test_given_train_and_test_folders_are_kept_and_validation_comes_from_train(tmp_path):
    _images(tmp_path / "train" / "a", 20)
    _images(tmp_path / "train" / "b", 20)
    _images(tmp_path / "test" / "a", 5)
    _images(tmp_path / "test" / "b", 5)
    listing = folder_listing.list_folder(tmp_path)
    split_of = folder_dataset.assign_splits(listing, test_share=0.2, validation_share=0.1, seed=0)
    assert listing.layout == "split folders"
    assert {"test": 10, "validation": 4, "train": 36} == {s: int(np.sum(split_of == s)) for s in
                                                          folder_listing.SPLITS}
    lines = folder_dataset.balance_report(listing, split_of)
    assert lines[0] == "2 classes, 50 images (split folders): train 36, validation 4, test 10"


def test_prepared_inputs_are_the_daemons_and_come_from_the_cache_next_time(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _images(tmp_path / "data" / "a", 10)
    _images(tmp_path / "data" / "b", 10, start=30, suffix=".jpg")
    (tmp_path / "data" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")

    first = folder_dataset.prepare(tmp_path / "data", name="ab", profile=DIGITS, seed=0)

    x_test, y_test = first.arrays["test"]
    assert isinstance(x_test, np.memmap) and x_test.shape[1:] == (28, 28, 1)
    assert first.summary["unreadable"] == 1 and first.spec.class_names == ("a", "b")
    assert first.spec.profile == DIGITS
    assert sum(len(first.arrays[s][1]) for s in folder_listing.SPLITS) == 20
    expected = load_input(tmp_path / "data" / "a" / "000.png", DIGITS).pixels
    assert any(np.array_equal(x, expected) for s in folder_listing.SPLITS for x in first.arrays[s][0]), \
        "inputs made exactly as the daemon makes them"

    caplog.set_level("INFO")
    second = folder_dataset.prepare(tmp_path / "data", name="ab", profile=DIGITS, seed=0)
    assert "from the cache" in caplog.text
    assert np.array_equal(second.arrays["train"][0], first.arrays["train"][0])

    (tmp_path / "data" / "a" / "000.png").unlink()
    folder_dataset.prepare(tmp_path / "data", name="ab", profile=DIGITS, seed=0)
    assert len(list((tmp_path / "cache" / "worker" / "folders").iterdir())) == 1, "one set a name"


@pytest.mark.parametrize(("name", "message"), [("mnist", "built-in"), ("../up", "letters, digits")])
def test_a_model_name_must_be_a_plain_name_of_its_own(tmp_path, name, message):
    with pytest.raises(ConfigError, match=message):
        folder_dataset.model_name(name, tmp_path)
    assert folder_dataset.model_name(None, tmp_path / "tick-boxes") == "tick-boxes"


@pytest.mark.train
def test_options_of_ones_own_data_are_refused_with_a_built_in_dataset(tmp_path):
    result = CliRunner().invoke(app, ["train", "--dataset", "mnist", "--profile", "objects-v2"])
    assert result.exit_code == 78
    assert "--name and --profile are for --data DIR" in result.output

    _images(tmp_path / "a", 5)
    _images(tmp_path / "b", 5)
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--limit", "100"])
    assert result.exit_code == 78 and "--limit is for the built-in datasets" in result.output


def test_two_folders_that_name_one_class_are_refused(tmp_path):
    """`aA` and `a%41` both decode to the class `aA`: one of them would silently swallow the
    other's images."""
    for folder in ("aA", "a%41", "b"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    with pytest.raises(ConfigError, match="two folders name the class 'aA'"):
        folder_listing.list_folder(tmp_path / "data")
