"""Fitting ink into the 28x28 field the model was trained on, by a ``Profile``.

MNIST digits are white ink on black, the ink size-normalised into a 20x20 box and centred by
centre of mass in a 28x28 field. A scan is dark ink on a big, noisy, unevenly lit page.
``normalize`` detects polarity (the page is the majority: if light, invert), shrinks huge pages,
flattens uneven light (subtracts a morphological background), finds the ink (Otsu, then drops
speckles much smaller than the largest ink blob), crops to it, fits it into the profile's box
keeping the aspect ratio, centres it and scales to [0, 1]. Training runs the dataset through
the same function (``normalize_many``).

Fashion-MNIST was made differently (the item fills the 28x28 frame, centred by its box), so the
model card names a ``Profile`` (``profiles.py``) and serving uses the one the model was trained with.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from worker.errors import InputError
from worker.preprocess.furniture import near_the_digit, without_lines
from worker.preprocess.percentiles import percentile, percentile_of_counts
from worker.preprocess.profiles import DIGITS, Profile
from worker.preprocess.reading import MIN_CONTRAST, WORK_SIDE
from worker.preprocess.runs import opening_finds_above

SIZE = 28
# Ink blobs smaller than this fraction of the largest are paper noise (dust, JPEG speckles).
MIN_BLOB_FRACTION = 0.05
# A filled object (a garment) is every pixel brighter than this above the paper, not just the
# brightest half that Otsu would pick: a dark shirt's folds are still shirt.
OBJECT_LEVEL = 24
# A ruled line is this much brighter than the (flattened) paper all along its length.
RULE_LEVEL = 10
# Images smaller than this on their shorter side (MNIST's 28x28) are already clean: the paper's
# light is not flattened, nor its grain measured.
FLATTEN_MIN_SIDE = 64
# digits-v4 (``Profile.locate``): pages whose shorter side is above LOCATE_MIN_SIDE are searched
# for ink on a copy LOCATE_SIDE long; the ink is then normalised at most CROP_INK pixels across
# (the 20x20 box needs far fewer; more keeps thin strokes whole through the steps before).
LOCATE_MIN_SIDE = 320
LOCATE_SIDE = 256
LOCATE_MAX_SHARE = 0.75
CROP_INK = 96


def normalize(grey: np.ndarray, profile: Profile = DIGITS) -> np.ndarray:
    """8-bit grey image of any size -> float32 (28, 28, 1) in [0, 1], MNIST-style."""
    page, window = grey, None
    if profile.locate and min(grey.shape) > LOCATE_MIN_SIDE:
        window = _ink_window(grey, profile)
        grey = grey if window is None else _cut(grey, window)
    ink, split = _prepared(grey, profile)
    if profile.framed_as_is and ink.shape == (SIZE, SIZE):
        return (ink.astype(np.float32) / 255.0)[:, :, None]
    ink, (x, y, w, h) = _keep_ink(ink, clear_background=profile.stretch, adaptive=profile.adaptive,
                                  forms=profile.forms, split=split)
    closer = _closer_window(page, grey.shape, ink.shape, (x, y, w, h), window) if profile.forms else None
    if closer is not None:
        try:
            again, split = _prepared(_cut(page, closer), profile)
            ink, (x, y, w, h) = _keep_ink(again, clear_background=profile.stretch, adaptive=profile.adaptive,
                                          forms=True, split=split)
        except InputError:
            pass  # the digit as first found is still there to read
    patch = ink[y : y + h, x : x + w]
    if profile.stretch:
        patch = _stretch(patch)
    patch = _fit(patch, profile.box)
    field = _place(patch, profile.centre)
    return (field.astype(np.float32) / 255.0)[:, :, None]


def _prepared(grey: np.ndarray, profile: Profile) -> tuple[np.ndarray, tuple | None]:
    """The ink made bright, the paper's light flattened, a form's furniture taken out (v5); and
    the ink's split from the paper (``_ink_mask``) where v5 made it and took nothing out, for
    ``_keep_ink`` to use again rather than make the same one."""
    ink, split = _ink_bright(_shrink(grey), profile.paper), None
    if profile.flatten:
        ink = _flatten_light(ink, profile.adaptive)
    if profile.forms and min(ink.shape) >= FLATTEN_MIN_SIDE:
        split = _ink_mask(ink, grainy=profile.adaptive)
        cleaned = without_lines(ink, split[1])
        ink, split = (ink, split) if cleaned is ink else (cleaned, None)
    if _contrast(ink) < MIN_CONTRAST:
        raise InputError("no-ink", "the image is blank: no ink found on the page")
    return ink, split


def _contrast(image: np.ndarray) -> int:
    """The brightest pixel less the darkest, in one pass."""
    darkest, brightest, _, _ = cv2.minMaxLoc(image)
    return int(brightest) - int(darkest)


def _around_ink(grey: np.ndarray, profile: Profile) -> np.ndarray:
    """The part of a big page around its ink (``_ink_window``), or the page if none is found."""
    window = _ink_window(grey, profile)
    return grey if window is None else _cut(grey, window)


def _cut(grey: np.ndarray, window: tuple) -> np.ndarray:
    """``grey``'s rows top:bottom and columns left:right, scaled by ``shrink`` if below 1."""
    top, bottom, left, right, shrink = window
    crop = grey[top:bottom, left:right]
    if shrink >= 1:
        return crop
    size = (max(1, round(crop.shape[1] * shrink)), max(1, round(crop.shape[0] * shrink)))
    return cv2.resize(crop, size, interpolation=cv2.INTER_AREA)


