"""Small images normalised together must be exactly what ``normalize`` makes of each, errors too."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from factories import scan_page, write

from worker.errors import InputError
from worker.preprocess import DIGITS, DIGITS_V1, OBJECTS, load_input, load_many, normalize
from worker.preprocess import loading as loading_module
from worker.preprocess.small import is_small, normalize_stack
from worker.training import datasets


def one_by_one(stack: np.ndarray, profile) -> list:
    out = []
    for image in stack:
        try:
            out.append(normalize(image, profile))
        except InputError as exc:
            out.append(exc)
    return out


def assert_same(together: list, alone: list) -> None:
    assert len(together) == len(alone)
    for i, (a, b) in enumerate(zip(together, alone, strict=True)):
        if isinstance(b, InputError):
            assert isinstance(a, InputError), i
            assert (a.kind, a.message) == (b.kind, b.message), i
        else:
            assert not isinstance(a, InputError), (i, a)
            assert a.dtype == b.dtype and np.array_equal(a, b), i


@pytest.mark.parametrize("profile", [DIGITS, DIGITS_V1, OBJECTS], ids=lambda p: p.name)
def test_mnist_digits_and_their_negatives_come_out_bit_identical(mnist_test, profile):
    digits = mnist_test[0][:1500]
    for stack in (digits, 255 - digits):
        assert_same(normalize_stack(stack, profile), one_by_one(stack, profile))


@pytest.mark.slow
def test_fashion_items_come_out_bit_identical():
    items = datasets.load("fashion-mnist").test_images[:1500]
    for profile in (OBJECTS, DIGITS):
        assert_same(normalize_stack(items, profile), one_by_one(items, profile))


@pytest.mark.parametrize("shape", [(20, 30), (40, 17), (63, 63), (10, 200), (5, 5), (1, 50)])
def test_other_small_shapes_noise_and_resized_digits(mnist_test, shape):
    rng = np.random.default_rng(sum(shape))
    noise = rng.integers(0, 256, (200, *shape)).astype(np.uint8)
    resized = np.stack([cv2.resize(d, shape[::-1], interpolation=cv2.INTER_AREA)
                        for d in mnist_test[0][:200]])
    for stack in (noise, resized):
        for profile in (DIGITS, OBJECTS):
            assert_same(normalize_stack(stack, profile), one_by_one(stack, profile))


def test_blank_and_faint_images_get_the_errors_normalize_gives():
    stack = np.full((6, 28, 28), 200, np.uint8)
    stack[1, 5, 5] = 0  # a dot: ink enough for the contrast, one blob
    stack[2] = np.tile(np.arange(28, dtype=np.uint8) * 2 + 150, (28, 1))  # a faint ramp: blank
    stack[3, :, :14] = 0  # half and half
    stack[4] = 0
    stack[5, 10:18, 12:14] = 30
    together = normalize_stack(stack, DIGITS)
    assert_same(together, one_by_one(stack, DIGITS))
    assert [getattr(r, "kind", "ok") for r in together].count("no-ink") >= 2


def test_what_counts_as_small():
    assert is_small((28, 28)) and is_small((63, 800))
    assert not is_small((64, 64)) and not is_small((20, 801)) and not is_small((28, 28, 3))


def _mixed_files(folder, digits):
    rng = np.random.default_rng(3)
    paths = [write(folder / f"d{i}.png", digits[i]) for i in range(40)]
    paths += [write(folder / f"w{i}.png", cv2.resize(digits[i], (30, 20))) for i in range(5)]
    paths.append(write(folder / "blank.png", np.full((28, 28), 255, np.uint8)))
    paths.append(write(folder / "page.jpg", scan_page(digits[7], rng)))
    paths.append(folder / "broken.png")
    paths[-1].write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return paths


def _compare_batch_to_files(paths):
    batch = load_many(paths, DIGITS, names=[p.name for p in paths])
    for path, got in zip(paths, batch, strict=True):
        try:
            alone = load_input(path, DIGITS)
        except InputError as exc:
            assert isinstance(got, InputError) and (got.kind, got.message) == (exc.kind, exc.message), path
            continue
        assert not isinstance(got, InputError), (path, got)
        assert np.array_equal(got.pixels, alone.pixels) and got.sha256 == alone.sha256, path
    return batch


def test_a_batch_of_mixed_files_loads_as_each_file_alone(tmp_path, mnist_test):
    batch = _compare_batch_to_files(_mixed_files(tmp_path, mnist_test[0]))
    kinds = [getattr(r, "kind", "ok") for r in batch]
    assert kinds.count("ok") == 46 and kinds[-3] == "no-ink" and kinds[-1] != "ok"


def test_a_stack_that_fails_is_normalised_one_by_one(tmp_path, mnist_test, monkeypatch, caplog):
    def broken(stack, profile):
        raise RuntimeError("a bug in the stacked path")

    monkeypatch.setattr(loading_module, "normalize_stack", broken)
    _compare_batch_to_files(_mixed_files(tmp_path, mnist_test[0]))
    assert "one by one instead" in caplog.text


def test_a_batch_normalises_its_small_images_together_and_only_the_rest_one_by_one(tmp_path, mnist_test,
                                                                                  monkeypatch):
    """What makes a bulk backlog fast: no small image goes through ``normalize`` alone."""
    alone = []

    def counted(image, profile):
        alone.append(image.shape)
        return normalize(image, profile)

    monkeypatch.setattr(loading_module, "normalize", counted)
    paths = _mixed_files(tmp_path, mnist_test[0])
    load_many(paths, DIGITS, names=[p.name for p in paths])
    assert len(alone) == 1 and min(alone[0]) >= 64, "only the page is normalised alone"
