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


# --- hard sets: what real scans do that scan_page does not ----------------------------------------


def harsh_scan(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A harsh scan: heavy grain, strong uneven light, faint pencil or dark ink, a skew of up to
    5 degrees, ruled or squared paper lines, a stamp or a fold line; JPEG-damaged at quality
    25-50 (returned decoded, grey)."""
    height, width = int(rng.integers(500, 1100)), int(rng.integers(400, 900))
    page = np.full((height, width), float(rng.uniform(170, 235)), np.float32)
    page += np.linspace(-1, 1, width, dtype=np.float32)[None, :] * float(rng.uniform(20, 60))
    _paper_lines(page, rng)
    glyph_h = int(rng.integers(min(height, width) // 5, min(height, width) // 2))
    glyph = cv2.resize(digit, (glyph_h, glyph_h), interpolation=cv2.INTER_CUBIC)
    turn = cv2.getRotationMatrix2D((glyph_h / 2, glyph_h / 2), float(rng.uniform(-5, 5)), 1.0)
    glyph = cv2.warpAffine(glyph, turn, (glyph_h, glyph_h)).astype(np.float32) / 255
    top, left = int(rng.integers(0, height - glyph_h)), int(rng.integers(0, width - glyph_h))
    ink = float(rng.uniform(110, 150)) if rng.random() < 0.4 else float(rng.uniform(10, 60))  # pencil or pen
    region = page[top : top + glyph_h, left : left + glyph_h]
    page[top : top + glyph_h, left : left + glyph_h] = region - glyph * np.maximum(region - ink, 0)
    _stamp_or_fold(page, rng, avoid=(top, left, glyph_h))
    page += rng.normal(0, rng.uniform(10, 22), page.shape).astype(np.float32)  # heavy grain
    page = np.clip(page, 0, 255).astype(np.uint8)
    encoded = cv2.imencode(".jpg", page, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 50))])[1]
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)


def _paper_lines(page: np.ndarray, rng: np.random.Generator) -> None:
    step, level = int(rng.integers(28, 50)), float(rng.uniform(20, 45))
    page[::step, :] -= level
    if rng.random() < 0.5:  # squared paper
        page[:, ::step] -= level


def _stamp_or_fold(page: np.ndarray, rng: np.random.Generator, avoid: tuple[int, int, int]) -> None:
    height, width = page.shape
    top, left, side = avoid
    if rng.random() < 0.5:  # a fold: a soft dark line across the page, clear of the digit
        y = top + side + 10 if top + side + 20 < height else max(0, top - 10)
        page[y : y + 3, :] -= 50
    else:  # a round stamp in a corner away from the digit
        x = width - 60 if left < width / 2 else 60
        y = height - 60 if top < height / 2 else 60
        cv2.circle(page, (x, y), 40, float(page.mean() - 70), 3)


def thick_marker(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A digit written with a thick marker: strokes several times MNIST's width, black on a
    plain light card (grey)."""
    side = int(rng.integers(160, 320))
    glyph = cv2.resize(digit, (side, side), interpolation=cv2.INTER_CUBIC)
    width = int(side * rng.uniform(0.08, 0.14)) | 1
    glyph = cv2.dilate(glyph, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width)))
    margin = side // 3
    card = np.full((side + 2 * margin, side + 2 * margin), float(rng.uniform(200, 245)), np.float32)
    card[margin:-margin, margin:-margin] -= glyph.astype(np.float32) / 255 * (card[0, 0] - 20)
    card += rng.normal(0, 3, card.shape).astype(np.float32)
    return np.clip(card, 0, 255).astype(np.uint8)


