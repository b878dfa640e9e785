"""Turn any image file into the 28x28x1 float32 input the model was trained on.

Three steps, one module each, shared by training and serving:

- ``reading`` and ``headers``: open only regular files, check the size and what the header
  promises (pixels, decoded bytes, JPEG scans, a whole file) *before* decoding (``Limits``),
  decode to 8-bit grey, upright.
- ``normalizing``: fit the ink into the 28x28 field as the model's ``Profile`` (``profiles``)
  says (MNIST's digits or Fashion-MNIST's objects); training runs its dataset through the same
  code.
- ``loading``: both for one file (``load_input``) or a batch (``load_many``), with each file's
  failure as an ``InputError`` in its place.
"""

from worker.preprocess.headers import Header, check_header
from worker.preprocess.loading import LoadedInput, load_bytes, load_input, load_many
from worker.preprocess.normalizing import SIZE, normalize
from worker.preprocess.profiles import (
    DIGITS,
    DIGITS_V1,
    DIGITS_V3,
    DIGITS_V4,
    MARKS,
    OBJECTS,
    PROFILES,
    Profile,
    profile_from_dict,
)
from worker.preprocess.reading import DEFAULT_LIMITS, Limits, decode, read_bytes, to_grey
from worker.preprocess.small import normalize_many

__all__ = [
    "DEFAULT_LIMITS", "DIGITS", "DIGITS_V1", "DIGITS_V3", "DIGITS_V4", "MARKS", "OBJECTS", "PROFILES", "SIZE",
    "Header", "Limits", "LoadedInput", "Profile",
    "check_header", "decode", "load_bytes", "load_input", "load_many", "normalize", "normalize_many",
    "profile_from_dict", "read_bytes", "to_grey",
]
