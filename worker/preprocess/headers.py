"""What an image file says about itself, read before anything is decoded.

``check_header`` identifies the format and refuses, from the header alone, what would cost too
much to decode: too many pixels, too many decoded bytes (pixels x channels x bytes per sample,
and a progressive JPEG's coefficient buffer), too many progressive JPEG scans (each scan is a
pass over the whole image: a few MB of them can keep a decoder busy for a minute), and files
whose structure ends too soon. Data after a whole image (a phone's motion photo, a tool's
trailer) is accepted.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from worker import defaults
from worker.errors import InputError
from worker.extras import decoder

# Formats as Pillow names them in the header; what we decode and scanners write.
FORMATS = {"PNG", "JPEG", "BMP", "TIFF", "WEBP", "PPM", "GIF", "HEIF", "PDF"}
# Suffixes that promise an image; a file with one that is no image is "not-an-image".
IMAGE_SUFFIXES = {
    ".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pgm", ".ppm",
    ".pbm", ".pnm", ".gif", ".heic", ".heif", ".pdf",
}
# The first bytes of each supported format: a file that starts so but has no readable header
# was cut off (an interrupted copy), rather than not being an image at all.
SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"RIFF", b"GIF8", b"%PDF-")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> channels as OpenCV decodes it (a palette may carry alpha: count 4).
PNG_CHANNELS = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}
# A JPEG marker: 0xFF then a code that is not a stuffed zero, a restart or a fill byte (after
# fill bytes the last 0xFF matches). Starting with a literal lets the search skip fast.
JPEG_MARKER = re.compile(rb"\xff([\x01-\xcf\xd8-\xfe])")
JPEG_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
JPEG_EOI, JPEG_SOS = 0xD9, 0xDA
# EXIF tag of the orientation a camera or phone wrote.
EXIF_ORIENTATION = 0x0112
# ISO media files (HEIC from phones) start with an ftyp box naming one of these brands.
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
# Formats whose decoding cost the header cannot bound, by their first bytes: TIFF and BigTIFF
# (many pages, tiles, fax compression), HEIF (an ISO media file), and a PDF (its header may
# follow up to a kilobyte of anything, as PDF readers accept).
UNBOUNDED_SIGNATURES = (  # every TIFF prefix Pillow accepts (TiffImagePlugin.PREFIXES)
    b"II*\x00", b"MM\x00*", b"MM*\x00", b"II\x00*", b"II+\x00", b"MM\x00+",
)
# Formats whose decoding goes to the sandbox whatever their first bytes looked like.
SANDBOXED_FORMATS = frozenset({"TIFF", "HEIF", "PDF"})
PDF_HEADER_WITHIN = 1024
# A PDF page (a scanner's default output) is rendered at this resolution: a digit written on a
# page stays several times larger than the 20 pixels it ends as.
PDF_DPI = 150
POINTS_PER_INCH = 72


@dataclass(frozen=True)
class Header:
    format: str
    width: int
    height: int
    channels: int = 1
    sample_bytes: int = 1
    scans: int = 0  # JPEG: how many scans (a baseline JPEG has one)
    progressive: bool = False
    orientation: int = 1  # EXIF: 1 upright; 3, 6, 8 rotated; 2, 4, 5, 7 mirrored
    pages: int = 1  # a PDF's pages, a TIFF's (its width and height: those of its largest page)

    @property
    def decoded_bytes(self) -> int:
        """What decoding allocates at most: the image, and for a progressive JPEG the
        coefficients of every block (two bytes a sample), kept until the last scan."""
        image = self.width * self.height * self.channels * self.sample_bytes
        return image * 3 if self.progressive else image


def unbounded(head: bytes, size: int) -> bool:
    """Whether a file must be decoded in the sandbox, from its first bytes (at least
    ``PDF_HEADER_WITHIN`` of them, or all) and its size: never from its name."""
    return (head.startswith(UNBOUNDED_SIGNATURES) or head[4:8] == b"ftyp"
            or b"%PDF-" in head[:PDF_HEADER_WITHIN] or size >= defaults.SANDBOX_BYTES)


def check_header(data: bytes, name: str, *, max_pixels: int, max_decoded_bytes: int,
                 max_scans: int, max_pages: int) -> Header:
    """The header of an image that is whole and affordable to decode, or InputError."""
    if data.startswith(UNBOUNDED_SIGNATURES) and tiff_pages(data, max_pages + 1) > max_pages:
        raise InputError("too-many-pages", f"{name} has more than {max_pages} pages, over the limit")
    if data.startswith(PNG_SIGNATURE):
        header = _png_header(data, name)
    elif data.startswith(b"%PDF-"):
        header = _pdf_header(data, name, max_pixels)
    else:
        header = _other_header(data, name)
    if header.width * header.height > max_pixels:
        raise InputError("too-large", f"{name} is {header.width}x{header.height} pixels, "
                                      f"over the {max_pixels:,} pixel limit")
    if header.decoded_bytes > max_decoded_bytes:
        raise InputError("too-large", f"{name} would take {header.decoded_bytes / 2**20:,.0f} MiB to "
                                      f"decode, over the {max_decoded_bytes / 2**20:,.0f} MiB limit")
    if header.scans > max_scans:
        raise InputError("too-many-scans", f"{name} is a progressive JPEG of {header.scans} scans, "
                                           f"over the limit of {max_scans}")
    if header.pages > max_pages:
        raise InputError("too-many-pages", f"{name} has {header.pages} pages, over the limit of {max_pages}")
    return header


def tiff_pages(data: bytes, most: int) -> int:
    """A TIFF's pages, counted along its chain of page directories (each one's entry count and
    next offset read, nothing else) and no further than ``most``: Pillow's count parses every
    directory whole, which for tens of thousands of tiny pages takes seconds."""
    order = "little" if data[:2] == b"II" else "big"
    big = data[2:4] in (b"+\x00", b"\x00+")  # BigTIFF: 8-byte counts and offsets
    width, entry = (8, 20) if big else (2, 12)
    offset_size = 8 if big else 4
    start = 8 if big else 4
    offset = int.from_bytes(data[start : start + offset_size], order)
    seen: set[int] = set()
    while 0 < offset and offset + width <= len(data) and offset not in seen and len(seen) < most:
        seen.add(offset)
        count = int.from_bytes(data[offset : offset + width], order)
        next_at = offset + width + count * entry
        offset = int.from_bytes(data[next_at : next_at + offset_size], order)
    return len(seen)


def _png_header(data: bytes, name: str) -> Header:
    """Walk the chunks to IEND: a file that ends before it is truncated; anything after it is
    left alone."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise InputError("truncated", f"{name} starts like a PNG but ends too soon")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, colour = data[24], data[25]
    position = 8
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        position += 12 + length
        if kind == b"IEND" and position <= len(data):
            return Header("PNG", width, height, PNG_CHANNELS.get(colour, 4), 2 if depth == 16 else 1)
    raise InputError("truncated", f"{name} is truncated (the PNG ends before its IEND chunk)")