def low_resolution(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A digit drawn on a coarse grid (8 to 12 cells, ink or no ink) and scaled up to a bitmap
    of 96 to 256 pixels, black on white, as old forms and fax pages give them."""
    cells = int(rng.integers(8, 13))
    coarse = cv2.resize(digit, (cells, cells), interpolation=cv2.INTER_AREA) > 60
    side = int(rng.integers(96, 257))
    big = cv2.resize(coarse.astype(np.uint8) * 255, (side, side), interpolation=cv2.INTER_NEAREST)
    return 255 - np.pad(big, side // 4)




# --- not digits: what the review flag must call unlike-training ---------------------------------

# Letters and symbols that do not pass for a digit in anyone's hand (no O, I, l, S, Z, B, G, b, g, q).
NOT_DIGIT_GLYPHS = "ACEFHKMNPRTUVWXYacdefhkmnprtuvwxy#@%&?*+=$<>!"
HERSHEY = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
           cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_PLAIN)


def letter(rng: np.random.Generator) -> np.ndarray:
    """A letter or symbol drawn in one of OpenCV's fonts, dark on a light card (grey)."""
    glyph = NOT_DIGIT_GLYPHS[int(rng.integers(len(NOT_DIGIT_GLYPHS)))]
    font, scale = HERSHEY[int(rng.integers(len(HERSHEY)))], float(rng.uniform(2, 4))
    card = np.full((160, 160), int(rng.integers(200, 246)), np.uint8)
    (width, height), _ = cv2.getTextSize(glyph, font, scale, 1)
    origin = ((160 - width) // 2, (160 + height) // 2)
    ink, thickness = int(rng.integers(0, 60)), int(rng.integers(2, 7))
    cv2.putText(card, glyph, origin, font, scale, ink, thickness, cv2.LINE_AA)
    card = card + rng.normal(0, 3, card.shape)
    return np.clip(card, 0, 255).astype(np.uint8)


def noise_page(rng: np.random.Generator) -> np.ndarray:
    """Scanner noise and smudges and nothing written (grey)."""
    side = int(rng.integers(100, 400))
    page = rng.normal(float(rng.uniform(150, 230)), float(rng.uniform(5, 40)), (side, side))
    page = cv2.GaussianBlur(page.astype(np.float32), (0, 0), float(rng.uniform(0.5, 6)))
    return np.clip(page, 0, 255).astype(np.uint8)


def texture(rng: np.random.Generator) -> np.ndarray:
    """A stand-in for a photo of a texture (cloth, wood, tiles, gravel): stripes, a woven grid,
    a checkerboard or blotches, lit unevenly (grey)."""
    side = int(rng.integers(120, 400))
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    period, angle = float(rng.uniform(6, 40)), float(rng.uniform(0, np.pi))
    kind = int(rng.integers(4))
    if kind == 0:  # wood-like stripes
        pattern = np.sin((x * np.cos(angle) + y * np.sin(angle)) / period * 2 * np.pi + 3 * np.sin(y / 50))
    elif kind == 1:  # weave
        pattern = np.sin(x / period * 2 * np.pi) * np.sin(y / period * 2 * np.pi)
    elif kind == 2:  # tiles
        pattern = ((x // period + y // period) % 2) * 2 - 1
    else:  # gravel
        pattern = cv2.GaussianBlur(rng.normal(0, 1, (side, side)).astype(np.float32), (0, 0), period / 6)
        pattern /= pattern.std() + 1e-6
    page = 128 + 60 * pattern + x / side * float(rng.uniform(-40, 40))
    return np.clip(page, 0, 255).astype(np.uint8)


NOT_DIGITS = {"letters and symbols": letter, "noise pages": noise_page, "textures": texture}


# --- more not-digits, for the review flag's bench and tests -------------------------------------
#
# Drawn apart from anything the flag is fitted on (the training split's digits and their scan
# renderings in worker/training/scan_render.py): printed type in TrueType fonts, photo-like scenes,
# clothing photographed on a backdrop, texture families ``texture`` lacks.

FONTS = Path("/usr/share/fonts/truetype")
# Letters that pass for no digit (as NOT_DIGIT_GLYPHS), Greek capitals and small letters of the
# same kind, and symbols: punctuation, currency, marks (a check mark, a cross, arrows, suits).
PRINTED_GLYPHS = ("ACEFHKMNPRTUVWXYacdefhkmnprtuvwxy" "ΓΔΛΞΠΣΦΨΩαεηλμπφψω"
                  "#@%&?*+=$<>!;:~±÷≠≈§¶©®€£¥¿¡")
# Symbols only DejaVu Sans (of the fonts used) draws: dingbats, arrows, stars, suits, shapes.
DINGBATS = "✓✔✗✘×←→↑↓↔⇒★☆♥♦♣♠•■▲"


def printed_on_card(glyph: str, size: int = 90, side: int | None = None,
                    font: str = "dejavu/DejaVuSans.ttf") -> np.ndarray:
    """``glyph`` ``size`` pixels in ``font`` (under FONTS), black in the middle of a white card
    ``side`` pixels square (twice the size without one)."""
    from PIL import Image, ImageDraw, ImageFont

    side = side or 2 * size
    card = Image.new("L", (side, side), 235)
    face = ImageFont.truetype(str(FONTS / font), size)
    ImageDraw.Draw(card).text((side // 2, side // 2), glyph, fill=20, font=face, anchor="mm")
    return np.asarray(card)


def _font_files(*patterns: str) -> list[Path]:
    found = sorted(p for pattern in patterns for p in FONTS.glob(pattern) if "ExtraLight" not in p.name)
    assert found, f"no fonts {', '.join(patterns)} under {FONTS}: install fonts-dejavu, fonts-liberation"
    return found


def printed_symbol(rng: np.random.Generator) -> np.ndarray:
    """A letter, Greek letter or symbol in a TrueType font (DejaVu or Liberation, any weight and
    slant; dingbats in DejaVu Sans), 40-160 pixels high, dark on a light card, turned up to 8
    degrees, maybe blurred, grainy, JPEG-damaged (grey)."""
    from PIL import Image, ImageDraw, ImageFont

    if rng.random() < 0.25:
        glyph, fonts = DINGBATS[int(rng.integers(len(DINGBATS)))], _font_files("dejavu/DejaVuSans*.ttf")
    else:
        glyph = PRINTED_GLYPHS[int(rng.integers(len(PRINTED_GLYPHS)))]
        fonts = _font_files("dejavu/DejaVu*.ttf", "liberation/Liberation*.ttf")
    font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), int(rng.integers(40, 161)))
    if not _draws(font, glyph):  # a face without it draws its empty box: DejaVu Sans has them all
        font = ImageFont.truetype(str(FONTS / "dejavu/DejaVuSans.ttf"), font.size)
    left, top, right, bottom = font.getbbox(glyph)
    side = int(max(right - left, bottom - top) * rng.uniform(1.5, 2.5)) + 8
    paper, ink = int(rng.integers(190, 246)), int(rng.integers(0, 70))
    card = Image.new("L", (side, side), paper)
    offset = rng.uniform(-0.15, 0.15, 2) * side
    origin = ((side - (right - left)) / 2 - left + offset[0], (side - (bottom - top)) / 2 - top + offset[1])
    ImageDraw.Draw(card).text(origin, glyph, fill=ink, font=font)
    page = np.asarray(card, np.float32)
    turn = cv2.getRotationMatrix2D((side / 2, side / 2), float(rng.uniform(-8, 8)), 1.0)
    page = cv2.warpAffine(page, turn, (side, side), borderMode=cv2.BORDER_REPLICATE)
    return _photographed(page, rng, blur=float(rng.uniform(0, 1.2)))


def _draws(font, glyph: str) -> bool:
    """Whether ``font`` has ``glyph``, not the box it draws for what it lacks (as for a private
    use character, which no font here has)."""
    drawn, missing = font.getmask(glyph), font.getmask("\ue000")
    return drawn.size != missing.size or bytes(drawn) != bytes(missing)


def _photographed(page: np.ndarray, rng: np.random.Generator, blur: float) -> np.ndarray:
    """Out of focus by ``blur`` (sigma, pixels), grain, JPEG at quality 50-92 (grey uint8)."""
    if blur > 0.3:
        page = cv2.GaussianBlur(page, (0, 0), blur)
    page = page + rng.normal(0, rng.uniform(2, 8), page.shape).astype(np.float32)
    page = np.clip(page, 0, 255).astype(np.uint8)
    encoded = cv2.imencode(".jpg", page, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(50, 93))])[1]
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)


def _lit(side_y: int, side_x: int, rng: np.random.Generator, level: float, spread: float) -> np.ndarray:
    """A surface at ``level``, lit from one side: a slope of up to ``spread`` either way, and a
    vignette (float32)."""
    y, x = np.mgrid[0:side_y, 0:side_x].astype(np.float32)
    angle = float(rng.uniform(0, 2 * np.pi))
    slope = ((x / side_x - 0.5) * np.cos(angle) + (y / side_y - 0.5) * np.sin(angle)) * 2 * spread
    vignette = ((x / side_x - 0.5) ** 2 + (y / side_y - 0.5) ** 2) * float(rng.uniform(0, 60))
    return level + slope - vignette


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator, octaves: int = 4) -> np.ndarray:
    """Turbulence: random grids of 4, 8, 16 ... cells scaled up and summed, halving each time
    (float32, about -1 to 1)."""
    total = np.zeros(shape, np.float32)
    for octave in range(octaves):
        cells = 4 * 2**octave
        grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
        total += cv2.resize(grid, shape[::-1], interpolation=cv2.INTER_CUBIC) / 2**octave
    return total / 2


