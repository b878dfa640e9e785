"""Small images of one shape normalised together: bit for bit what ``normalize`` makes of each.

A small image (under FLATTEN_MIN_SIDE on its shorter side: MNIST's 28x28, a cut-out digit)
skips the whole-page steps; what is left is a dozen calls on a tiny array, and in a bulk
backlog of such files their per-call overhead was most of the loop's time per file. Here each
step is one call over the whole stack: polarity, the blobs (one labelling of the images laid
end to end, a row of paper between each two), the speckle cut, the crop box, the stroke
stretch and the centre of mass. Otsu's threshold stays OpenCV's own, and the crop's resize
``normalize``'s own, a call per image.

So this is a second spelling of ``normalize``'s small-image steps: a change to those must be
made here too. ``tests/test_small.py`` holds the two equal on every kind of image it has.
"""

from __future__ import annotations

import cv2
import numpy as np

from worker.errors import InputError
from worker.preprocess.normalizing import (
    FLATTEN_MIN_SIDE,
    MIN_BLOB_FRACTION,
    OBJECT_LEVEL,
    SIZE,
    _fit,
    normalize,
)
from worker.preprocess.percentiles import percentile_of_counts
from worker.preprocess.profiles import DIGITS, Profile
from worker.preprocess.reading import MIN_CONTRAST, WORK_SIDE

# What ``normalize`` raises, in the same words.
BLANK = ("no-ink", "the image is blank: no ink found on the page")
NO_INK = ("no-ink", "no ink found on the page")
# Images normalised together by ``normalize_many`` (a dataset): about 800 KB of 28x28 at a time.
STACK = 1024


def normalize_many(images: np.ndarray, profile: Profile = DIGITS) -> np.ndarray:
    """Run a dataset (N, 28, 28) uint8 through ``normalize``; blank images stay blank."""
    out = (images.astype(np.float32) / 255.0)[..., None]
    for start in range(0, len(images), STACK):
        part = images[start : start + STACK]
        if is_small(part.shape[1:]):
            fitted = normalize_stack(part, profile)
        else:
            fitted = [_or_error(image, profile) for image in part]
        for i, value in enumerate(fitted, start=start):
            if not isinstance(value, InputError):
                out[i] = value
    return out


def _or_error(image: np.ndarray, profile: Profile) -> np.ndarray | InputError:
    try:
        return normalize(image, profile)
    except InputError as exc:
        return exc


def is_small(shape: tuple[int, ...]) -> bool:
    """Whether ``normalize`` runs none of its whole-page steps on an image of this shape."""
    return len(shape) == 2 and min(shape) < FLATTEN_MIN_SIDE and max(shape) <= WORK_SIDE


def grouped_by_shape(images: list[np.ndarray]) -> dict[tuple[int, int], list[int]]:
    """Indices of the small images, by shape (each group is one ``normalize_stack``)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        if is_small(image.shape):
            groups.setdefault(image.shape, []).append(i)
    return groups


def normalize_stack(stack: np.ndarray, profile: Profile) -> list[np.ndarray | InputError]:
    """(N, h, w) uint8 of small images -> each one's (28, 28, 1) float32, or its InputError."""
    ink = _ink_bright(stack, profile.paper)
    blank = ink.max(axis=(1, 2)).astype(np.int32) - ink.min(axis=(1, 2)) < MIN_CONTRAST
    if profile.framed_as_is and stack.shape[1:] == (SIZE, SIZE):
        return _results(ink, [BLANK if b else None for b in blank])
    fields, found = _fit_ink(ink, profile, blank)
    errors = [BLANK if b else None if f else NO_INK for b, f in zip(blank, found, strict=True)]
    return _results(fields, errors)


def _results(fields: np.ndarray, errors: list) -> list[np.ndarray | InputError]:
    inputs = (fields.astype(np.float32) / 255.0)[:, :, :, None]
    return [InputError(*error) if error else inputs[i] for i, error in enumerate(errors)]


def _ink_bright(stack: np.ndarray, paper: str) -> np.ndarray:
    """``normalizing._ink_bright`` of each: a small image's sample is all of it (or its border)."""
    if paper == "border":
        sample = np.concatenate([stack[:, 0], stack[:, -1], stack[:, :, 0], stack[:, :, -1]], axis=1)
    else:
        sample = stack.reshape(len(stack), -1)
    light = np.count_nonzero(sample > 127, axis=1) * 2 > sample.shape[1]
    ink = stack.copy()
    ink[light] = 255 - ink[light]
    return ink