def _pdf_header(data: bytes, name: str, max_pixels: int) -> Header:
    """The first page's size as it will be rendered: ``PDF_DPI``, less if that would pass the
    pixel limit (a page may claim any size)."""
    pypdfium2 = decoder("pypdfium2", "a PDF", name)
    try:
        document = pypdfium2.PdfDocument(data)
        try:
            pages = len(document)
            width, height = document[0].get_size()
        finally:
            document.close()
    except (pypdfium2.PdfiumError, IndexError) as exc:
        raise InputError("corrupt", f"{name} is not a readable PDF ({exc})") from exc
    width, height = pdf_render_size(width, height, max_pixels)
    return Header("PDF", width, height, pages=pages)


def pdf_render_size(width: float, height: float, max_pixels: int) -> tuple[int, int]:
    """A page of ``width`` x ``height`` points in pixels: ``PDF_DPI``, less if that would pass
    the pixel limit (a page may claim any size)."""
    scale = min(PDF_DPI / POINTS_PER_INCH, (max_pixels / max(width * height, 1)) ** 0.5)
    return max(1, int(width * scale)), max(1, int(height * scale))  # rounded down: within the limit


def _other_header(data: bytes, name: str) -> Header:
    """Pillow reads the header (it decodes nothing here); JPEGs get their markers walked."""
    from PIL import Image, UnidentifiedImageError

    if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
        decoder("pillow_heif", "a HEIF image (HEIC)", name).register_heif_opener()

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                header = _pillow_header(img)
    except Image.DecompressionBombError as exc:
        raise InputError("too-large", f"{name} claims too many pixels ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise _unreadable(data, name) from exc
    if header.format not in FORMATS:
        raise InputError("unsupported", f"{name} is {header.format}; supported: {', '.join(sorted(FORMATS))}")
    if header.format != "JPEG":
        return header
    scans, progressive, whole = _jpeg_scans(data)
    if not whole:
        raise InputError("truncated", f"{name} is truncated (the JPEG ends before its end marker)")
    return Header(header.format, header.width, header.height, header.channels, 1, scans, progressive,
                  header.orientation)


def _pillow_header(img) -> Header:
    bands = len(img.getbands())
    sample_bytes = 4 if img.mode in ("I", "F") else 2 if img.mode.startswith("I;16") else 1
    orientation = 1
    if img.format in ("JPEG", "TIFF", "WEBP"):
        orientation = int(img.getexif().get(EXIF_ORIENTATION, 1) or 1)
    pages = getattr(img, "n_frames", 1) if img.format == "TIFF" else 1  # a GIF's frames are no pages
    width, height = img.width, img.height
    for page in range(1, pages):  # reads each page's directory, decodes nothing
        img.seek(page)
        width, height = max(width, img.width), max(height, img.height)
    return Header(img.format, width, height, bands, sample_bytes, orientation=orientation, pages=pages)


def _unreadable(data: bytes, name: str) -> InputError:
    if data.startswith(SIGNATURES):
        return InputError("truncated", f"{name} starts like an image but ends too soon")
    if Path(name).suffix.lower() in IMAGE_SUFFIXES:
        return InputError("not-an-image", f"{name} is not a readable image")
    return InputError("unsupported", f"{name} is not a supported image file")


def _jpeg_scans(data: bytes) -> tuple[int, bool, bool]:
    """(scans, progressive, whole): the markers walked as a decoder meets them, segments skipped
    by their length, entropy-coded data searched for the next marker (inside it every 0xFF is
    followed by a zero or a restart code, so a marker found there is a real one)."""
    position, scans, progressive = 2, 0, False
    while (marker := JPEG_MARKER.search(data, position)) is not None:
        code, position = marker.group(1)[0], marker.end()
        if code == JPEG_EOI:
            return scans, progressive, True
        if code == 0x01:  # TEM: a marker without a segment
            continue
        if position + 2 > len(data):
            break
        scans += code == JPEG_SOS
        progressive |= code in JPEG_PROGRESSIVE
        position += int.from_bytes(data[position : position + 2], "big")
    return scans, progressive, False