def photo_scene(rng: np.random.Generator) -> np.ndarray:
    """A stand-in for a photo of things on a table: 2-6 objects (discs, boxes, many-sided
    shapes), each shaded by the light and casting a soft shadow, on a lit surface with a grain
    of its own, out of focus a little, JPEG-damaged (grey)."""
    height, width = int(rng.integers(120, 400)), int(rng.integers(120, 400))
    page = _lit(height, width, rng, float(rng.uniform(90, 220)), float(rng.uniform(10, 50)))
    page += _smooth_noise((height, width), rng) * float(rng.uniform(5, 30))
    for _ in range(int(rng.integers(2, 7))):
        mask = np.zeros((height, width), np.float32)
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        size = int(min(height, width) * rng.uniform(0.1, 0.45))
        kind = int(rng.integers(3))
        if kind == 0:
            axes = (size, int(size * rng.uniform(0.4, 1.0)))
            cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1, cv2.LINE_AA)
        else:
            corners = 4 if kind == 1 else int(rng.integers(3, 9))
            angles = np.sort(rng.uniform(0, 2 * np.pi, corners)) if kind == 2 else \
                np.arange(corners) * np.pi / 2 + float(rng.uniform(0, np.pi))
            radii = size * (rng.uniform(0.5, 1.0, corners) if kind == 2 else np.ones(corners))
            points = np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], 1)
            cv2.fillPoly(mask, [points.astype(np.int32)], 1.0, cv2.LINE_AA)
        shadow = cv2.GaussianBlur(np.roll(mask, (size // 6, size // 6), axis=(0, 1)), (0, 0), size / 8 + 1)
        page -= shadow * float(rng.uniform(10, 50))
        tone = _lit(height, width, rng, float(rng.uniform(20, 240)), float(rng.uniform(10, 60)))
        page = page * (1 - mask) + tone * mask
    return _photographed(page, rng, blur=float(rng.uniform(0.5, 2.5)))


def clothing_photo(item: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A Fashion-MNIST item (light on black, 28x28) photographed on a backdrop: 80-250 pixels,
    dark on a light backdrop or light on a dark one, with a soft shadow, out of focus a little,
    JPEG-damaged (grey)."""
    size = int(rng.integers(80, 251))
    shape = cv2.resize(item, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255
    margin = int(size * rng.uniform(0.15, 0.6))
    side = size + 2 * margin
    light = rng.random() < 0.7
    backdrop = _lit(side, side, rng, float(rng.uniform(170, 240) if light else rng.uniform(20, 80)), 25)
    cloth = float(rng.uniform(10, 110) if light else rng.uniform(150, 240))
    place = np.zeros((side, side), np.float32)
    place[margin : margin + size, margin : margin + size] = shape
    coverage = np.minimum(place * 2.5, 1)  # the item's outline; its shading stays inside
    offset = size // 20 + 1
    shadow = cv2.GaussianBlur(np.roll(coverage, (offset, offset), axis=(0, 1)), (0, 0), size / 25)
    backdrop -= shadow * float(rng.uniform(10, 40)) * (1 if light else 0.3)
    garment = cloth + (place - place.max() / 2) * float(rng.uniform(-60, 60))
    photo = backdrop * (1 - coverage) + garment * coverage
    return _photographed(photo, rng, blur=float(rng.uniform(0.3, 1.5)))


def texture_photo(rng: np.random.Generator) -> np.ndarray:
    """A stand-in for a photo of a surface, families ``texture`` lacks: brick, halftone dots,
    cross-hatching, marble, knit, cork (grey, lit unevenly, JPEG-damaged)."""
    side = int(rng.integers(120, 400))
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    period = float(rng.uniform(8, 40))
    kind = int(rng.integers(6))
    if kind == 0:  # brick: mortar lines, every other row's joints shifted by half a brick
        row = (y // period).astype(int)
        joints = ((x + (row % 2) * period) % (2 * period)) < period / 6
        pattern = np.where(((y % period) < period / 6) | joints, -1.0, 0.6)
        pattern += _smooth_noise((side, side), rng) * 0.5
    elif kind == 1:  # halftone: dots on a grid, larger where the picture is darker
        shade = (_smooth_noise((side, side), rng, 2) + 1) / 2
        cell_y, cell_x = (y % period) / period - 0.5, (x % period) / period - 0.5
        pattern = np.where(np.hypot(cell_x, cell_y) < 0.15 + 0.35 * shade, -1.0, 1.0)
    elif kind == 2:  # cross-hatching at two angles
        a, b = float(rng.uniform(0, np.pi)), float(rng.uniform(0, np.pi))
        hatch = lambda angle: np.cos((x * np.cos(angle) + y * np.sin(angle)) / period * 2 * np.pi)  # noqa: E731
        pattern = -np.maximum(hatch(a), hatch(b))
    elif kind == 3:  # marble: stripes bent by turbulence
        pattern = np.sin(x / period + 6 * _smooth_noise((side, side), rng))
    elif kind == 4:  # knit: rows of chevrons
        pattern = np.sin((np.abs((x % period) - period / 2) + y) / period * 4 * np.pi)
    else:  # cork: specks of many sizes
        specks = rng.uniform(0, 1, (side, side)).astype(np.float32) < 0.02
        pattern = cv2.GaussianBlur(specks.astype(np.float32), (0, 0), period / 10) * -20 + 0.5
        pattern += _smooth_noise((side, side), rng) * 0.6
    pattern = np.clip(np.asarray(pattern, np.float32), -1.5, 1.5)
    page = _lit(side, side, rng, float(rng.uniform(100, 180)), float(rng.uniform(0, 40)))
    return _photographed(page + pattern * float(rng.uniform(30, 70)), rng, blur=float(rng.uniform(0, 1.5)))


MORE_NOT_DIGITS = {"printed letters and symbols": printed_symbol, "photo-like scenes": photo_scene,
                   "textures, other families": texture_photo}


# --- form furniture: what a digit written on a real form comes with ----------------------------
#
# Drawn apart from the training renderings (worker/training/scan_render.py has only ruled paper, lines
# repeating across the whole page): here one line, one box or one comb field, or a printed
# caption, placed by the digit's own ink, on test digits.


def _form_sheet(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Light paper with a gentle slope of light (float32)."""
    page = np.full((height, width), float(rng.uniform(185, 245)), np.float32)
    page += np.linspace(-1, 1, width, dtype=np.float32)[None, :] * float(rng.uniform(0, 15))
    return page


def _written(page: np.ndarray, glyph: np.ndarray, top: int, left: int, rng: np.random.Generator) -> None:
    """The digit in pen (most) or pencil, darkening what is under it (a line it crosses too)."""
    ink = float(rng.uniform(105, 140)) if rng.random() < 0.2 else float(rng.uniform(10, 80))
    side = glyph.shape[0]
    region = page[top : top + side, left : left + side]
    region -= glyph.astype(np.float32) / 255 * np.maximum(region - ink, 0)


def _printed(page: np.ndarray, layer: np.ndarray, grey: float) -> None:
    """Printed furniture (``layer``: 0 to 1 coverage) in ``grey``, under the pen's ink."""
    page -= layer * np.maximum(page - grey, 0)


def _furniture_grey(rng: np.random.Generator) -> float:
    """Printed black, or a light ruled grey (a form's pale blue, scanned grey)."""
    return float(rng.uniform(15, 80)) if rng.random() < 0.6 else float(rng.uniform(110, 160))


def _scanned_form(page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grain and JPEG (quality 55-90), decoded back (grey uint8)."""
    page = page + rng.normal(0, rng.uniform(2, 7), page.shape).astype(np.float32)
    page = np.clip(page, 0, 255).astype(np.uint8)
    encoded = cv2.imencode(".jpg", page, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(55, 90))])[1]
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)


def _glyph(digit: np.ndarray, side: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``digit`` scaled to ``side`` pixels, and its ink's box in it (x, y, w, h)."""
    glyph = cv2.resize(digit, (side, side), interpolation=cv2.INTER_CUBIC)
    return glyph, cv2.boundingRect((glyph > 80).astype(np.uint8))


def _segment(layer: np.ndarray, start, end, thickness: int, style: str, rng: np.random.Generator) -> None:
    """A straight line on ``layer``: solid, broken (a few gaps), dashed or dotted."""
    (x0, y0), (x1, y1) = start, end
    length = max(1.0, float(np.hypot(x1 - x0, y1 - y0)))
    if style == "solid":
        pieces = [(0.0, 1.0)]
    elif style == "broken":
        cuts = np.sort(rng.uniform(0, 1, int(rng.integers(1, 4))))
        gap = float(rng.uniform(3, 10)) / length
        pieces, begin = [], 0.0
        for cut in cuts:
            pieces.append((begin, cut))
            begin = cut + gap
        pieces.append((begin, 1.0))
    else:
        dash = thickness * (float(rng.uniform(3, 8)) if style == "dashed" else 1.0)
        gap = thickness * float(rng.uniform(1.5, 3.5)) + 1
        pieces = [(a / length, min(a + dash, length) / length) for a in np.arange(0, length, dash + gap)]
    for a, b in pieces:
        if b <= a:
            continue
        p = (round(x0 + (x1 - x0) * a), round(y0 + (y1 - y0) * a))
        q = (round(x0 + (x1 - x0) * b), round(y0 + (y1 - y0) * b))
        if style == "dotted":
            cv2.circle(layer, p, max(1, thickness // 2 + 1), 1.0, -1, cv2.LINE_AA)
        else:
            cv2.line(layer, p, q, 1.0, thickness, cv2.LINE_AA)


def underlined(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A digit written on a line ("write on the line"): one line under it, across the page or
    a field's width (1.5-4 times the digit's box), solid, broken, dashed or dotted, printed
    black or ruled grey, 1-4 % of the digit's box thick, skewed up to 3 degrees, from just
    crossing the digit's lowest strokes to a little below them (grey, JPEG-damaged)."""
    side = int(rng.integers(60, 200))
    glyph, (gx, gy, gw, gh) = _glyph(digit, side)
    height, width = int(side * rng.uniform(1.6, 3.0)), int(side * rng.uniform(2.2, 5.0))
    page = _form_sheet(rng, height, width)
    top = int(rng.integers(side // 10, height - side - side // 10))
    left = int(rng.integers(side // 10, width - side - side // 10))
    y = top + gy + gh + side * float(rng.uniform(-0.06, 0.12))
    if rng.random() < 0.4:  # across the page
        x0, x1 = 0.0, float(width - 1)
    else:  # a field's width, the digit somewhere along it
        length = min(width - 1, side * float(rng.uniform(1.5, 4.0)))
        centre = left + gx + gw / 2
        x0 = float(np.clip(centre - length * rng.uniform(0.2, 0.8), 0, width - 1 - length))
        x1 = x0 + length
    tilt = np.tan(np.radians(float(rng.uniform(-3, 3))))
    mid = (x0 + x1) / 2
    thickness = max(1, round(side * float(rng.uniform(0.01, 0.04))))
    style = str(rng.choice(["solid", "solid", "broken", "dashed", "dotted"]))
    layer = np.zeros_like(page)
    _segment(layer, (x0, y + (x0 - mid) * tilt), (x1, y + (x1 - mid) * tilt), thickness, style, rng)
    _printed(page, layer, _furniture_grey(rng))
    _written(page, glyph, top, left, rng)
    return _scanned_form(page, rng)


def boxed(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A digit written in a printed box: one box (full, or with one or two sides missing) or a
    comb field (a row of 3-6 cells, the digit in one: full cells, or a base line with ticks),
    the border 1-4 % of the digit's box thick, from a quarter of it away to cutting into the
    ink, turned up to 1.5 degrees (grey, JPEG-damaged)."""
    side = int(rng.integers(60, 200))
    glyph, (gx, gy, gw, gh) = _glyph(digit, side)
    # the cell, around the ink: margins from -4 % (the border cuts the strokes) to 25 % of the box
    margins = side * rng.uniform(-0.04, 0.25, 4)
    cell_w = max(gw, gh * 0.6) + margins[0] + margins[1]
    cell_h = gh + margins[2] + margins[3]
    kind = str(rng.choice(["box", "box", "partial", "comb", "comb"]))
    cells, index = (int(rng.integers(3, 7)), 0) if kind == "comb" else (1, 0)
    index = int(rng.integers(0, cells))
    pad = side * 0.6
    height = int(cell_h + 2 * pad)
    width = int(cell_w * cells + 2 * pad)
    page = _form_sheet(rng, height, width)
    cell_x, cell_y = pad + index * cell_w, pad
    left = round(cell_x + margins[0] + (max(gw, gh * 0.6) - gw) / 2 - gx)
    top = round(cell_y + margins[2] - gy)
    left, top = min(max(left, 0), width - side), min(max(top, 0), height - side)
    thickness = max(1, round(side * float(rng.uniform(0.01, 0.04))))
    layer = np.zeros_like(page)
    x_start, x_end, y_top, y_bottom = pad, pad + cells * cell_w, cell_y, cell_y + cell_h
    if kind == "comb" and rng.random() < 0.5:  # a base line with ticks between the cells
        tick = cell_h * float(rng.uniform(0.25, 0.6))
        _segment(layer, (x_start, y_bottom), (x_end, y_bottom), thickness, "solid", rng)
        for i in range(cells + 1):
            x = x_start + i * cell_w
            _segment(layer, (x, y_bottom - tick), (x, y_bottom), thickness, "solid", rng)
    else:
        sides = [((x_start, y_top), (x_end, y_top)), ((x_start, y_bottom), (x_end, y_bottom))]
        sides += [((x_start + i * cell_w, y_top), (x_start + i * cell_w, y_bottom)) for i in range(cells + 1)]
        if kind == "partial":  # one or two of the single box's sides missing
            for gone in rng.choice(len(sides), int(rng.integers(1, 3)), replace=False):
                sides[gone] = None
        for part in sides:
            if part is not None:
                _segment(layer, *part, thickness, "solid", rng)
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), float(rng.uniform(-1.5, 1.5)), 1.0)
    layer = cv2.warpAffine(layer, turn, (width, height))
    _printed(page, layer, _furniture_grey(rng))
    _written(page, glyph, top, left, rng)
    return _scanned_form(page, rng)


CAPTIONS = ("Qty", "No.", "Age:", "Code", "Item", "Total", "Class", "Grade:", "Score", "Room", "Unit",
            "Day", "Ref.", "Seat", "Level", "Floor", "Group:", "Size")


def captioned(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A digit written beside its printed caption ("Qty", "Age:", ...): letters a fifth to a
    third of the digit's box high, a quarter to one box away, to the left of the digit or
    above it (grey, JPEG-damaged)."""
    side = int(rng.integers(60, 200))
    glyph, (gx, gy, gw, gh) = _glyph(digit, side)
    text = CAPTIONS[int(rng.integers(len(CAPTIONS)))]
    font = HERSHEY[int(rng.integers(4))]  # the printed faces, no script
    letter_h = side * float(rng.uniform(0.2, 0.33))
    scale = cv2.getFontScaleFromHeight(font, max(6, round(letter_h)))
    stroke = max(1, round(letter_h * float(rng.uniform(0.06, 0.12))))
    (text_w, text_h), base = cv2.getTextSize(text, font, scale, stroke)
    gap = side * float(rng.uniform(0.25, 1.0))
    beside = rng.random() < 0.6
    margin = side // 3
    if beside:
        width, height = int(text_w + gap + side + 2 * margin), int(side + 2 * margin)
        left, top = int(margin + text_w + gap - gx), margin
        origin = (margin, int(top + gy + gh - (rng.uniform(0, 0.5) * gh)))
    else:
        width, height = int(max(text_w, side) + 2 * margin), int(text_h + base + gap + side + 2 * margin)
        top, left = int(margin + text_h + gap - gy), margin
        origin = (int(margin + rng.uniform(0, 0.3) * side), margin + text_h)
    page = _form_sheet(rng, height, width)
    layer = np.zeros(page.shape, np.uint8)
    cv2.putText(layer, text, origin, font, scale, 255, stroke, cv2.LINE_AA)
    _printed(page, layer.astype(np.float32) / 255, float(rng.uniform(10, 70)))
    _written(page, glyph, min(max(top, 0), height - side), min(max(left, 0), width - side), rng)
    return _scanned_form(page, rng)


FORM_SETS = {"underlined": underlined, "boxes and combs": boxed, "captions": captioned}


# --- printed and drawn on the page's canvas ------------------------------------------------------


def printed_digit(label: int, rng: np.random.Generator) -> np.ndarray:
    """The digit ``label`` machine-printed, as labels, receipts and typed forms give it: in a
    font of the families training never sees (``worker.training.fonts.HELD_OUT_FAMILIES``: Helvetica
    clones whose 1 has a flag and no foot among them), 14-90 pixels high, dark on light paper,
    grain and JPEG (grey)."""
    from PIL import Image, ImageDraw, ImageFont

    from worker.training.fonts import font_files

    fonts = font_files(held_out=True)
    assert fonts, "the held-out font families are not installed (scripts/test installs them)"
    size = int(rng.integers(14, 91))
    font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), size)
    card = Image.new("L", (size * 3, size * 3), int(rng.integers(200, 250)))
    ImageDraw.Draw(card).text((size * 1.5, size * 1.5), str(label), fill=int(rng.integers(0, 70)), font=font,
                              anchor="mm")
    page = np.asarray(card, np.float32) + rng.normal(0, rng.uniform(2, 6), (size * 3, size * 3))
    page = np.clip(page, 0, 255).astype(np.uint8)
    return cv2.imdecode(cv2.imencode(".jpg", page, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 95))])[1],
                        cv2.IMREAD_GRAYSCALE)


def canvas_drawing(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A digit drawn small on the web page's 280x280 canvas: the digit's centre line (its
    morphological skeleton) traced with the page's 18-pixel round brush, black on white,
    the digit 45-110 pixels high somewhere on the canvas (grey)."""
    shape = (cv2.resize(digit, (56, 56), interpolation=cv2.INTER_CUBIC) > 100).astype(np.uint8)
    skeleton, cross = np.zeros_like(shape), cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    while shape.any():
        eroded = cv2.erode(shape, cross)
        skeleton |= shape - cv2.dilate(eroded, cross)
        shape = eroded
    side = int(rng.integers(45, 111))
    canvas = np.full((280, 280), 255, np.uint8)
    top, left = (int(rng.integers(10, 270 - side)) for _ in range(2))
    for y, x in zip(*np.nonzero(skeleton), strict=True):
        centre = (left + round(x * side / 56), top + round(y * side / 56))
        cv2.circle(canvas, centre, 9, 0, -1, cv2.LINE_AA)
    return canvas


LABELLED_SETS = {"printed (held-out fonts)": printed_digit}  # drawn from the label, not the image
HARD_SETS = {"harsh scans": harsh_scan, "thick marker": thick_marker, "low resolution": low_resolution,
             **FORM_SETS, "canvas drawings": canvas_drawing}


def rule_through(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A digit on a form whose printed rule runs into its ink, as a preprocessing that fails
    to take furniture out gives it to the model: a line through its lowest strokes (1.2-3 times
    the digit's box long), a box or comb cell whose sides cut into the strokes, or the two
    sides of a cell, solid or broken, 2-5 % of the digit's box thick (grey, JPEG-damaged)."""
    side = int(rng.integers(60, 200))
    glyph, (gx, gy, gw, gh) = _glyph(digit, side)
    height, width = int(side * 1.8), int(side * 3.2)
    page = _form_sheet(rng, height, width)
    top, left = (height - side) // 2, (width - side) // 2
    x0, x1, y0, y1 = left + gx, left + gx + gw, top + gy, top + gy + gh  # the ink's box on the page
    cut = side * float(rng.uniform(0.0, 0.05))  # how far into the strokes the rule runs
    thickness = max(1, round(side * float(rng.uniform(0.02, 0.05))))
    style = str(rng.choice(["solid", "solid", "broken"]))
    layer = np.zeros_like(page)
    kind = int(rng.integers(3))
    if kind == 0:  # a line under the digit, touching or crossing its lowest strokes
        length = side * float(rng.uniform(1.2, 3.0))
        start = min(max(0.0, (x0 + x1) / 2 - length * float(rng.uniform(0.3, 0.7))), width - 1 - length)
        _segment(layer, (start, y1 - cut), (start + length, y1 - cut), thickness, style, rng)
    else:  # a box (kind 1) or a cell's two sides (kind 2) cutting into the strokes
        left_x, right_x = x0 + cut, max(x1 - cut, x0 + gh * 0.5)
        sides = [((left_x, y0 + cut), (left_x, y1 - cut)), ((right_x, y0 + cut), (right_x, y1 - cut))]
        if kind == 1:
            sides += [((left_x, y0 + cut), (right_x, y0 + cut)), ((left_x, y1 - cut), (right_x, y1 - cut))]
        for a, b in sides:
            _segment(layer, a, b, thickness, style, rng)
    _printed(page, layer, _furniture_grey(rng))
    _written(page, glyph, top, left, rng)
    return _scanned_form(page, rng)
