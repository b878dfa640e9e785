"""The gate before a model serves: a worse model is kept as a version, not published."""

from __future__ import annotations

import json

import pytest
from model_sets import copy_set
from typer.testing import CliRunner

from worker.cli import app
from worker.model import publish
from worker.model.classifier import Classifier
from worker.model.gate import judge

DIGITS = [str(d) for d in range(10)]

runner = CliRunner()


def card(accuracy: float, recalls: dict | None = None, *, dataset: str = "mnist",
         test_size: int = 10_000) -> dict:
    per_class = test_size // len(DIGITS)
    return {"dataset": dataset, "class_names": DIGITS, "test_accuracy": accuracy,
            "per_class_test_accuracy": recalls or dict.fromkeys(DIGITS, accuracy),
            "confusion_matrix": [[per_class] + [0] * 9] * 10}


def all_ones() -> dict:
    """What a run that learnt nothing gives: every digit called a 1."""
    return card(0.1135, {name: (1.0 if name == "1" else 0.0) for name in DIGITS})


def test_a_model_that_learnt_nothing_never_passes_even_with_nothing_serving():
    verdict = judge(all_ones(), None)
    assert not verdict.passed and "11.35 %" in verdict.reason and "'0'" in verdict.reason


@pytest.mark.parametrize(("accuracy", "passed"), [(0.9961, True), (0.9912, True), (0.9905, False)])
def test_test_accuracy_may_fall_by_the_tolerance_and_no_more(accuracy, passed):
    verdict = judge(card(accuracy), card(0.9961))
    assert verdict.passed is passed, verdict.reason
    if not passed:
        assert "99.05 %" in verdict.reason and "99.61 %" in verdict.reason


def test_a_class_that_collapses_fails_even_when_the_average_holds():
    recalls = dict.fromkeys(DIGITS, 0.995) | {"7": 0.80}
    verdict = judge(card(0.98, recalls), card(0.98))
    assert not verdict.passed and "'7'" in verdict.reason


def test_cards_of_other_test_splits_are_not_compared():
    assert judge(card(0.90, dataset="fashion-mnist"), card(0.9961)).passed
    assert judge(card(0.90, test_size=2000), card(0.9961)).passed


def test_publish_refuses_a_worse_version_and_force_serves_it(served, real_model_path, tmp_path):
    before = publish.current_version(served)
    bad = copy_set(real_model_path, tmp_path / "bad" / "mnist.keras", version="bad",
                   test_accuracy=0.1135, per_class_test_accuracy=all_ones()["per_class_test_accuracy"])
    refused = runner.invoke(app, ["publish", str(bad), "--model", str(served)])
    assert refused.exit_code == 1 and "not published: 11.35 %" in refused.output, refused.output
    assert "--force" in refused.output
    assert publish.current_version(served) == before and not (served.parent / "mnist" / "bad").exists()
    forced = runner.invoke(app, ["publish", str(bad), "--model", str(served), "--force"])
    assert forced.exit_code == 0, forced.output
    assert Classifier(served).version == "bad"
    back = runner.invoke(app, ["publish", str(served.parent / "mnist" / before), "--model", str(served)])
    assert back.exit_code == 0, back.output  # rolling back to the better one passes


@pytest.mark.slow
def test_train_keeps_a_model_that_learnt_nothing_as_a_version_but_does_not_serve_it(served):
    from worker.errors import NotPublished
    from worker.training.train import train

    before = publish.current_version(served)
    with pytest.raises(NotPublished, match="not published") as refused:
        train(dataset="mnist", arch="seed-cnn", epochs=1, limit=2000, validation=500, learning_rate=1e-9,
              augment=0.0, output=served, verbose=0)
    assert publish.current_version(served) == before, "what served still serves"
    kept = [p for p in (served.parent / "mnist").iterdir() if p.name not in (before, "current")]
    assert len(kept) == 1 and str(kept[0]) in str(refused.value), "kept, and the message names it"
    assert json.loads((kept[0] / "mnist.json").read_text())["test_accuracy"] < 0.5


def test_a_class_the_test_split_has_no_image_of_is_not_taken_for_collapsed():
    """A folder dataset's test folders may lack a class: its recall of 0 means nothing."""
    lacking = card(0.99) | {"per_class_test_accuracy": dict.fromkeys(DIGITS, 0.99) | {"9": 0.0},
                            "confusion_matrix": [[100] + [0] * 9] * 9 + [[0] * 10]}
    assert judge(lacking, None).passed
