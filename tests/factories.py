"""Real image files for tests and benchmarks, made with OpenCV.

``scan_page`` turns an MNIST digit (white on black, 28x28) into what a user's scanner gives:
dark ink on a big light page, off-centre, unevenly lit, noisy, with dust, saved as JPEG or PNG,
grey or colour.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np


def digit_stroke(size: int = 28) -> np.ndarray:
    """A synthetic '1'-like stroke, white on black, for tests that need no dataset."""
    image = np.zeros((size, size), np.uint8)
    cv2.line(image, (size // 2, size // 5), (size // 2 + 1, size - size // 5), 255, max(2, size // 10))
    return image


def write(path: Path, image: np.ndarray, params: list[int] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix or ".png", image, params or [])
    assert ok, path
    path.write_bytes(encoded.tobytes())
    return path


def scan_page(digit: np.ndarray, rng: np.random.Generator, *, colour: bool = False) -> np.ndarray:
    """An MNIST digit as a scanned page: uint8 grey (H, W) or BGR (H, W, 3)."""
    height, width = int(rng.integers(500, 1400)), int(rng.integers(400, 1000))
    paper = float(rng.uniform(190, 240))
    ramp = np.linspace(-1, 1, width, dtype=np.float32)[None, :] * float(rng.uniform(0, 35))
    vramp = np.linspace(-1, 1, height, dtype=np.float32)[:, None] * float(rng.uniform(0, 20))
    page = np.full((height, width), paper, np.float32) + ramp + vramp
    glyph_h = int(rng.integers(60, min(height, width) // 2))
    glyph = cv2.resize(digit, (glyph_h, glyph_h), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255
    top = int(rng.integers(0, height - glyph_h))
    left = int(rng.integers(0, width - glyph_h))
    ink = float(rng.uniform(10, 90))
    region = page[top : top + glyph_h, left : left + glyph_h]
    page[top : top + glyph_h, left : left + glyph_h] = region - glyph * (region - ink)
    page += rng.normal(0, rng.uniform(2, 8), page.shape).astype(np.float32)
    for _ in range(int(rng.integers(0, 12))):  # dust
        y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
        cv2.circle(page, (x, y), int(rng.integers(1, 3)), float(rng.uniform(40, 120)), -1)
    page = np.clip(page, 0, 255).astype(np.uint8)
    if not colour:
        return page
    tint = rng.uniform(0.85, 1.0, 3).astype(np.float32)
    return np.clip(page[:, :, None].astype(np.float32) * tint, 0, 255).astype(np.uint8)


def write_scan(path: Path, digit: np.ndarray, rng: np.random.Generator) -> Path:
    """A scan-like page of ``digit`` as JPEG (most) or PNG, grey or colour."""
    page = scan_page(digit, rng, colour=bool(rng.random() < 0.4))
    if path.suffix == ".jpg":
        return write(path, page, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 95))])
    return write(path, page)


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout``; never a fixed sleep in a test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