def _closer_window(page: np.ndarray, seen: tuple, worked: tuple, box: tuple, window: tuple | None):
    """v5: where to look again when the digit found is small in what was normalised (``worked``,
    the shape of the ink image made from ``seen``, the shape of ``window`` cut from ``page``):
    the locate step's crop held the furniture too (a comb of cells, a page-wide line), which
    set its scale, and the digit alone is at most half of CROP_INK across. The window around
    the digit alone (half its size each way), at most CROP_INK across; None if that would not
    show it at least half as big again."""
    x, y, w, h = box
    if max(w, h) >= CROP_INK // 2:
        return None
    top, left, shrink = (window[0], window[2], window[4]) if window else (0, 0, 1.0)
    to_page = 1 / min(shrink, 1.0)
    fy, fx = seen[0] / worked[0] * to_page, seen[1] / worked[1] * to_page
    x0, y0, width, height = left + x * fx, top + y * fy, w * fx, h * fy
    side = max(width, height)
    if min(side, CROP_INK) < 1.5 * max(w, h):
        return None
    pad = side / 2 + 3
    return (max(0, int(y0 - pad)), min(page.shape[0], math.ceil(y0 + height + pad)),
            max(0, int(x0 - pad)), min(page.shape[1], math.ceil(x0 + width + pad)), CROP_INK / side)


