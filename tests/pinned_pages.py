"""Pages whose model inputs are pinned, per named preprocessing profile.

A profile's name is a promise: a model trained on ``digits-v4`` (the shipped one) or on
``digits-v5`` (one being trained) reads what that profile made of its training images, so
making a profile faster must not change what it outputs. ``tests/test_pinned_profiles.py``
runs these pages through today's code and compares with ``tests/data/pinned_profiles.npz``,
written by this module from the code as it was when the pins were set:

    .venv/bin/python tests/pinned_pages.py   # only for a NEW profile's name, never to "fix" a pin

The pages are the factories' own kinds (scans as bytes through decoding, JPEG and PNG, grey
and colour, A4 and small; harsh scans; markers; low resolution; forms; not-digits), made from
MNIST test digits with fixed seeds.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import factories  # noqa: E402

from worker.errors import InputError  # noqa: E402
from worker.preprocess import PROFILES, load_bytes, normalize  # noqa: E402

PINS = Path(__file__).resolve().parent / "data" / "pinned_profiles.npz"
PINNED_PROFILES = ("digits-v1", "digits-v3", "digits-v4", "digits-v5")
# A page that gives no input: its field is all this, which a real one (uint8 k/255) never is.
REFUSED = -1


PINNED_HARD_SETS = ("harsh scans", "thick marker", "low resolution", "underlined", "boxes and combs",
                    "captions")
PINNED_NOT_DIGITS = ("letters and symbols", "noise pages", "textures")


def pages(digits: np.ndarray) -> Iterator[tuple[str, bytes | np.ndarray]]:
    """(name, page): file bytes (decoded as a dropped file is) or a grey array (normalised as
    it is); ``digits``: MNIST test images. The same pages each run."""
    rng = np.random.default_rng(25)
    take = iter(range(len(digits)))
    for i in range(120):  # the daemon's scanned pages: JPEG and PNG, grey and tinted colour
        page = factories.scan_page(digits[next(take)], rng, colour=i % 3 == 0)
        if i % 4 == 0:  # page-sized, as bench/run.py writes them
            page = cv2.resize(page, (1000, 1400))
        if i % 2:
            yield f"scan-{i}.png", cv2.imencode(".png", page)[1].tobytes()
        else:
            quality = [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 95))]
            yield f"scan-{i}.jpg", cv2.imencode(".jpg", page, quality)[1].tobytes()
    for i in range(6):  # A4 at 300 dpi: decoded scaled down in the DCT
        page = cv2.resize(factories.scan_page(digits[next(take)], rng), (2480, 3508))
        yield f"a4-{i}.jpg", cv2.imencode(".jpg", page, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
    for name in PINNED_HARD_SETS:  # sets added to the factories since are not pinned here
        for i in range(30):
            yield f"{name}-{i}", factories.HARD_SETS[name](digits[next(take)], rng)
    for name in PINNED_NOT_DIGITS:
        for i in range(10):
            yield f"{name}-{i}", factories.NOT_DIGITS[name](rng)
    for i in range(10):  # already MNIST-like: the small path
        yield f"mnist-{i}", digits[next(take)]


def model_input(page: bytes | np.ndarray, name: str, profile_name: str) -> np.ndarray:
    """The 28x28 field ``profile_name`` makes of ``page`` as int16 0-255, or all REFUSED."""
    profile = PROFILES[profile_name]
    try:
        if isinstance(page, bytes):
            pixels = load_bytes(page, profile, name=name).pixels
        else:
            pixels = normalize(page, profile)
    except InputError:
        return np.full((28, 28), REFUSED, np.int16)
    return np.rint(pixels[:, :, 0].astype(np.float64) * 255).astype(np.int16)


def digest(page: bytes | np.ndarray) -> str:
    """Which page it is, so a change in the factories is told apart from one in preprocessing."""
    return hashlib.sha256(page if isinstance(page, bytes) else page.tobytes()).hexdigest()[:16]


def main() -> None:
    from worker.training import datasets

    digits = datasets.load("mnist").test_images
    names, digests, fields = [], [], {p: [] for p in PINNED_PROFILES}
    for name, page in pages(digits):
        names.append(name)
        digests.append(digest(page))
        for profile_name in PINNED_PROFILES:
            fields[profile_name].append(model_input(page, name, profile_name))
    PINS.parent.mkdir(exist_ok=True)
    np.savez_compressed(PINS, names=np.array(names), digests=np.array(digests),
                        **{p: np.stack(f) for p, f in fields.items()})
    print(f"{len(names)} pages pinned for {', '.join(PINNED_PROFILES)} in {PINS}")


if __name__ == "__main__":
    main()
