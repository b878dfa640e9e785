"""The shipped models: LiteRT and Keras agree, test-split accuracy holds, bad models fail clearly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from worker.errors import ModelError
from worker.model.classifier import Classifier
from worker.preprocess import normalize_many
from worker.training import datasets

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mnist():
    return datasets.load("mnist")


def _test_accuracy(classifier: Classifier, data: datasets.Dataset) -> float:
    """Accuracy on the test split through the serving path (preprocessing + runtime)."""
    x = normalize_many(data.test_images, classifier.profile)
    batches = [x[i : i + 1000] for i in range(0, len(x), 1000)]
    pred = np.concatenate([classifier.predict_proba(batch).argmax(1) for batch in batches])
    return float((pred == data.test_labels).mean())


def test_litert_and_keras_agree_on_1000_test_images(real_model_path, mnist):
    x = normalize_many(mnist.test_images[:1000])
    lite = Classifier(real_model_path, runtime="litert")
    keras = Classifier(real_model_path, runtime="keras")
    assert (lite.runtime, keras.runtime) == ("litert", "keras")
    p_lite, p_keras = lite.predict_proba(x), keras.predict_proba(x)
    assert np.array_equal(p_lite.argmax(1), p_keras.argmax(1))
    assert np.abs(p_lite - p_keras).max() < 1e-4


def test_shipped_mnist_model_meets_996_on_the_test_split(real_model_path, mnist):
    accuracy = _test_accuracy(Classifier(real_model_path), mnist)
    assert accuracy >= 0.996, accuracy
    assert json.loads(real_model_path.with_suffix(".json").read_text())["test_accuracy"] >= 0.996


# The Fashion-MNIST target is 93.5 %; the shipped model reaches 93.83 % (seed 004: 92.02 %).
FASHION_TARGET = 0.935


def test_shipped_fashion_model_holds_its_accuracy(real_model_path):
    path = real_model_path.with_name("fashion-mnist.keras")
    if not path.exists():
        pytest.fail(f"{path} is missing")
    classifier = Classifier(path)
    accuracy = _test_accuracy(classifier, datasets.load("fashion-mnist"))
    assert accuracy >= FASHION_TARGET, accuracy
    assert classifier.class_names[9] == "Ankle boot"


def _copy_model(real_model_path, tmp_path):
    for suffix in (".keras", ".tflite", ".json"):
        shutil.copy(real_model_path.with_suffix(suffix), tmp_path / f"m{suffix}")
    return tmp_path / "m.keras"


def test_missing_card_is_explained(real_model_path, tmp_path):
    path = _copy_model(real_model_path, tmp_path)
    path.with_suffix(".json").unlink()
    with pytest.raises(ModelError, match="card .* is missing"):
        Classifier(path)


def test_card_with_wrong_class_count_is_refused(real_model_path, tmp_path):
    path = _copy_model(real_model_path, tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card["class_names"] = card["class_names"][:5]
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="does not belong"):
        Classifier(path)


def test_corrupt_model_is_explained(real_model_path, tmp_path):
    path = _copy_model(real_model_path, tmp_path)
    path.with_suffix(".tflite").unlink()
    path.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load model"):
        Classifier(path)


def test_missing_model_is_explained(tmp_path):
    with pytest.raises(ModelError, match="card"):
        Classifier(tmp_path / "nothing.keras")


def test_no_runtime_banner_on_stderr_and_nothing_else_lost(tmp_path):
    """LiteRT's C++ prints 'Created TensorFlow Lite XNNPACK delegate' on its first allocation,
    on every command's stderr even with -q; it is taken out there, and only it."""
    import subprocess
    import sys

    from worker import defaults

    done = subprocess.run([sys.executable, "-m", "worker", "-q", "predict", "--model", str(defaults.MODEL),
                           str(defaults.REPO_ROOT / "samples" / "scan-7.jpg")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split()[1] == "7", done.stderr
    assert done.stderr == "", done.stderr

    code = ("import os, sys\nfrom worker.model.runtimes import _stderr_without\n"
            "with _stderr_without(b'banner'):\n"
            "    os.write(2, b'one\\nthe banner here\\n')\n    print('two', file=sys.stderr)\n"
            "print('three', file=sys.stderr)\n")
    kept = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert kept.stderr == "one\ntwo\nthree\n"


def test_where_stderr_cannot_be_caught_the_model_still_opens(monkeypatch):
    """No temporary file (a full /tmp, no descriptor left): the banner shows, nothing fails."""
    import tempfile

    from worker.model import runtimes as model

    def no_file(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_file)
    ran = []
    with model._stderr_without(b"banner"):
        ran.append(True)
    assert ran == [True]
