"""A small dataset of a new kind for the tests: tick boxes as a scanner sees them.

Five classes, none of them digits: a box ticked, crossed, left empty, scribbled out or filled
in, drawn with OpenCV at a random size, place and pen, on uneven paper with noise, a slight
rotation and sometimes JPEG. Class names carry what users' names do (``/``, a comma, blanks,
non-ASCII), so they are tested all the way to the outbox.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from worker.training.reviewed import label_folder

CLASSES = ("ticked ✓", "crossed/x", "empty, blank", "scribbled out", "filled ■")


def render(kind: int, rng: np.random.Generator) -> np.ndarray:
    side = int(rng.integers(56, 120))
    page = np.full((side, side), rng.integers(200, 245), np.float32)
    page += np.linspace(0, rng.uniform(-25, 10), side)[None, :]  # uneven light
    box = int(rng.integers(side // 3, side * 2 // 3))
    x, y = (int(rng.integers(2, side - box - 2)) for _ in range(2))
    ink, pen = float(rng.integers(10, 80)), int(rng.integers(1, 4))
    cv2.rectangle(page, (x, y), (x + box, y + box), ink, pen)
    _mark(page, CLASSES[kind], (x, y, box), ink, pen, rng)
    turn = cv2.getRotationMatrix2D((side / 2, side / 2), rng.uniform(-6, 6), 1.0)
    page = cv2.warpAffine(page, turn, (side, side), borderMode=cv2.BORDER_REPLICATE)
    page += rng.normal(0, rng.uniform(2, 8), page.shape)
    return np.clip(cv2.GaussianBlur(page, (3, 3), rng.uniform(0.3, 1.0)), 0, 255).astype(np.uint8)


def _mark(page, kind: str, where: tuple[int, int, int], ink: float, pen: int, rng) -> None:
    x, y, box = where
    m = max(2, box // 6)

    def at(fx: float, fy: float) -> tuple[int, int]:
        return int(x + m + fx * (box - 2 * m)), int(y + m + fy * (box - 2 * m))

    if kind.startswith("ticked"):
        points = [at(0, 0.55), at(0.35, 0.95), at(1.0, rng.uniform(-0.1, 0.15))]
        cv2.polylines(page, [np.array(points)], False, ink, pen + 1)
    elif kind.startswith("crossed"):
        cv2.line(page, at(0, 0), at(1, 1), ink, pen + 1)
        cv2.line(page, at(1, 0), at(0, 1), ink, pen + 1)
    elif kind.startswith("scribbled"):
        points = [at(*rng.uniform(0, 1, 2)) for _ in range(14)]
        cv2.polylines(page, [np.array(points)], False, ink, pen)
    elif kind.startswith("filled"):
        cv2.rectangle(page, at(0, 0), at(1, 1), ink, -1)


def write_folder(root: Path, per_class: int, seed: int = 0) -> Path:
    """``root/<class>/NNN.png`` (every fifth a JPEG) for each class."""
    rng = np.random.default_rng(seed)
    for kind, name in enumerate(CLASSES):
        folder = root / label_folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            suffix = ".jpg" if i % 5 == 4 else ".png"
            cv2.imwrite(str(folder / f"{i:03d}{suffix}"), render(kind, rng))
    return root
