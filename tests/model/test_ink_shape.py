"""The ink's shape in a model input: each measure on drawn inputs whose answer is known, one
input at a time and in a batch alike."""

from __future__ import annotations

import cv2
import numpy as np

from worker.model import ink_shape


def _canvas() -> np.ndarray:
    return np.zeros((28, 28), np.float32)


def _stroke() -> np.ndarray:
    """A '1': one upright stroke."""
    image = _canvas()
    cv2.line(image, (14, 4), (15, 23), 1.0, 2)
    return image


def _eight() -> np.ndarray:
    """Two rings on top of each other: one blob, two holes."""
    image = _canvas()
    cv2.circle(image, (14, 9), 5, 1.0, 2)
    cv2.circle(image, (14, 19), 5, 1.0, 2)
    return image


def _colon() -> np.ndarray:
    """Three dots in a row: three blobs, wider than high."""
    image = _canvas()
    for x in (5, 13, 21):
        cv2.circle(image, (x, 14), 2, 1.0, -1)
    return image


def _boxed() -> np.ndarray:
    """A stroke in a thin box: two blobs, one hole between them, four edges."""
    image = _stroke()
    cv2.rectangle(image, (6, 0), (22, 27), 1.0, 1)
    return image


def _blot() -> np.ndarray:
    """A filled square: its box all ink, a thick stroke."""
    image = _canvas()
    image[6:22, 6:22] = 1.0
    return image


def test_each_measure_on_shapes_with_known_answers():
    batch = np.stack([_stroke(), _eight(), _colon(), _boxed(), _blot(), _canvas()])[..., None]
    measured = ink_shape.measure(batch)
    assert set(measured) == set(ink_shape.MEASURES)
    assert measured["pieces"].tolist() == [1, 1, 3, 2, 1, 0]
    assert measured["holes"].tolist() == [0, 2, 0, 1, 0, 0]
    assert measured["wide"][2] > 2 and measured["wide"][0] < 0.3
    assert measured["fill"][4] == 1.0 and measured["fill"][1] < 0.6
    assert measured["edges"].tolist()[:5] == [0, 0, 0, 4, 4], "a 1 is too thin for its sides to be edges"
    assert measured["thick"][4] > 3 * measured["thick"][0]
    assert all(float(v[5]) == 0 for v in measured.values()), "no ink: nothing measured"


def test_a_batch_measures_each_input_as_alone():
    """The batch is labelled as one sheet: no blob or hole may run from one input into the
    next, whatever the batch's size (a sheet's last row part empty too)."""
    rng = np.random.default_rng(0)
    shapes = [_stroke(), _eight(), _colon(), _boxed(), _blot()]
    batch = np.stack([shapes[i] for i in rng.integers(0, len(shapes), 23)])
    together = ink_shape.measure(batch)
    for i, image in enumerate(batch):
        alone = ink_shape.measure(image[None])
        assert all(together[name][i] == alone[name][0] for name in ink_shape.MEASURES), i


def test_ink_on_the_inputs_border_joins_no_neighbour():
    """Ink touching every side of its input (a full frame) is one blob with one hole, beside
    another such input."""
    frame = _canvas()
    cv2.rectangle(frame, (0, 0), (27, 27), 1.0, 1)
    measured = ink_shape.measure(np.stack([frame, frame, frame]))
    assert measured["pieces"].tolist() == [1, 1, 1] and measured["holes"].tolist() == [1, 1, 1]


def test_a_batch_larger_than_a_sheet_is_measured_in_chunks(monkeypatch):
    batch = np.stack([_stroke(), _eight(), _colon(), _boxed(), _blot()] * 3)
    whole = ink_shape.measure(batch)
    monkeypatch.setattr(ink_shape, "CHUNK", 4)
    chunked = ink_shape.measure(batch)
    assert all(np.array_equal(whole[name], chunked[name]) for name in ink_shape.MEASURES)