def _fit_ink(ink: np.ndarray, profile: Profile, blank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``_keep_ink``, ``_stretch``, ``_fit`` and ``_place`` of each image not blank: the 28x28
    uint8 fields, and whether any ink was found in each."""
    # Otsu splits strokes from paper; a filled object is everything above OBJECT_LEVEL
    level = _otsu(ink) if profile.stretch else np.full(len(ink), OBJECT_LEVEL, np.float64)
    mask = ink > level[:, None, None]
    mask[blank] = False
    kept, boxes, found = _blobs_kept(mask)
    cleaned = np.where(kept, ink, 0).astype(np.uint8)
    if profile.stretch:  # zero the paper grain below the ink's faint edges
        cuts = np.ceil(0.35 * level)
        cleaned[cleaned < cuts[:, None, None]] = 0
        cleaned = _stretch(cleaned, boxes)
    fitted = {i: _fit(cleaned[i, y0:y1, x0:x1], profile.box)
              for i, (x0, y0, x1, y1) in zip(np.flatnonzero(found), boxes[found].tolist(), strict=True)}
    return _placed(fitted, len(ink), profile.centre), found


def _placed(patches: dict[int, np.ndarray], count: int, centre: str) -> np.ndarray:
    """``normalizing._place`` of each patch into its image's 28x28 field (zeros for the rest).
    The centre of mass is summed in integers, exactly as ``cv2.moments`` sums a uint8 image."""
    fields = np.zeros((count, SIZE, SIZE), np.uint8)
    if not patches:
        return fields
    sizes = np.array([patch.shape for patch in patches.values()])
    if centre == "mass":
        padded = np.zeros((len(patches), SIZE, SIZE), np.int64)
        for k, patch in enumerate(patches.values()):
            padded[k, : patch.shape[0], : patch.shape[1]] = patch
        mass = padded.sum(axis=(1, 2))
        weight = np.maximum(mass, 1).astype(np.float64)
        cy = np.where(mass > 0, (padded.sum(axis=2) @ np.arange(SIZE)) / weight, sizes[:, 0] / 2)
        cx = np.where(mass > 0, (padded.sum(axis=1) @ np.arange(SIZE)) / weight, sizes[:, 1] / 2)
    else:
        cy, cx = sizes[:, 0] / 2, sizes[:, 1] / 2
    tops = np.clip(np.round(SIZE / 2 - cy), 0, SIZE - sizes[:, 0]).astype(int).tolist()
    lefts = np.clip(np.round(SIZE / 2 - cx), 0, SIZE - sizes[:, 1]).astype(int).tolist()
    for (i, patch), top, left in zip(patches.items(), tops, lefts, strict=True):
        fields[i, top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    return fields


def _otsu(ink: np.ndarray) -> np.ndarray:
    """Otsu's threshold of each image: OpenCV's own, a call per image (a few microseconds; its
    float recurrence over 256 bins, done across the stack in NumPy, cost several times that)."""
    return np.array([cv2.threshold(image, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0] for image in ink])


def _blobs_kept(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The blobs each image keeps (all but speckles under MIN_BLOB_FRACTION of its largest),
    as a pixel mask where dropped blobs are 0, each image's box of its kept blobs (x0, y0,
    x1, y1), and whether it has any blob. One labelling of the images stacked with a row of
    paper between them: 8-connected blobs cannot cross it."""
    count, height, width = mask.shape
    tall = np.zeros((count, height + 1, width), np.uint8)
    tall[:, :height] = mask
    _, labels, stats, _ = cv2.connectedComponentsWithStats(
        tall.reshape(-1, width), connectivity=8)
    stats = stats[1:].astype(np.int64)
    image = stats[:, cv2.CC_STAT_TOP] // (height + 1)
    areas = stats[:, cv2.CC_STAT_AREA]
    largest = np.zeros(count, np.int64)
    np.maximum.at(largest, image, areas)
    keep = areas >= MIN_BLOB_FRACTION * largest[image]
    kept = np.append(True, keep)[labels].reshape(count, height + 1, width)[:, :height]
    left = stats[:, cv2.CC_STAT_LEFT]
    top = stats[:, cv2.CC_STAT_TOP] - image * (height + 1)
    boxes = np.zeros((count, 4), np.int64)
    boxes[:, :2] = (width, height)
    for column, values, ufunc in ((0, left, np.minimum), (1, top, np.minimum),
                                  (2, left + stats[:, cv2.CC_STAT_WIDTH], np.maximum),
                                  (3, top + stats[:, cv2.CC_STAT_HEIGHT], np.maximum)):
        ufunc.at(boxes[:, column], image[keep], values[keep])
    found = np.zeros(count, bool)
    found[image] = True
    return kept, boxes, found


def _stretch(cleaned: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``normalizing._stretch`` of each image's crop: strokes scaled so the 95th percentile of
    the crop's ink reaches white, that percentile read off a histogram of the crop."""
    count, height, width = cleaned.shape
    rows = np.arange(height)[None, :, None]
    columns = np.arange(width)[None, None, :]
    x0, y0, x1, y1 = (boxes[:, k, None, None] for k in range(4))
    inside = (rows >= y0) & (rows < y1) & (columns >= x0) & (columns < x1)
    values = np.where(inside, cleaned, 0).reshape(count, -1).astype(np.int64)
    hist = np.bincount((values + np.arange(count)[:, None] * 256).ravel(), minlength=256 * count)
    hist = hist.reshape(count, 256)
    hist[:, 0] = 0
    strokes = hist.sum(axis=1)
    peak = percentile_of_counts(np.where(strokes[:, None] > 0, hist, 1), 0.95)
    scaled = (strokes > 0) & (peak < 250) & (peak > 0)
    # normalize multiplies float32 pixels by the float 255 / peak, which NumPy rounds to float32
    factors = np.where(scaled, 255.0 / np.where(scaled, peak, 1.0), 1.0).astype(np.float32)
    return np.clip(cleaned.astype(np.float32) * factors[:, None, None], 0, 255).astype(np.uint8)
