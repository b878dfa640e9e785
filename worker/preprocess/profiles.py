"""The profiles: how ink is fitted into the 28x28 field, one per way a dataset was made.

A model card names its profile (``Profile.to_dict``) and serving uses the one the model was
trained with (``profile_from_dict``); ``normalizing`` carries them out. A new way of fitting
is a new profile with a new name: a card's profile never changes meaning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class Profile:
    """How ink is fitted into the 28x28 field; recorded in the model card."""

    name: str
    box: int  # the ink's longest side after scaling
    centre: str  # "mass": by centre of mass (MNIST); "box": by bounding box (Fashion-MNIST)
    flatten: bool  # subtract uneven paper light (thin strokes); off for filled objects
    stretch: bool  # scale the ink so its strokes reach full white (digits)
    paper: str  # where to sample the paper for polarity: "median" of all pixels, or "border"
    # A 28x28 image is already framed (Fashion-MNIST was made so): take it as it is, after
    # polarity. Re-cropping and re-fitting it only resampled and cut faint edges.
    framed_as_is: bool = False
    # v3: the light-flattening opening widens with the strokes (a thick marker's are not taken
    # for paper), and the cut below the ink's faint edges rises with the paper's noise (grain is
    # not kept as ink). A 28x28 MNIST image is untouched by either: results stay bit-identical.
    adaptive: bool = False
    # v4: a big page is read in two steps: the ink found on a small copy, then only its
    # surroundings normalised, at a bounded size (the costly whole-page steps of v3 grew with
    # the page). Pages no bigger than ``normalizing.LOCATE_MIN_SIDE``, and so MNIST's 28x28, are
    # untouched.
    locate: bool = False
    # v5: a form's furniture is taken out before the ink is cropped (``furniture``): lines under
    # or around the digit, and blobs away from it (a printed caption). Images under
    # ``normalizing.FLATTEN_MIN_SIDE``, and so MNIST's 28x28, are untouched.
    forms: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


# Ink is a minority of a digit page, so the median pixel is paper (and dark scanner edges
# cannot flip it); a garment may fill most of its frame, so there the border is the paper.
DIGITS_V1 = Profile(
    name="digits-v1", box=20, centre="mass", flatten=True, stretch=True, paper="median"
)
DIGITS_V3 = Profile(
    name="digits-v3", box=20, centre="mass", flatten=True, stretch=True, paper="median", adaptive=True
)
DIGITS_V4 = Profile(
    name="digits-v4", box=20, centre="mass", flatten=True, stretch=True, paper="median", adaptive=True,
    locate=True,
)
# The profile for marks of one's own (``worker train --data``): tick boxes, letters, symbols. Not
# v5: there a box may be the mark itself (an empty tick box is a class), not a form's furniture.
MARKS = DIGITS_V4
# The profile for digits since v5 (cards of older models name theirs and keep it).
DIGITS = Profile(
    name="digits-v5", box=20, centre="mass", flatten=True, stretch=True, paper="median", adaptive=True,
    locate=True, forms=True,
)
OBJECTS = Profile(
    name="objects-v2", box=28, centre="box", flatten=False, stretch=False, paper="border",
    framed_as_is=True,
)
PROFILES = {p.name: p for p in (DIGITS_V1, DIGITS_V3, DIGITS_V4, DIGITS, OBJECTS)}


def profile_from_dict(data: dict) -> Profile:
    """The profile a card records; fields added since (with defaults) may be missing from it."""
    known = {f.name for f in fields(Profile)}
    return Profile(**{k: v for k, v in data.items() if k in known})
