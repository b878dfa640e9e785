"""The training renderings of forms, print and the canvas (worker/training/form_render.py), the fonts they
are printed in, and the printed and canvas hard sets drawn apart from them."""

from __future__ import annotations

import numpy as np
import pytest

from worker.preprocess import DIGITS, normalize
from worker.training import datasets, fonts, form_render, scan_render


@pytest.fixture(scope="module")
def digits():
    data = datasets.load("mnist")
    return data.train_images[:60], data.train_labels[:60].astype(int)


def test_training_and_held_out_font_families_are_apart():
    """Both kinds are installed (scripts/test), and no family is in both: the printed hard set
    measures fonts training never saw."""
    training, held_out = fonts.font_files(), fonts.font_files(held_out=True)
    assert len(training) >= 10 and len(held_out) >= 10
    assert not {fonts.family(p) for p in training} & {fonts.family(p) for p in held_out}
    assert {fonts.family(p) for p in held_out} <= fonts.HELD_OUT_FAMILIES


@pytest.mark.parametrize("render", [form_render.on_form, form_render.canvas])
def test_form_and_canvas_renderings_are_pages_the_preprocessing_takes(digits, render):
    rng = np.random.default_rng(4)
    for image in digits[0][:30]:
        page = render(image, rng)
        assert page.dtype == np.uint8 and page.ndim == 2 and min(page.shape) >= 20
        assert normalize(page, DIGITS).shape == (28, 28, 1)


def test_a_printed_rendering_is_its_label(real_model_path):
    """The digit drawn is the label's: the shipped model reads nearly all of 100 of them."""
    from worker.model.classifier import Classifier

    rng = np.random.default_rng(8)
    labels = rng.integers(0, 10, 100)
    inputs = np.stack([normalize(form_render.printed(int(label), rng), DIGITS) for label in labels])
    read = Classifier(real_model_path).predict_proba(inputs).argmax(axis=1)
    assert np.mean(read == labels) >= 0.75  # the model before print was in training: 83 %


def test_render_many_prints_labels_only_when_given(digits):
    """With labels, some renderings are printed digits (unlike any MNIST image's normalisation);
    without (a dataset whose classes are not digits), the same seed gives only scan-like kinds,
    so the two differ where a printed one was drawn, and each is the same for its seed."""
    images, labels = digits
    with_labels = scan_render.render_many(images, DIGITS, seed=2, labels=labels)
    without = scan_render.render_many(images, DIGITS, seed=2)
    assert np.array_equal(with_labels, scan_render.render_many(images, DIGITS, seed=2, labels=labels))
    differ = np.abs(with_labels - without).mean(axis=(1, 2, 3)) > 0
    assert 0 < differ.sum() < len(images)


def test_the_printed_and_canvas_hard_sets_are_drawn_from_their_own_code():
    """The hard sets come from tests/factories.py, in the held-out fonts and the page's brush."""
    from factories import HARD_SETS, LABELLED_SETS

    rng = np.random.default_rng(0)
    page = LABELLED_SETS["printed (held-out fonts)"](7, rng)
    assert page.dtype == np.uint8 and normalize(page, DIGITS).max() > 0.9
    drawing = HARD_SETS["canvas drawings"](datasets.load("mnist").test_images[0], rng)
    assert drawing.shape == (280, 280) and (drawing < 128).mean() > 0.01


@pytest.mark.parametrize("render", [*form_render.FURNITURE, form_render.on_form, form_render.canvas])
def test_a_faint_speck_of_a_digit_is_still_rendered(render):
    """A training image whose ink is a few faint pixels (its crop a pixel or two) gives a page,
    not an error that would stop the whole training run."""
    speck = np.zeros((28, 28), np.uint8)
    speck[13:15, 13:15] = 120
    rng = np.random.default_rng(1)
    for _ in range(20):
        whole = render in (form_render.on_form, form_render.canvas)  # the others take the ink's crop
        image = speck if whole else form_render._crop(speck.astype(np.float32) / 255)
        assert render(image, rng).dtype == np.uint8
