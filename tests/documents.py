"""Documents written by hand, byte by byte, as office software and attackers write them: PDFs
with text in standard fonts, a bomb of nested forms, one holding a huge image, and a TIFF of
countless tiny pages. Each is a few KB; none needs a PDF library to make."""

from __future__ import annotations

import zlib

FONTS = (b"Helvetica", b"Times-Roman", b"Courier-Bold")


def pdf(objects: list[bytes]) -> bytes:
    """A whole PDF of ``objects`` (object 1 is the catalog), with its cross-reference table."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _stream(body: bytes, extra: bytes = b"") -> bytes:
    return b"<< %s /Length %d >>\nstream\n%s\nendstream" % (extra, len(body), body)


def text_pdf(pages: int = 6, digit: str = "7") -> bytes:
    """An invoice-like document: 40 lines of text in three fonts a page, and a big digit."""
    first_page = 3 + len(FONTS)
    kids = b" ".join(b"%d 0 R" % (first_page + 2 * i) for i in range(pages))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages)]
    objects += [b"<< /Type /Font /Subtype /Type1 /BaseFont /%s >>" % font for font in FONTS]
    fonts = b" ".join(b"/F%d %d 0 R" % (i, 3 + i) for i in range(len(FONTS)))
    for page in range(pages):
        lines = [b"BT /F%d 11 Tf 72 %d Td (Invoice line %d of page %d: the quick brown fox) Tj ET"
                 % (i % len(FONTS), 760 - 14 * i, i, page) for i in range(40)]
        lines.append(b"BT /F0 200 Tf 200 300 Td (%s) Tj ET" % digit.encode())
        contents = first_page + 2 * page + 1
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                       b"/Resources << /Font << %s >> >> /Contents %d 0 R >>" % (fonts, contents))
        objects.append(_stream(b"\n".join(lines)))
    return pdf(objects)


def _one_page(resources: bytes, content: bytes, more: list[bytes]) -> bytes:
    return pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << %s >> /Contents 4 0 R >>"
                % resources, _stream(content), *more])


def nested_forms_pdf(depth: int = 6, fanout: int = 10) -> bytes:
    """A few KB that draw a line ``fanout ** depth`` times: each form draws the next ten times."""
    forms = []
    for level in range(depth):
        last = level == depth - 1
        body = b"0 0 m 612 792 l S" if last else b"\n".join(b"q 1 0 0 1 %d 0 cm /X Do Q" % (i % 3)
                                                             for i in range(fanout))
        resources = b"" if last else b"/Resources << /XObject << /X %d 0 R >> >>" % (6 + level)
        forms.append(_stream(body, b"/Type /XObject /Subtype /Form /BBox [0 0 612 792] " + resources))
    return _one_page(b"/XObject << /X 5 0 R >>", b"q /X Do Q", forms)


def huge_image_pdf(side: int) -> bytes:
    """A page drawing one ``side`` x ``side`` grey image (white, so it compresses to nothing)."""
    image = zlib.compress(b"\xff" * side * side, 9)
    header = (b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
              b"/BitsPerComponent 8 /Filter /FlateDecode" % (side, side))
    return _one_page(b"/XObject << /Im 5 0 R >>", b"q 612 0 0 792 0 0 cm /Im Do Q",
                     [b"<< %s /Length %d >>\nstream\n%s\nendstream" % (header, len(image), image)])


def tiny_pages_tiff(pages: int) -> bytes:
    """A TIFF of ``pages`` 1x1 white pages sharing one pixel, each directory pointing to the
    next (written by hand: Pillow takes minutes to save tens of thousands of pages)."""
    import struct

    pixel_at, first = 8, 10
    entries = [(256, 3, 1), (257, 3, 1), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, pixel_at),
               (277, 3, 1), (278, 3, 1), (279, 4, 1)]
    size = 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", first) + b"\xff\x00")
    for page in range(pages):
        following = first + (page + 1) * size if page + 1 < pages else 0
        out += struct.pack("<H", len(entries))
        out += b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in entries)
        out += struct.pack("<I", following)
    return bytes(out)
