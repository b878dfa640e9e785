"""Architectures by parameter count, and a real (short) training run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from worker.training import archs

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("name", "params"),
    [("seed-cnn", 113_898), ("fashion-cnn", 356_234), ("lenet", 61_706), ("seed-3conv", 81_066),
     ("worker-cnn", 326_826), ("worker-cnn-slim", 209_474), ("worker-cnn-lite", 243_114)],
)
def test_parameter_counts(name, params):
    assert archs.build(name).count_params() == params


def test_short_training_run_saves_a_serving_model(tmp_path):
    from worker.model import publish
    from worker.model.classifier import Classifier
    from worker.training.train import train

    result = train(dataset="mnist", arch="seed-cnn", epochs=1, limit=6000, validation=1000,
                   output=tmp_path / "tiny.keras", verbose=0)
    for suffix in (".keras", ".tflite", ".json"):
        assert (tmp_path / f"tiny{suffix}").is_file()
    card = json.loads((tmp_path / "tiny.json").read_text())
    assert card["params"] == 113_898 and card["epochs_run"] == 1 and card["best_epoch"] == 1
    assert len(card["confusion_matrix"]) == 10
    assert card["test_accuracy"] > 0.85, "even one epoch on 5,000 digits learns something"
    assert Classifier(result.model_path).runtime == "litert"

    assert card["version"] == publish.current_version(result.model_path), "published as a version"
    assert Classifier(result.model_path).card["checks"]["labels"], "with check images in its card"

    assert card["review"]["temperature"] > 0 and "unlike_training" in card["review"], "the review flag fitted"
    assert len(card["review"]["unlike_training"]["class_thresholds"]) == 10
    assert Classifier(result.model_path).flagger.distance is not None
    assert Classifier(result.model_path).flagger.odd_shape is not None, "the ink's shape fitted too"
    assert Classifier(result.model_path).flagger.not_digit is not None, "digits told from printed letters"
    fitted_on = card["review"]["not_digit"]["fitted_on"]
    assert fitted_on == "5000 training digits against 1000 printed letters and symbols"

    again = train(dataset="mnist", arch="seed-cnn", epochs=1, limit=6000, validation=1000,
                  learning_rate=1e-9, init_from=result.model_path, output=tmp_path / "tiny.keras",
                  scan_augment=0.1, verbose=0)
    assert publish.current_version(result.model_path) == again.card["version"] != card["version"]
    assert Classifier(tmp_path / "tiny" / card["version"] / "tiny.keras").version == card["version"], \
        "a new version goes beside the old one, which stays whole"
    assert again.card["init_from"]["test_accuracy"] == card["test_accuracy"]
    assert again.card["learning_rate"] == 1e-9 and again.card["scan_augment"] == 0.1
    # with a learning rate of ~0 nothing moves: the same accuracy proves the weights were loaded
    assert abs(again.card["test_accuracy"] - card["test_accuracy"]) < 0.005


def test_init_from_another_arch_is_refused(tmp_path):
    from worker.errors import ConfigError
    from worker.training.train import train

    first = train(dataset="mnist", arch="lenet", epochs=1, limit=2000, validation=500,
                  output=tmp_path / "lenet.keras", verbose=0, publish_mode="always")  # it is no good yet
    with pytest.raises(ConfigError, match="not seed-cnn"):
        train(dataset="mnist", arch="seed-cnn", epochs=1, limit=2000, validation=500,
              init_from=first.model_path, output=tmp_path / "x.keras", verbose=0)


def test_calibrate_gives_a_model_from_before_the_flag_its_review(tmp_path):
    """A model whose LiteRT file has one output and whose card has no review section serves
    without the flag; ``worker calibrate`` fits it and publishes the result as a new version."""
    import keras

    from worker.model import publish
    from worker.model.classifier import Classifier
    from worker.training.train import calibrate, train

    made = train(dataset="mnist", arch="lenet", epochs=1, limit=3000, validation=500,
                 output=tmp_path / "made.keras", verbose=0, publish_mode="always")  # no good yet
    old = tmp_path / "old"
    old.mkdir()
    net = keras.saving.load_model(made.model_path, compile=False)
    net.save(old / "m.keras")
    net.export(str(old / "m.tflite"), format="litert", verbose=False)
    card = {k: v for k, v in made.card.items() if k not in ("review", "version")}
    (old / "m.json").write_text(json.dumps(card))
    before = Classifier(old / "m.keras")
    assert before.flagger is None and not before.has_features
    publish.publish_checked(old / "m.keras", tmp_path / "m.keras", force=True)  # past the gate

    result = calibrate(tmp_path / "m.keras")
    after = Classifier(tmp_path / "m.keras")
    assert after.has_features and after.flagger.distance is not None and after.flagger.odd_shape is not None
    assert after.version == result.card["version"] == publish.current_version(tmp_path / "m.keras")
    assert result.card["test_accuracy"] == made.card["test_accuracy"], "the weights are not touched"


def _where_the_teacher_is_wrong_the_label_alone_is_taught(teacher_path):
    from types import SimpleNamespace

    from worker.model.classifier import Classifier
    from worker.preprocess import normalize_many
    from worker.training import datasets
    from worker.training.fitting import training_targets

    data = datasets.load("mnist")
    x, y = normalize_many(data.train_images[:2000]), data.train_labels[:2000]
    splits = SimpleNamespace(x_train=x, y_train=y, y_val=y[:10])
    (soft, _), record = training_targets(splits, teacher_path, 0.7, [str(d) for d in range(10)])
    wrong = Classifier(teacher_path).predict_proba(x).argmax(axis=1) != y
    assert record["label_only"] == int(wrong.sum()) > 0
    assert np.array_equal(soft[wrong], np.eye(10, dtype=np.float32)[y[wrong].astype(int)])
    assert (soft[~wrong].max(axis=1) < 1).all(), "elsewhere the teacher's answer is mixed in"


def test_a_student_learns_from_its_teachers_answers(tmp_path):
    from worker.errors import ConfigError
    from worker.training.train import train

    teacher = train(dataset="mnist", arch="lenet", epochs=1, limit=3000, validation=500,
                    output=tmp_path / "teacher.keras", verbose=0, publish_mode="always")  # a poor one
    student = train(dataset="mnist", arch="seed-cnn", epochs=1, limit=6000, validation=1000,
                    teacher=teacher.model_path, teacher_weight=0.7, output=tmp_path / "student.keras",
                    verbose=0)
    assert student.card["teacher"] == {"path": str(teacher.model_path), "version": teacher.card["version"],
                                       "test_accuracy": teacher.card["test_accuracy"], "weight": 0.7,
                                       "label_only": student.card["teacher"]["label_only"]}
    assert student.card["teacher"]["label_only"] > 0, "a poor teacher is wrong on some"
    _where_the_teacher_is_wrong_the_label_alone_is_taught(teacher.model_path)
    assert student.card["teacher_weight"] == 0.7 and student.card["test_accuracy"] > 0.8
    with pytest.raises(ConfigError, match="--teacher-weight is the teacher's share"):
        train(dataset="mnist", arch="lenet", teacher=teacher.model_path, teacher_weight=1.5,
              output=tmp_path / "w.keras", verbose=0)
    with pytest.raises(ConfigError, match="other classes"):
        train(dataset="fashion-mnist", arch="lenet", epochs=1, limit=1000, validation=200,
              teacher=teacher.model_path, output=tmp_path / "f.keras", verbose=0)


def test_training_without_tensorflow_says_how_to_get_it_in_one_line(monkeypatch, tmp_path):
    """Serving needs no TensorFlow, so ./scripts/run does not install it: `worker train` then
    names the extra that does (./scripts/run train installs it), exit 78, never a traceback."""
    import sys

    from typer.testing import CliRunner

    from worker.cli import app

    monkeypatch.setitem(sys.modules, "keras", None)  # as if it were not installed
    result = CliRunner().invoke(app, ["train", "--epochs", "1", "--output", str(tmp_path / "m.keras")])
    assert result.exit_code == 78, result.output
    assert "needs the train extra: pip install" in result.output and "[train]" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_a_limit_holds_out_a_tenth_for_validation():
    from worker.training.splits import validation_size

    assert validation_size(None) == 5000 and validation_size(2000) == 200 and validation_size(90_000) == 5000
