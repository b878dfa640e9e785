"""Model versions: publishing is checked and atomic, old versions stay, plain files need force."""

from __future__ import annotations

import os
import shutil

import pytest
from model_sets import SUFFIXES, copy_set
from typer.testing import CliRunner

from worker.cli import app
from worker.errors import ModelError
from worker.model import publish
from worker.model.classifier import Classifier

runner = CliRunner()


def test_the_shipped_models_are_published_versions(real_model_path):
    for name in ("mnist", "fashion-mnist"):
        path = real_model_path.with_name(f"{name}.keras")
        version = publish.current_version(path)
        assert version and Classifier(path).version == version
        assert Classifier(path).card["checks"]["labels"], "the card carries its check images"


def test_publish_lays_out_versions_behind_one_pointer(served, real_model_path):
    home = served.parent / "mnist"
    first = publish.current_version(served)
    assert sorted(p.name for p in home.iterdir()) == sorted([first, "current"])
    for suffix in SUFFIXES:
        link = served.with_suffix(suffix)
        assert os.readlink(link) == f"mnist/current/mnist{suffix}"
    assert Classifier(served).path.parent == home / first, "resolved once, into one version folder"


def test_a_new_version_goes_beside_the_old_and_rollback_is_a_publish(served, real_model_path, tmp_path):
    first = publish.current_version(served)
    second = copy_set(real_model_path, tmp_path / "elsewhere" / "mnist.keras", version="v2")
    result = runner.invoke(app, ["publish", str(second), "--model", str(served)])
    assert result.exit_code == 0, result.output
    assert "version v2" in result.output
    assert publish.current_version(served) == "v2" and Classifier(served).version == "v2"
    assert (served.parent / "mnist" / first / "mnist.tflite").is_file(), "the old version stays"
    back = runner.invoke(app, ["publish", str(served.parent / "mnist" / first), "--model", str(served)])
    assert back.exit_code == 0, back.output
    assert Classifier(served).version == first


def test_a_model_failing_its_check_images_is_not_published(served, real_model_path, tmp_path):
    """An MNIST card beside the Fashion-MNIST network: same shape, same class count, the wrong
    model. Its check images say so, and what serves stays as it was."""
    before = publish.current_version(served)
    wrong = copy_set(real_model_path, tmp_path / "wrong" / "mnist.keras", version="wrong")
    shutil.copyfile(real_model_path.with_name("fashion-mnist.tflite"), wrong.with_suffix(".tflite"))
    result = runner.invoke(app, ["publish", str(wrong), "--model", str(served)])
    assert result.exit_code == 78 and "check images" in result.output, result.output
    assert publish.current_version(served) == before
    assert not (served.parent / "mnist" / "wrong").exists()


def test_plain_files_are_replaced_only_with_force_and_then_kept_as_a_version(real_model_path, tmp_path):
    plain = copy_set(real_model_path, tmp_path / "models" / "mnist.keras", version="old-plain")
    newer = copy_set(real_model_path, tmp_path / "newer" / "mnist.keras", version="v2")
    with pytest.raises(ModelError, match="--force"):
        publish.publish_checked(newer, plain)
    assert not plain.is_symlink() and Classifier(plain).version == "old-plain"
    publish.publish_checked(newer, plain, force=True)
    assert Classifier(plain).version == "v2"
    assert Classifier(plain.parent / "mnist" / "old-plain" / "mnist.keras").version == "old-plain"


def test_a_published_version_is_readable_by_others(served):
    """A service runs as its own user: a version folder must not keep mkdtemp's 0700."""
    folder = served.parent / "mnist" / publish.current_version(served)
    assert folder.stat().st_mode & 0o005 == 0o005


def test_a_version_of_another_model_says_which_model_to_pass(served, real_model_path):
    fashion = real_model_path.with_name("fashion-mnist.keras")
    version = real_model_path.parent / "fashion-mnist" / publish.current_version(fashion)
    result = runner.invoke(app, ["publish", str(version), "--model", str(served)])
    assert result.exit_code == 78, result.output
    assert "pass --model" in result.output and "fashion-mnist.keras" in result.output


def test_a_model_that_does_not_exist_is_said_so_not_its_card(tmp_path):
    with pytest.raises(ModelError, match="nope.keras does not exist"):
        Classifier(tmp_path / "nope.keras")
