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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from worker import defaults
from worker.errors import InputError
from worker.extras import decoder
from worker.preprocess.headers import Header, check_header, pdf_render_size

cv2.setNumThreads(1)  # one image is tiny work; OpenCV's own thread pool only adds overhead

# Below this contrast (0-255) between two greys, there is no shape to see.
MIN_CONTRAST = 40
# Pages are shrunk to this longest side before finding the ink: a digit of 1/10 of the page
# still spans ~80 px, far more than the 20 px it ends as, and big scans stay fast. A JPEG this
# many times larger is decoded already scaled down (1/2, 1/4 or 1/8, in the DCT), which skips
# most of its decoding.
WORK_SIDE = 800


@dataclass(frozen=True)
class Limits:
    """Per-file limits, checked before decoding."""

    max_bytes: int = defaults.MAX_FILE_BYTES
    max_pixels: int = defaults.MAX_PIXELS
    max_decoded_bytes: int = defaults.MAX_DECODED_BYTES
    max_scans: int = defaults.MAX_JPEG_SCANS
    max_pages: int = defaults.MAX_PAGES
    decode_seconds: float = defaults.DECODE_TIMEOUT  # in the sandbox (``sandbox.py``)
    decode_memory: int = defaults.DECODE_MEMORY


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


def check_within(data: bytes, name: str, limits: Limits = DEFAULT_LIMITS) -> Header:
    """``check_header`` against ``limits``."""
    return check_header(data, name, max_pixels=limits.max_pixels, max_decoded_bytes=limits.max_decoded_bytes,
                        max_scans=limits.max_scans, max_pages=limits.max_pages)


def decode(data: bytes, name: str, header: Header, max_pixels: int = defaults.MAX_PIXELS) -> np.ndarray:
    """8-bit grey, upright as the EXIF orientation says. JPEGs are decoded strictly (corrupt or
    missing data is an error, not a grey patch) straight to grey; GIFs by Pillow (first frame).
    ``max_pixels`` holds the images inside a PDF page too."""
    if header.format == "JPEG":
        grey = _decode_jpeg(data, name, _least_size(header))
    elif header.format in ("GIF", "HEIF"):
        grey = _decode_with_pillow(data, name)
    elif header.format == "PDF":
        grey = _render_pdf(data, name, header, max_pixels)
    else:
        grey = _decode_with_opencv(data, name)
    return _upright(grey, header.orientation)