def _ink_window(grey: np.ndarray, profile: Profile) -> tuple | None:
    """Where a big page's ink is: (top, bottom, left, right, shrink), to cut out and scale so
    the ink is at most CROP_INK pixels across: found on a copy LOCATE_SIDE pixels long with the
    profile's own steps. The margin
    is half the ink's size each way (at least a few pixels), so that the paper around it
    still tells grain and light from ink. A page where the copy shows no ink is given back
    whole (a faint digit may show only at full size), and so is one where what it found spans
    most of the copy: that is light or an edge of the page taken for ink, or a digit so big
    that the crop would save nothing (None, for both)."""
    scale = LOCATE_SIDE / max(grey.shape)
    small = cv2.resize(grey, (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    ink = _flatten_light(_ink_bright(small, profile.paper), profile.adaptive)
    if _contrast(ink) < MIN_CONTRAST:
        return None
    try:
        # not v5's furniture steps: on the copy a digit is a few pixels, its strokes a pixel
        # wide, and a speck may be its largest blob; the crop keeps any furniture around the
        # digit, and the second step takes it out at a size where strokes have a width
        _, (x, y, w, h) = _keep_ink(ink, clear_background=True, adaptive=profile.adaptive, box_only=True)
    except InputError:
        return None
    if max(w / small.shape[1], h / small.shape[0]) > LOCATE_MAX_SHARE:
        return None
    pad = max(w, h) // 2 + 3
    top, left = max(0, y - pad), max(0, x - pad)
    bottom, right = min(small.shape[0], y + h + pad), min(small.shape[1], x + w + pad)
    return (int(top / scale), math.ceil(bottom / scale), int(left / scale), math.ceil(right / scale),
            CROP_INK / (max(w, h) / scale))


def _shrink(grey: np.ndarray) -> np.ndarray:
    longest = max(grey.shape)
    if longest <= WORK_SIDE:
        return grey
    scale = WORK_SIDE / longest
    size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def _ink_bright(grey: np.ndarray, paper: str) -> np.ndarray:
    """Make ink the bright part: if the paper is light, invert."""
    if paper == "border":
        sample = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    else:
        step = max(1, min(grey.shape) // 64)
        sample = grey[::step, ::step]
    light = np.count_nonzero(sample > 127) * 2 > sample.size  # the median is light
    return cv2.bitwise_not(grey) if light else grey


def _flatten_light(ink: np.ndarray, adaptive: bool = False) -> np.ndarray:
    """Subtract the paper's own brightness (uneven light, shadows) estimated by an opening
    much wider than a pen stroke; small images (already clean, like MNIST) are left alone.
    ``adaptive``: at least twice the widest stroke, measured, so a marker's strokes survive."""
    side = min(ink.shape)
    if side < FLATTEN_MIN_SIDE:
        return ink
    k = max(15, side // 6)
    if not adaptive:
        return _subtract_opening(ink, k | 1)
    rough = _subtract_opening(ink, max(k, side // 2) | 1)  # light gone, strokes whole however thick
    k = max(k, 4 * _widest_stroke(rough) + 1)
    return _without_rules(_subtract_opening(ink, min(k, side) | 1))


def _subtract_opening(ink: np.ndarray, k: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
    background = cv2.blur(cv2.morphologyEx(ink, cv2.MORPH_OPEN, kernel), (k, k))
    return cv2.subtract(ink, background)


def _without_rules(ink: np.ndarray) -> np.ndarray:
    """Take out ruled and squared paper's lines, which would join everything they touch into one
    blob: straight lines across 90 % of the page, when there are several of them (one such line
    may be a tall 1 in a tight crop; paper has many)."""
    height, width = ink.shape
    for length in ((width * 9 // 10, 1), (1, height * 9 // 10)):
        if not opening_finds_above(ink, RULE_LEVEL, max(length), horizontal=length[1] == 1):
            continue  # no run of ink that long: the opening would find no line
        lines = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, length))
        count, _ = cv2.connectedComponents((lines > RULE_LEVEL).astype(np.uint8))
        if count - 1 >= 2:
            ink = cv2.subtract(ink, lines)
    return ink


def _widest_stroke(ink: np.ndarray) -> int:
    """Half the width of the widest strokes, in pixels: the 99th percentile of the distance
    from ink to paper over a rough ink mask (a lone blot does not count)."""
    _, mask = cv2.threshold(cv2.GaussianBlur(ink, (5, 5), 0), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    distances = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    inside = distances[distances > 0]
    return int(math.ceil(percentile(inside, 0.99))) if inside.size else 0


def _paper_cut(ink: np.ndarray, mask: np.ndarray) -> int:
    """The paper's grain, as ink values go: its median plus four (robust) sigmas, measured on
    the lightly smoothed image outside the ink. Zero on a clean image such as MNIST's.
    Both medians are read off the paper's histogram (the same numbers as sorting its pixels)."""
    counts = cv2.calcHist([cv2.blur(ink, (3, 3))], [0], cv2.bitwise_not(mask), [256], [0, 256])
    counts = counts.ravel().astype(np.int64)
    if not counts.any():
        return 0
    median = float(percentile_of_counts(counts, 0.5))
    # |value - median| doubled is a whole number (the median of whole numbers is one, or a half)
    doubled = np.bincount(np.abs(2 * np.arange(256) - round(2 * median)), weights=counts, minlength=512)
    spread = float(percentile_of_counts(doubled.astype(np.int64), 0.5)) / 2 * 1.4826
    return int(math.ceil(median + 4 * spread))


def _ink_mask(ink: np.ndarray, grainy: bool) -> tuple[float, np.ndarray]:
    """Otsu's split of ink from paper. On a big page (``grainy``) it is made on a smoothed copy
    and never below the paper's grain: heavy grain would otherwise join into one blob the size
    of the page, whose box is then taken for the digit's."""
    if not grainy:
        return cv2.threshold(ink, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    smooth = cv2.GaussianBlur(ink, (5, 5), 0)
    threshold, mask = cv2.threshold(smooth, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    grain = _paper_cut(smooth, mask)
    if grain > threshold:
        threshold, mask = cv2.threshold(smooth, grain, 255, cv2.THRESH_BINARY)
    return threshold, mask


def _keep_ink(ink: np.ndarray, *, clear_background: bool, adaptive: bool = False,
              forms: bool = False, split: tuple | None = None,
              box_only: bool = False) -> tuple[np.ndarray | None, tuple]:
    """Find the ink (Otsu), drop speckles (and with ``forms``, blobs away from the digit: a
    caption), return the cleaned image and the ink's bounding box (``box_only``: the box alone,
    the image None, for a caller that only needs to know where the ink is).
    Whole-image steps are OpenCV calls, which release the GIL: big pages load in parallel."""
    grainy = adaptive and min(ink.shape) >= FLATTEN_MIN_SIDE
    threshold, mask = split if split is not None and grainy else _ink_mask(ink, grainy)
    if not clear_background:  # a filled object: everything above the paper is the object
        _, mask = cv2.threshold(ink, OBJECT_LEVEL, 255, cv2.THRESH_BINARY)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    if count <= 1 or areas.max() == 0:
        raise InputError("no-ink", "no ink found on the page")
    keep = areas >= MIN_BLOB_FRACTION * areas.max()
    if forms and min(ink.shape) >= FLATTEN_MIN_SIDE:
        keep &= near_the_digit(stats)
    box = _box_of(stats[1:][keep])
    if box_only:
        return None, box
    cleaned = ink
    if not keep.all():
        kept = np.take(np.where(np.append(True, keep), 255, 0).astype(np.uint8), labels)
        cleaned, mask = cv2.bitwise_and(ink, kept), cv2.bitwise_and(mask, kept)
    if clear_background:  # zero the paper grain below the ink's faint edges (< 0.35 threshold)
        cut = math.ceil(0.35 * threshold)
        if adaptive and min(ink.shape) >= FLATTEN_MIN_SIDE:  # a big page's grain may reach higher
            cut = max(cut, min(_paper_cut(ink, mask), int(threshold)))
        _, cleaned = cv2.threshold(cleaned, cut - 1, 0, cv2.THRESH_TOZERO)
    return cleaned, box


def _box_of(blobs: np.ndarray) -> tuple[int, int, int, int]:
    """The bounding box (x, y, w, h) of the blobs (``connectedComponentsWithStats`` rows, at
    least one): ``cv2.boundingRect`` of their pixels, from their own boxes."""
    left, top = int(blobs[:, cv2.CC_STAT_LEFT].min()), int(blobs[:, cv2.CC_STAT_TOP].min())
    right = int((blobs[:, cv2.CC_STAT_LEFT] + blobs[:, cv2.CC_STAT_WIDTH]).max())
    bottom = int((blobs[:, cv2.CC_STAT_TOP] + blobs[:, cv2.CC_STAT_HEIGHT]).max())
    return left, top, right - left, bottom - top


def _stretch(patch: np.ndarray) -> np.ndarray:
    """Scale so the stroke cores reach white, as MNIST's do (pencil is grey, MNIST is not)."""
    strokes = patch[patch > 0]
    if strokes.size == 0:
        return patch
    peak = percentile(strokes, 0.95)
    if peak >= 250 or peak <= 0:
        return patch
    return np.clip(patch.astype(np.float32) * (255.0 / peak), 0, 255).astype(np.uint8)


def _fit(patch: np.ndarray, box: int) -> np.ndarray:
    """Scale so the longest side is ``box`` pixels, keeping the aspect ratio."""
    h, w = patch.shape
    scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return patch
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(patch, size, interpolation=interpolation)


def _place(patch: np.ndarray, centre: str) -> np.ndarray:
    """Put the patch into the 28x28 field, centred by mass or by its box."""
    h, w = patch.shape
    if centre == "mass":
        m = cv2.moments(patch, binaryImage=False)
        cy = m["m01"] / m["m00"] if m["m00"] else h / 2
        cx = m["m10"] / m["m00"] if m["m00"] else w / 2
    else:
        cy, cx = h / 2, w / 2
    top = min(max(round(SIZE / 2 - cy), 0), SIZE - h)
    left = min(max(round(SIZE / 2 - cx), 0), SIZE - w)
    field = np.zeros((SIZE, SIZE), dtype=np.uint8)
    field[top : top + h, left : left + w] = patch
    return field
