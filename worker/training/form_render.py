"""Training digits as forms, printers and web pages give them: written on a line, in a box or a
comb field, beside a printed caption; printed in a font; drawn on a canvas with a fat brush.

Used by ``scan_render.py`` (``worker train --scan-augment``), each rendering then sent through
the real preprocessing (digits-v5 takes the form's furniture out) so the model learns what it
will be served. Drawn apart from the hard sets of ``tests/factories.py``: other ranges, other
code, captions in the system's fonts rather than OpenCV's, and printed digits in the training
font families only (``fonts.py``). Printed letters and symbols too: what is not a digit, for the
review flag (``printed_glyph``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from worker.training.fonts import font_files, glyph_font_files

# Printed letters and symbols that are no digit, for the review flag's ``not-a-digit``
# (``worker/model/not_digit.py``): letters that pass for none (no O, l, I, S, Z, B, G, b, g, q),
# Greek and Cyrillic of the same kind, punctuation, currency, arrows and marks.
NOT_DIGIT_GLYPHS = ("ACEFHKLMNPRTUVWXYacdefhkmnprtuvwxy" "ΓΔΛΞΠΣΦΨΩαγεηκλμνξπφχψω"
                    "ДЖИЛМПФЦШЩЫЭЮЯджилмпфцшщыэюя" "#@%&?*+=$<>!;:~±÷×≠≈§¶©®€£¥¢¿¡µ"
                    "←→↑↓↔⇒•■□▲△●◆★☆♥♦♣♠✓✗")
CAPTION_WORDS = ("Nr", "ID", "Qty:", "Amount", "Year", "Box", "Page", "Line", "Lot", "Zip", "Tel.",
                 "Week", "Month", "Row", "Bin", "Rate", "Part", "Case")


def _paper(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Paper, light, with a slope of light either way (float32)."""
    page = np.full((height, width), float(rng.uniform(170, 250)), np.float32)
    page += np.linspace(-1, 1, width, dtype=np.float32)[None, :] * float(rng.uniform(0, 25))
    page += np.linspace(-1, 1, height, dtype=np.float32)[:, None] * float(rng.uniform(0, 15))
    return page


def _ink(page: np.ndarray, cover: np.ndarray, top: int, left: int, darkness: float) -> None:
    """Darken ``page`` where ``cover`` (0 to 1) is, towards ``darkness``, at (top, left)."""
    h, w = cover.shape
    region = page[top : top + h, left : left + w]
    region -= cover * np.maximum(region - darkness, 0)