def decode_page(data: bytes, name: str, page: int | None, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """``data`` in 8-bit grey (of a document, its page ``page``, the first if there is no such
    page), in this process."""
    header = check_within(data, name, limits)
    if header.pages > 1:
        for number, grey in enumerate(decode_pages(data, name, header, limits.max_pixels), 1):
            if number == (page or 1):
                return grey
    return decode(data, name, header, limits.max_pixels)


def decode_pages(data: bytes, name: str, header: Header, max_pixels: int) -> Iterator[np.ndarray]:
    """Each page of a document (a PDF, a multi-page TIFF) in 8-bit grey, one at a time, so that
    only one page is ever held decoded."""
    if header.format == "PDF":
        yield from _render_pdf_pages(data, name, max_pixels)
        return
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            for page in range(header.pages):
                img.seek(page)
                yield _pillow_grey(img)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InputError("corrupt", f"{name} could not be decoded ({exc})") from exc


def _pillow_grey(img) -> np.ndarray:
    """Grey from a Pillow image of any mode: 16-bit and float scaled (as OpenCV's are), the
    rest through Pillow's own conversion (bilevel fax pages, palettes, CMYK, alpha)."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return to_grey(np.asarray(img))
    return to_grey(np.asarray(img.convert("LA")))


def _decode_with_opencv(data: bytes, name: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise InputError("corrupt", f"{name} could not be decoded (corrupt image data)")
    return to_grey(image)


def _least_size(header: Header) -> tuple[int, int]:
    """The smallest (height, width) a page may be decoded at: its longest side WORK_SIDE."""
    return (WORK_SIDE, 0) if header.height >= header.width else (0, WORK_SIDE)


def _decode_jpeg(data: bytes, name: str, least: tuple[int, int] = (0, 0)) -> np.ndarray:
    import simplejpeg

    try:
        return simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True, min_height=least[0],
                                      min_width=least[1])[:, :, 0]
    except ValueError as exc:
        message = str(exc)
        if "Premature end" in message or "premature end" in message:
            raise InputError("truncated", f"{name} is truncated ({message})") from exc
        if "Corrupt" in message or "corrupt" in message:
            raise InputError("corrupt", f"{name} has corrupt image data ({message})") from exc
        return _decode_with_opencv(data, name)  # what libjpeg cannot turn grey (CMYK JPEGs)


def _decode_with_pillow(data: bytes, name: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return _pillow_grey(img)
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError("corrupt", f"{name} could not be decoded ({exc})") from exc


def _render_pdf(data: bytes, name: str, header: Header, max_pixels: int) -> np.ndarray:
    """A one-page PDF, in grey, at the size ``header`` gives."""
    return next(_render_pdf_pages(data, name, header.width * header.height, max_pixels))


def _render_pdf_pages(data: bytes, name: str, max_pixels: int,
                      image_pixels: int | None = None) -> Iterator[np.ndarray]:
    pypdfium2 = decoder("pypdfium2", "a PDF", name)
    try:
        document = pypdfium2.PdfDocument(data)
        try:
            for page in document:
                _refuse_huge_images(page, name, image_pixels or max_pixels)
                width, _ = pdf_render_size(*page.get_size(), max_pixels)
                bitmap = page.render(scale=width / page.get_width(), grayscale=True)
                yield to_grey(np.array(bitmap.to_numpy(), copy=True))
        finally:
            document.close()
    except pypdfium2.PdfiumError as exc:
        raise InputError("corrupt", f"{name} could not be rendered ({exc})") from exc


def _refuse_huge_images(page, name: str, max_pixels: int) -> None:
    """A page's rendering is bounded by its size, but an image drawn on it is decoded whole
    first: a small PDF may hold a 40000x40000 one. Images are held to the pixel limit too."""
    import pypdfium2.raw as pdfium_c

    for image in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,)):
        width, height = image.get_px_size()
        if width * height > max_pixels:
            raise InputError("too-large", f"{name} holds an image of {width}x{height} pixels, "
                                          f"over the {max_pixels:,} pixel limit")


# EXIF orientation -> what makes the stored image upright (as Pillow's exif_transpose does).
UPRIGHT = {
    2: lambda g: cv2.flip(g, 1),
    3: lambda g: cv2.rotate(g, cv2.ROTATE_180),
    4: lambda g: cv2.flip(g, 0),
    5: cv2.transpose,
    6: lambda g: cv2.rotate(g, cv2.ROTATE_90_CLOCKWISE),
    7: lambda g: cv2.rotate(cv2.transpose(g), cv2.ROTATE_180),
    8: lambda g: cv2.rotate(g, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def _upright(grey: np.ndarray, orientation: int) -> np.ndarray:
    turn = UPRIGHT.get(orientation)
    return grey if turn is None else turn(grey)


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
    if image.dtype == np.uint16:  # one 8-bit copy, no 16-bit temporary
        return cv2.convertScaleAbs(image, alpha=1 / 257)
    if image.dtype == np.uint8:
        return image
    image = image.astype(np.float32)
    peak = float(image.max()) if image.size else 1.0
    return np.clip(image * (255.0 if peak <= 1.0 else 255.0 / peak), 0, 255).astype(np.uint8)


def _flatten_alpha(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite on white paper; if that leaves no contrast, the shape lives in alpha alone.
    In 8-bit arithmetic: a big image never gets float copies."""
    flat = cv2.add(cv2.multiply(grey, alpha, scale=1 / 255), cv2.bitwise_not(alpha))
    if int(flat.max()) - int(flat.min()) < MIN_CONTRAST <= int(alpha.max()) - int(alpha.min()):
        return 255 - alpha
    return flat
