"""Pictures for the HTML report: each row's input as it was scanned, and the 28x28 image the
model saw, small enough to inline as data URIs (a few KB each).

The input is read back from the outbox's ``processed/`` folder, where the daemon archived it
(under its own name, or one with its claim id when that was taken); with ``--on-success
delete`` there is nothing to show. The 28x28 is made again by the same preprocessing, with the
profile the row's classes imply (digits, or objects such as clothes).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import cv2
import numpy as np

from worker.archive import destinations
from worker.errors import InputError
from worker.outbox.records import PROCESSED_DIR, claim_of
from worker.preprocess import DEFAULT_LIMITS, DIGITS, OBJECTS, normalize
from worker.preprocess.loading import grey_page
from worker.preprocess.reading import read_bytes

SCAN_SIDE = 96  # the longer side of an input's thumbnail, in pixels
SEEN_SCALE = 2  # the 28x28 shown at twice its size, pixels kept sharp
DIGIT_CLASSES = [str(d) for d in range(10)]


class Thumbnails:
    """Pictures by row id, each made once however many lists show the row."""

    def __init__(self, outbox: Path) -> None:
        self.processed = Path(outbox) / PROCESSED_DIR
        self._made: dict[str, dict | None] = {}

    def of(self, row: dict, class_names: list[str]) -> dict | None:
        """``{"scan": data URI, "seen": data URI}``, or None if the input is not kept."""
        if row["id"] not in self._made:
            self._made[row["id"]] = self._make(row, class_names)
        return self._made[row["id"]]

    def _make(self, row: dict, class_names: list[str]) -> dict | None:
        path = archived_input(self.processed, row)
        if path is None:
            return None
        try:
            grey = page_of(path, row.get("page"))
            seen = normalize(grey, DIGITS if class_names == DIGIT_CLASSES else OBJECTS)
        except (InputError, OSError):
            return None
        return {"scan": _jpeg_uri(_shrink(grey)), "seen": seen_uri(seen)}


def archived_input(processed: Path, row: dict) -> Path | None:
    """Where the daemon archived a row's input: a name with the row's claim id is surely its
    own, so those are looked at first; then the plain name."""
    rel = os.fsdecode(base64.b64decode(row["file_bytes"])) if "file_bytes" in row else row["file"]
    if "page" in row:
        rel = rel[: rel.rindex("#")]
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        return None  # not a name the daemon writes: never look outside processed/
    for path in reversed(list(destinations(processed, rel, claim_of(row["id"])))):
        if path.is_file():
            return path
    return None


def page_of(path: Path, page: int | None) -> np.ndarray:
    """The image of an archived input in 8-bit grey (of a document, its page ``page``); a
    document, a TIFF or a big file decoded in the sandbox, as the daemon decoded it."""
    data = read_bytes(path, max_bytes=DEFAULT_LIMITS.max_bytes, follow_symlinks=False)
    return grey_page(data, path.name, page)


def _shrink(grey: np.ndarray) -> np.ndarray:
    scale = SCAN_SIDE / max(grey.shape)
    if scale >= 1:
        return grey
    size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def seen_uri(seen: np.ndarray) -> str:
    """The (28, 28, 1) model input as a PNG data URI, enlarged with its pixels kept sharp."""
    pixels = np.round(seen[:, :, 0] * 255).astype(np.uint8)
    return _png_uri(cv2.resize(pixels, None, fx=SEEN_SCALE, fy=SEEN_SCALE, interpolation=cv2.INTER_NEAREST))


def _jpeg_uri(grey: np.ndarray) -> str:
    return _data_uri("jpeg", cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, 80])[1])


def _png_uri(grey: np.ndarray) -> str:
    return _data_uri("png", cv2.imencode(".png", grey)[1])


def _data_uri(kind: str, encoded: np.ndarray) -> str:
    return f"data:image/{kind};base64,{base64.b64encode(encoded.tobytes()).decode('ascii')}"
