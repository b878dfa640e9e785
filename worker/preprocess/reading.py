"""Reading an input file safely and decoding it to 8-bit grey.

Only regular files are opened (never a FIFO or a device), the size and the header's pixel
count are checked *before* decoding, and OpenCV's decode is flattened to grey: alpha onto
white paper, 16-bit and float scaled to 8 bits. Every refusal is an ``InputError`` with a kind.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from worker import defaults
from worker.errors import InputError

cv2.setNumThreads(1)  # one image is tiny work; OpenCV's own thread pool only adds overhead

# Formats as Pillow names them in the header; what OpenCV decodes and scanners write.
FORMATS = {"PNG", "JPEG", "BMP", "TIFF", "WEBP", "PPM"}
# Suffixes that promise an image; a file with one that is no image is "not-an-image".
IMAGE_SUFFIXES = {
    ".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pgm", ".ppm",
    ".pbm", ".pnm",
}
# The first bytes of each supported format: a file that starts so but has no readable header
# was cut off (an interrupted copy), rather than not being an image at all.
SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")
# Below this contrast (0-255) between two greys, there is no shape to see.
MIN_CONTRAST = 40


@dataclass(frozen=True)
class Limits:
    """Per-file limits, checked before decoding."""

    max_bytes: int = defaults.MAX_FILE_BYTES
    max_pixels: int = defaults.MAX_PIXELS


DEFAULT_LIMITS = Limits()


def read_bytes(path: Path, *, max_bytes: int, follow_symlinks: bool = True, name: str | None = None) -> bytes:
    """Read a regular file, never blocking on a FIFO or reading a device forever.
    ``name`` is how messages call the file (default: its file name)."""
    name = name or path.name
    fd = _open(path, name, follow_symlinks)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError("not-a-regular-file", f"{name} is not a regular file")
        if info.st_size == 0:
            raise InputError("empty", f"{name} is empty (0 bytes)")
        if info.st_size > max_bytes:
            raise InputError("too-large", f"{name} is {info.st_size} bytes, over the {max_bytes} limit")
        return _read_all(fd, info.st_size)
    except OSError as exc:
        raise InputError("unreadable", f"cannot read {name}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def _open(path: Path, name: str, follow_symlinks: bool) -> int:
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        return os.open(path, flags)
    except PermissionError as exc:
        raise InputError("permission-denied", f"cannot read {name}: permission denied") from exc
    except FileNotFoundError as exc:
        raise InputError("missing", f"{name} disappeared before it could be read") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError("not-a-regular-file", f"{name} is a symlink; not followed") from exc
        raise InputError("unreadable", f"cannot open {name}: {exc.strerror}") from exc


def _read_all(fd: int, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk; None if ``data`` is not a well-formed start."""
    if len(data) >= 24 and data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def check_header(data: bytes, name: str, *, max_pixels: int) -> str:
    """Identify the format from the header alone and refuse oversized images; return format.
    PNG (the common small file) is read directly; Pillow reads the other headers."""
    png = _png_size(data)
    if png is not None:
        return _check_size_and_end("PNG", *png, data=data, name=name, max_pixels=max_pixels)
    from PIL import Image, UnidentifiedImageError

    suffix = Path(name).suffix.lower()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                fmt, (width, height) = img.format, img.size
    except Image.DecompressionBombError as exc:
        raise InputError("too-large", f"{name} claims too many pixels ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        if data.startswith(SIGNATURES):
            raise InputError("truncated", f"{name} starts like an image but ends too soon") from exc
        if suffix in IMAGE_SUFFIXES:
            raise InputError("not-an-image", f"{name} is not a readable image") from exc
        raise InputError("unsupported", f"{name} is not a supported image file") from exc
    if fmt not in FORMATS:
        raise InputError("unsupported", f"{name} is {fmt}; supported: {', '.join(sorted(FORMATS))}")
    return _check_size_and_end(fmt, width, height, data=data, name=name, max_pixels=max_pixels)


def _check_size_and_end(fmt: str, width: int, height: int, *, data: bytes, name: str, max_pixels: int) -> str:
    if width * height > max_pixels:
        raise InputError(
            "too-large",
            f"{name} is {width}x{height} pixels, over the {max_pixels:,} pixel limit",
        )
    if _looks_truncated(data, fmt):
        raise InputError("truncated", f"{name} is truncated ({fmt} end marker missing)")
    return fmt


def _looks_truncated(data: bytes, fmt: str) -> bool:
    if fmt == "PNG":
        return b"IEND" not in data[-64:]
    if fmt == "JPEG":
        return b"\xff\xd9" not in data[-1024:]
    return False


def decode(data: bytes, name: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise InputError("corrupt", f"{name} could not be decoded (corrupt image data)")
    return to_grey(image)


def to_grey(image: np.ndarray) -> np.ndarray:
    """8-bit grey from whatever OpenCV decoded: 16-bit or float scaled, alpha on white."""
    image = _to_8bit(image)
    if image.ndim == 2:
        return image
    channels = image.shape[2]
    if channels == 1:
        return image[:, :, 0]
    alpha = None
    if channels in (2, 4):
        alpha = image[:, :, -1]
        image = image[:, :, :-1]
    grey = image[:, :, 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if alpha is None:
        return grey
    return _flatten_alpha(grey, alpha)


def _to_8bit(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    if image.dtype == np.uint8:
        return image
    image = image.astype(np.float32)
    peak = float(image.max()) if image.size else 1.0
    return np.clip(image * (255.0 if peak <= 1.0 else 255.0 / peak), 0, 255).astype(np.uint8)


def _flatten_alpha(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite on white paper; if that leaves no contrast, the shape lives in alpha alone."""
    a = alpha.astype(np.float32) / 255.0
    flat = (grey.astype(np.float32) * a + 255.0 * (1.0 - a)).astype(np.uint8)
    if int(flat.max()) - int(flat.min()) < MIN_CONTRAST <= int(alpha.max()) - int(alpha.min()):
        return 255 - alpha
    return flat