def _scanned(page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grain, maybe a blur, JPEG at quality 35-95 (grey uint8)."""
    page = page + rng.normal(0, rng.uniform(1, 10), page.shape).astype(np.float32)
    if rng.random() < 0.3:
        page = cv2.GaussianBlur(page, (0, 0), float(rng.uniform(0.4, 1.2)))
    page = np.clip(page, 0, 255).astype(np.uint8)
    encoded = cv2.imencode(".jpg", page, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 95))])[1]
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)


def _text(text: str, height: int, rng: np.random.Generator,
          fonts: tuple[Path, ...] | None = None) -> np.ndarray | None:
    """``text`` in one of ``fonts`` (the training fonts), about ``height`` pixels high, cropped to
    its ink (float32 coverage 0 to 1); None if this system has no fonts, or the font drawn lacks it."""
    from PIL import Image, ImageDraw, ImageFont

    fonts = font_files() if fonts is None else fonts
    if not fonts:
        return None
    font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), max(6, height))
    if not _draws(font, text):
        return None
    canvas = Image.new("L", (height * (len(text) + 2), height * 3), 0)
    ImageDraw.Draw(canvas).text((height, height), text, fill=255, font=font)
    cover = np.asarray(canvas, np.float32) / 255
    rows, cols = np.nonzero(cover > 0.2)
    if not len(rows):
        return None
    return cover[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _draws(font, text: str) -> bool:
    """Whether ``font`` has ``text``'s characters, not the box it draws for what it lacks."""
    box = _mask_bytes(font, "\U0010fffd")  # a noncharacter: every font draws its box for it
    return all(_mask_bytes(font, c) != box for c in text if not c.isspace())


def _mask_bytes(font, character: str) -> tuple:
    mask = font.getmask(character)
    return mask.size, bytes(mask)


def _turn(cover: np.ndarray, degrees: float, shear: float = 0.0) -> np.ndarray:
    """``cover`` turned and slanted about its centre, on a canvas grown to keep it whole."""
    h, w = cover.shape
    grow = int(max(h, w) * (0.3 + abs(shear)))
    cover = np.pad(cover, grow)
    centre = (cover.shape[1] / 2, cover.shape[0] / 2)
    matrix = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    matrix[0, 1] += shear
    matrix[0, 2] -= shear * centre[1]
    return cv2.warpAffine(cover, matrix, (cover.shape[1], cover.shape[0]))


def printed(label: int, rng: np.random.Generator) -> np.ndarray | None:
    """The digit ``label`` printed in a training font, 16-120 pixels high, maybe bold, slanted
    or turned a little, on a label, receipt or form (grey uint8); None if there are no fonts."""
    height = int(rng.integers(16, 120))
    return _print(_text(str(label), height, rng), height, rng, degrees=4)


def printed_glyph(rng: np.random.Generator) -> np.ndarray | None:
    """A letter or symbol that is no digit (``NOT_DIGIT_GLYPHS``), printed as ``printed`` prints
    a digit, in the glyph fonts (``fonts.py``), turned up to 8 degrees; None if there are none
    or the font drawn lacks it."""
    height = int(rng.integers(16, 120))
    glyph = NOT_DIGIT_GLYPHS[int(rng.integers(len(NOT_DIGIT_GLYPHS)))]
    return _print(_text(glyph, height, rng, glyph_font_files()), height, rng, degrees=8)


def _print(cover: np.ndarray | None, height: int, rng: np.random.Generator,
           degrees: float) -> np.ndarray | None:
    """``cover`` (printed type, or None) as a printer and a scanner give it, on a page."""
    if cover is None:
        return None
    if rng.random() < 0.25:  # bolder print, or a heavy toner
        width = max(1, round(height * float(rng.uniform(0.02, 0.06))))
        cover = cv2.dilate(cover, np.ones((width, width), np.uint8))
    turn = float(rng.uniform(-degrees, degrees))
    slant = float(rng.uniform(-0.2, 0.2)) if rng.random() < 0.3 else 0.0  # an oblique face
    cover = _crop(_turn(cover, turn, slant))
    return _on_a_page(cover, rng, darkness=float(rng.uniform(0, 90)))


def canvas(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Drawn on the web page's canvas: a small digit in a fat round brush (strokes a seventh to
    more than a quarter of its height), hard or smooth edges, dark on light or light on dark, no grain."""
    side = int(rng.integers(24, 80))
    shape = cv2.resize(digit, (side, side), interpolation=cv2.INTER_AREA) > int(rng.integers(60, 160))
    brush = max(3, round(side * float(rng.uniform(0.14, 0.28))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (brush, brush))
    stroke = cv2.dilate(shape.astype(np.uint8), kernel).astype(np.float32)
    if rng.random() < 0.6:
        stroke = cv2.GaussianBlur(stroke, (0, 0), 0.7)
    room = int(side * rng.uniform(1.5, 4.5))
    field = np.zeros((room + 2 * side, room + 2 * side), np.float32)
    top, left = (int(rng.integers(0, room + side)) for _ in range(2))
    field[top : top + side, left : left + side] = stroke
    light = rng.random() < 0.8
    page = 255 - 255 * field if light else 255 * field
    return np.clip(page, 0, 255).astype(np.uint8)


def on_form(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A handwritten digit on a form: on a line, in a box or comb field, or beside a caption."""
    side = int(rng.integers(50, 220))
    glyph = cv2.resize(digit, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255
    kind = FURNITURE[int(rng.integers(len(FURNITURE)))]
    return kind(_crop(glyph), rng)


def _crop(cover: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(cover > 0.3)
    if not len(rows):
        return cover
    return cover[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _on_a_page(cover: np.ndarray, rng: np.random.Generator, darkness: float) -> np.ndarray:
    """``cover`` on a page a margin around it, maybe furniture too, scanned (grey uint8)."""
    h, w = cover.shape
    if rng.random() < 0.4:
        return FURNITURE[int(rng.integers(len(FURNITURE)))](cover, rng)
    margin_y, margin_x = (int(max(h, w) * rng.uniform(0.2, 1.2)) + 2 for _ in range(2))
    page = _paper(h + 2 * margin_y, w + 2 * margin_x, rng)
    _ink(page, cover, margin_y, margin_x, darkness)
    return _scanned(page, rng)


def _line(layer: np.ndarray, start, end, thickness: int, rng: np.random.Generator) -> None:
    """Solid (mostly), dashed or dotted, at a random phase."""
    style = rng.choice(["solid", "solid", "solid", "dashed", "dotted"])
    (x0, y0), (x1, y1) = start, end
    if style == "solid":
        cv2.line(layer, (round(x0), round(y0)), (round(x1), round(y1)), 1.0, thickness, cv2.LINE_AA)
        return
    length = max(1.0, float(np.hypot(x1 - x0, y1 - y0)))
    on = thickness * (float(rng.uniform(2, 10)) if style == "dashed" else 1.0)
    period = on + thickness * float(rng.uniform(1, 4)) + 1
    for a in np.arange(-float(rng.uniform(0, period)), length, period):
        p, q = max(a, 0) / length, min(a + on, length) / length
        if q > p:
            cv2.line(layer, (round(x0 + (x1 - x0) * p), round(y0 + (y1 - y0) * p)),
                     (round(x0 + (x1 - x0) * q), round(y0 + (y1 - y0) * q)), 1.0, thickness, cv2.LINE_AA)


def _written(cover: np.ndarray, layer: np.ndarray, page: np.ndarray, top: int, left: int,
             rng: np.random.Generator) -> np.ndarray:
    """The furniture printed, then the digit's ink over it, scanned."""
    printed_black = rng.random() < 0.6  # else a pale ruled colour, scanned grey
    _ink(page, layer, 0, 0, float(rng.uniform(10, 90)) if printed_black else float(rng.uniform(100, 170)))
    _ink(page, cover, top, left, float(rng.uniform(0, 90)))
    return _scanned(page, rng)


def _underlined(cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """On a line 1.2 times the digit's width to the page's, 1.5-6 % of its height thick,
    skewed up to 4 degrees, from touching the digit's foot to a fifth of it below."""
    h, w = cover.shape
    height, width = int(h * rng.uniform(1.5, 3.2)), int(w + h * rng.uniform(1.0, 5.0))
    height = max(height, h + 2 * (h // 8) + 4)  # a tiny crop (a faint digit) still has room
    top, left = int(rng.integers(h // 8 + 1, height - h - h // 8)), int(rng.integers(0, width - w + 1))
    page, layer = _paper(height, width, rng), np.zeros((height, width), np.float32)
    y = top + h + h * float(rng.uniform(-0.08, 0.2))
    length = width if rng.random() < 0.4 else min(width, w * float(rng.uniform(1.2, 3.5)) + h * 0.3)
    x0 = float(np.clip(left + w / 2 - length * rng.uniform(0.15, 0.85), 0, width - length))
    slope = np.tan(np.radians(float(rng.uniform(-4, 4))))
    thickness = max(1, round(h * float(rng.uniform(0.015, 0.06))))
    _line(layer, (x0, y - slope * length / 2), (x0 + length, y + slope * length / 2), thickness, rng)
    return _written(cover, layer, page, top, left, rng)


def _boxed(cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """In a box (some sides may be missing) or one cell of a comb field of 2-8 cells (walls, or
    a base line with ticks), the walls from touching the ink to a third of its height away."""
    h, w = cover.shape
    gap = h * rng.uniform(-0.06, 0.35, 4)
    cell_w, cell_h = max(w, h * 0.55) + gap[0] + gap[1], h + gap[2] + gap[3]
    cells = int(rng.integers(2, 9)) if rng.random() < 0.5 else 1
    index = int(rng.integers(cells))
    pad = int(h * rng.uniform(0.3, 0.8))
    height, width = int(cell_h + 2 * pad), int(cell_w * cells + 2 * pad)
    page, layer = _paper(height, width, rng), np.zeros((height, width), np.float32)
    thickness = max(1, round(h * float(rng.uniform(0.015, 0.06))))
    x_left, x_right, y_top, y_bottom = pad, pad + cells * cell_w, pad, pad + cell_h
    walls = [((x_left + i * cell_w, y_top), (x_left + i * cell_w, y_bottom)) for i in range(cells + 1)]
    if cells > 1 and rng.random() < 0.4:  # a base line with short ticks
        rise = cell_h * float(rng.uniform(0.2, 0.5))
        walls = [((x, y_bottom - rise), (x, y_bottom)) for (x, _), _ in walls]
        walls.append(((x_left, y_bottom), (x_right, y_bottom)))
    else:
        walls += [((x_left, y_top), (x_right, y_top)), ((x_left, y_bottom), (x_right, y_bottom))]
        if cells == 1 and rng.random() < 0.3:  # one or two sides left out
            gone = set(rng.choice(4, int(rng.integers(1, 3)), replace=False).tolist())
            walls = [wall for i, wall in enumerate(walls) if i not in gone]
    for start, end in walls:
        _line(layer, start, end, thickness, rng)
    layer = _turn_in_place(layer, float(rng.uniform(-2, 2)))
    top = int(np.clip(y_top + gap[2], 0, height - h))
    left = int(np.clip(x_left + index * cell_w + gap[0] + (cell_w - gap[0] - gap[1] - w) / 2, 0, width - w))
    return _written(cover, layer, page, top, left, rng)


def _captioned(cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Beside (left) or under a printed caption 15-40 % of the digit's height, a fifth to one
    and a half heights away."""
    h, w = cover.shape
    word = CAPTION_WORDS[int(rng.integers(len(CAPTION_WORDS)))]
    caption = _text(word, max(6, round(h * rng.uniform(0.15, 0.4))), rng)
    if caption is None:
        return _underlined(cover, rng)
    ch, cw = caption.shape
    gap, margin = int(h * rng.uniform(0.2, 1.5)), int(h * rng.uniform(0.15, 0.5)) + 2
    if rng.random() < 0.6:  # to the left, its baseline somewhere along the digit's lower half
        height, width = h + 2 * margin + ch, cw + gap + w + 2 * margin
        text_at = (int(margin + h - ch - rng.uniform(0, 0.5) * h + ch / 2), margin)
        digit_at = (margin, margin + cw + gap)
    else:  # above
        height, width = ch + gap + h + 2 * margin, max(cw, w) + 2 * margin
        text_at = (margin, margin)
        digit_at = (margin + ch + gap, margin + int(rng.integers(0, max(cw - w, 0) + 1)))
    page, layer = _paper(height, width, rng), np.zeros((height, width), np.float32)
    top, left = int(np.clip(text_at[0], 0, height - ch)), int(np.clip(text_at[1], 0, width - cw))
    layer[top : top + ch, left : left + cw] = caption
    return _written(cover, layer, page, *digit_at, rng)


def _turn_in_place(layer: np.ndarray, degrees: float) -> np.ndarray:
    h, w = layer.shape
    return cv2.warpAffine(layer, cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0), (w, h))


FURNITURE = (_underlined, _underlined, _boxed, _boxed, _captioned)
