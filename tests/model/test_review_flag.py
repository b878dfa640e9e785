"""The review flag: calibration, the unlike-training distance, the ink's shape (odd-shape), and
the shipped models' cards, served by ``predict`` and ``watch``; the scan renderings training
learns from."""

from __future__ import annotations

import base64
import csv
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from factories import NOT_DIGITS, printed_on_card, printed_symbol, rule_through, write
from model_sets import model_inputs
from typer.testing import CliRunner

from worker.cli import app
from worker.model import ink_shape
from worker.model.classifier import Classifier
from worker.model.review_flag import (
    SHARE,
    Distance,
    OddShape,
    calibrated,
    expected_calibration_error,
    fit_temperature,
)
from worker.preprocess import DIGITS, DIGITS_V4, normalize, normalize_many
from worker.training import datasets, scan_render


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_temperature_scaling_finds_an_over_sure_models_temperature():
    """Labels drawn from softmax(z), a model that says softmax(2.5 z): the fit finds ~2.5, and
    the calibrated confidence means what it says."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, (20000, 10))
    labels = np.array([rng.choice(10, p=p) for p in _softmax(z)])
    over_sure = _softmax(2.5 * z).astype(np.float32)
    temperature = fit_temperature(over_sure, labels)
    assert 2.3 < temperature < 2.7
    fixed = calibrated(over_sure, temperature)
    assert np.array_equal(fixed.argmax(axis=1), over_sure.argmax(axis=1)), "never changes a label"
    assert expected_calibration_error(fixed, labels) < expected_calibration_error(over_sure, labels) / 3


def test_distance_is_small_near_the_classes_and_large_away_from_them():
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 5, (3, 16))
    labels = rng.integers(0, 3, 3000)
    features = centres[labels] + rng.normal(0, 1, (3000, 16))
    distance = Distance.fit(features, labels)
    near = distance(centres[[0, 1, 2]] + rng.normal(0, 1, (3, 16)))
    away = distance(rng.normal(0, 5, (3, 16)))
    assert near.max() < away.min()
    again = Distance.from_dict(json.loads(json.dumps(distance.to_dict())))
    assert np.allclose(again(features[:10]), distance(features[:10]), atol=1e-4), "kept in the card as it is"


@pytest.fixture(scope="module")
def shipped(real_model_path) -> Classifier:
    return Classifier(real_model_path)


@pytest.mark.slow
def test_shipped_card_holds_calibration_and_thresholds(shipped, real_model_path):
    for classifier in (shipped, Classifier(real_model_path.with_name("fashion-mnist.keras"))):
        review = classifier.card["review"]
        assert 0.5 < review["temperature"] < 3
        assert review["expected_calibration_error"]["after"] < 0.02
        assert classifier.has_features and classifier.flagger.distance is not None


def test_a_review_section_of_another_network_is_refused(real_model_path, tmp_path):
    from worker.errors import ModelError

    copy = _hotter_copy(real_model_path, tmp_path / "m", 1.0)
    card = json.loads(copy.with_suffix(".json").read_text())
    unlike = card["review"]["unlike_training"]
    unlike["shape"] = [64, 64]
    unlike["means"] = base64.b64encode(np.zeros((10, 64), "<f4").tobytes()).decode()
    unlike["transform"] = base64.b64encode(np.eye(64, dtype="<f4").tobytes()).decode()
    copy.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="gives 128 features but its card's review section measures 64"):
        Classifier(copy)


def test_review_thresholds_for_other_classes_are_refused(real_model_path, tmp_path):
    from worker.errors import ModelError

    copy = _hotter_copy(real_model_path, tmp_path / "m", 1.0)
    card = json.loads(copy.with_suffix(".json").read_text())
    card["review"]["unlike_training"]["class_thresholds"] = [20.0] * 9
    card["review"].pop("odd_shape", None)  # the shipped card's shape thresholds are for its 10
    copy.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"thresholds for \[9\] classes, not its 10"):
        Classifier(copy)


@pytest.mark.parametrize("edit", [
    lambda review: review.update(temperature="hot"),
    lambda review: review["unlike_training"].update(means="not base64!"),
    lambda review: review["odd_shape"].update(limits=[1, 2]),
    lambda review: review.pop("min_margin"),
])
def test_a_review_section_edited_into_nonsense_is_refused_when_the_model_loads(real_model_path, tmp_path,
                                                                               edit):
    """One line and exit 78 (a ModelError), never a traceback at the first prediction."""
    from worker.errors import ModelError

    copy = _hotter_copy(real_model_path, tmp_path / "m", 1.0)
    card = json.loads(copy.with_suffix(".json").read_text())
    edit(card["review"])
    copy.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="review section is malformed"):
        Classifier(copy)


@pytest.mark.slow
def test_flag_finds_clothing_letters_and_textures_but_few_digits(shipped):
    """Measured on 1000 each (bench/review_flag.py, model eb480bd2c19d): 94.6 % of clothing,
    94.4 % of letters and symbols, 99.9 % of textures flagged; 2.7 % of all MNIST test digits
    (the issue's bound is 3 %; the first 1,000 alone, harder than the rest, 3.3 %). Floors a
    little below."""
    rng = np.random.default_rng(7)
    fashion = datasets.load("fashion-mnist").test_images[:300]
    mnist = datasets.load("mnist").test_images
    floors = {"clothing": (fashion, 0.85), "letters and symbols": (None, 0.85), "textures": (None, 0.95)}
    for name, (images, floor) in floors.items():
        pages = images if images is not None else [NOT_DIGITS[name](rng) for _ in range(300)]
        reviews = shipped.predict(model_inputs(pages)).reviews
        assert np.mean([bool(r) for r in reviews]) >= floor, name
        assert np.mean(["unlike-training" in r for r in reviews]) >= floor - 0.2, name
    digits = shipped.predict(normalize_many(mnist)).reviews
    assert np.mean([bool(r) for r in digits]) <= 0.03


def _hotter_copy(real_model_path, folder, temperature: float):
    """The shipped model's files with another temperature in its card."""
    folder.mkdir()
    for suffix in (".keras", ".tflite"):
        shutil.copy(real_model_path.with_suffix(suffix), folder / f"m{suffix}")
    card = json.loads(real_model_path.with_suffix(".json").read_text())
    card["review"]["temperature"] = temperature
    (folder / "m.json").write_text(json.dumps(card))
    return folder / "m.keras"


@pytest.mark.slow
def test_predict_and_watch_write_the_review_and_calibrated_confidence(tmp_path, shipped, real_model_path):
    """A shirt dropped in beside a digit: its row says why to look; the digit's confidence is
    the card's calibration of the network's output (a temperature of 3 here, to see it)."""
    mnist, fashion = datasets.load("mnist"), datasets.load("fashion-mnist")
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    digit = 255 - mnist.test_images[0]
    write(inbox / "digit.png", digit)
    shirt = next(i for i in range(100) if "unlike-training" in shipped.predict(
        normalize(fashion.test_images[i])[None]).reviews[0])
    write(inbox / "shirt.png", fashion.test_images[shirt])
    model = _hotter_copy(real_model_path, tmp_path / "model", 3.0)
    raw = shipped.raw(normalize(digit)[None])[0]
    expected = float(calibrated(raw, 3.0).max())
    assert expected < float(raw.max()) - 0.01

    runner = CliRunner()
    shown = runner.invoke(app, ["predict", str(inbox / "shirt.png"), str(inbox / "digit.png"), "--json",
                                "--model", str(model)])
    shirt_record, digit_record = (json.loads(line) for line in shown.stdout.splitlines())
    assert "unlike-training" in shirt_record["review"].split() and shirt_record["review_score"] >= 1
    assert digit_record["confidence"] == pytest.approx(expected, abs=1e-5)
    done = runner.invoke(app, ["watch", "--once", "--inbox", str(inbox), "--outbox", str(outbox),
                               "--model", str(model)])
    assert done.exit_code == 0, done.output
    with open(outbox / "predictions.csv", newline="", encoding="utf-8") as fh:
        rows = {row["file"]: row for row in csv.DictReader(fh)}
    assert "unlike-training" in rows["shirt.png"]["review"] and float(rows["shirt.png"]["review_score"]) >= 1
    assert float(rows["digit.png"]["confidence"]) == pytest.approx(expected, abs=1e-5)


def test_scan_renderings_are_digits_through_the_real_preprocessing():
    digits = datasets.load("mnist").train_images[:24]
    rendered = scan_render.render_many(digits, DIGITS, seed=3)
    assert rendered.shape == (24, 28, 28, 1) and rendered.dtype == np.float32
    assert 0 <= rendered.min() and rendered.max() <= 1
    assert np.array_equal(rendered, scan_render.render_many(digits, DIGITS, seed=3)), "the same for a seed"
    plain = normalize_many(digits)
    assert np.abs(rendered - plain).mean(axis=(1, 2, 3)).min() > 0, "each one differs from the plain digit"


def test_odd_shape_thresholds_are_per_class_and_kept_in_the_card():
    """Fitted on drawn 'digits' (one stroke for class 0, two rings for class 1): a ring-shaped
    input is odd for class 0 and not for class 1; the card's JSON gives the same answers."""
    import cv2

    rng = np.random.default_rng(2)
    strokes, rings = [], []
    for _ in range(200):
        stroke, ring = np.zeros((28, 28), np.float32), np.zeros((28, 28), np.float32)
        x = int(rng.integers(11, 17))
        cv2.line(stroke, (x, 4), (x + int(rng.integers(-3, 4)), 23), 1.0, int(rng.integers(2, 4)))
        cv2.circle(ring, (14, 9), int(rng.integers(4, 6)), 1.0, 2)
        cv2.circle(ring, (14, 19), int(rng.integers(4, 6)), 1.0, 2)
        strokes.append(stroke)
        rings.append(ring)
    inputs = np.stack(strokes + rings)[..., None]
    labels = np.repeat([0, 1], 200)
    odd = OddShape.fit(inputs, labels, inputs, labels, classes=2)
    again = OddShape.from_dict(json.loads(json.dumps(odd.to_dict())))
    measured = ink_shape.measure(np.stack([rings[0], strokes[0]])[..., None])
    for shape in (odd, again):
        as_stroke, as_ring = shape(measured, np.array([0, 0])), shape(measured, np.array([1, 1]))
        assert as_stroke[0] > 1 >= as_stroke[1], "a ring is no stroke"
        assert as_ring[0] <= 1, "a ring is a ring"


@pytest.fixture(scope="module")
def from_before(real_model_path, tmp_path_factory) -> Classifier:
    """The shipped model with its card as cards were before the ink's shape: no ``odd_shape``
    and one distance threshold for every class (as 746fd7bf89b0-r4a636d, shipped until
    eb480bd2c19d, has it)."""
    model = _hotter_copy(real_model_path, tmp_path_factory.mktemp("before") / "model", 1.0)
    card = json.loads(model.with_suffix(".json").read_text())
    card["review"].pop("odd_shape")
    card["review"].pop("not_digit")
    card["review"]["unlike_training"].pop("class_thresholds")
    model.with_suffix(".json").write_text(json.dumps(card))
    return Classifier(model)


def test_a_card_from_before_the_ink_shape_flags_as_it_did(from_before):
    """A card with neither the ink's shape nor thresholds per class: its flag is the one it
    was published with (and no row says odd-shape)."""
    shipped = from_before
    assert "odd_shape" not in shipped.card["review"] and shipped.flagger.odd_shape is None
    assert shipped.flagger.max_distance.ndim == 0
    # float32, as the distances it is compared with (NumPy 1.26 compares it with the float as float64)
    threshold = shipped.card["review"]["unlike_training"]["threshold"]
    assert shipped.flagger.max_distance == pytest.approx(threshold)
    rng = np.random.default_rng(4)
    mnist = datasets.load("mnist").test_images[:50]
    x = model_inputs([rule_through(d, rng) for d in mnist] + [printed_symbol(rng) for _ in range(50)])
    assert not any("odd-shape" in r for r in shipped.predict(x).reviews)


@pytest.fixture(scope="module")
def shaped(shipped, real_model_path, tmp_path_factory) -> Classifier:
    """The shipped model with the ink's shape fitted in its card, on 16,000 MNIST training
    digits (as ``worker calibrate`` fits it on the model's own splits; with 10,000 the 99.95 %
    thresholds of each class rest on a few digits: 0.85 % of MNIST test flagged odd-shape with
    eb480bd2c19d, at the bound with the model before, 0.35 % with 16,000)."""
    train = datasets.load("mnist")
    x = normalize_many(train.train_images[:16000])
    y = train.train_labels[:16000].astype(int)
    temperature = shipped.card["review"]["temperature"]
    model = _hotter_copy(real_model_path, tmp_path_factory.mktemp("shaped") / "model", temperature)
    card = json.loads(model.with_suffix(".json").read_text())
    fit, held = slice(0, 8000), slice(8000, None)
    card["review"]["odd_shape"] = OddShape.fit(x[fit], y[fit], x[held], y[held], classes=10).to_dict()
    model.with_suffix(".json").write_text(json.dumps(card))
    return Classifier(model)


@pytest.mark.slow
def test_odd_shape_names_rules_still_attached_and_letters_but_few_digits(shaped):
    """Digits whose form rule runs into the ink, read by digits-v4 (which keeps the rule), and
    letters a digit never looks like by its shape alone (three pieces, wider than high, a ring
    in a ring): flagged odd-shape; MNIST test digits seldom (thresholds at 99.95 % a measure)."""
    rng = np.random.default_rng(5)
    mnist = datasets.load("mnist").test_images
    attached = [rule_through(d, rng) for d in mnist[:200]]
    reviews = shaped.predict(model_inputs(attached, DIGITS_V4)).reviews
    assert np.mean(["odd-shape" in r for r in reviews]) >= 0.5
    letters = [printed_on_card(glyph, 90, side=160) for glyph in "%÷mw©"]
    for glyph, review in zip("%÷mw©", shaped.predict(model_inputs(letters)).reviews, strict=True):
        assert "odd-shape" in review, glyph
    digits = shaped.predict(normalize_many(mnist[:2000])).reviews
    assert np.mean(["odd-shape" in r for r in digits]) <= SHARE["odd-shape"] + 0.005


def test_a_flagger_without_the_inputs_skips_the_ink_shape(shipped):
    """Rows scored without their inputs (the raw outputs alone) are flagged by the other reasons."""
    flagger = replace(shipped.flagger, odd_shape=OddShape({"pieces": np.zeros(10, np.float32)}))
    digits = normalize_many(datasets.load("mnist").test_images[:20])
    probabilities, features = shipped.raw(digits)
    _, without, _ = flagger(probabilities, features)
    _, with_inputs, _ = flagger(probabilities, features, digits)
    assert not any("odd-shape" in r for r in without)
    assert all("odd-shape" in r for r in with_inputs), "a limit of 0 pieces: every digit is odd"
