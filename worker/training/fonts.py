"""The fonts printed digits are drawn in, for training and for the printed hard set.

The fonts are the system's own (Debian's font packages under ``/usr/share/fonts``; ``scripts/test``
installs a dozen families). A family is the folder a package puts its files in, and some
families are kept out of training entirely: the printed hard set (``tests/factories.py``) is
drawn in those, so its score measures fonts the model never saw. The review flag's letters and
symbols are printed in the training families but two, which the flag's bench prints in.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

FONT_FOLDERS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
# Held out: two Helvetica clones (FreeSans, Nimbus Sans), whose "1" is a flag without a foot,
# Open Sans (the same shape), Cantarell, and the serif and mono faces of those packages.
HELD_OUT_FAMILIES = frozenset({"freefont", "urw-base35", "open-sans", "cantarell"})
# Not for the review flag's letters and symbols either: the bench prints its own in these
# (``bench/review_flag.py``), so its numbers are for faces the flag never saw.
GLYPH_HELD_OUT_FAMILIES = frozenset({"dejavu", "liberation"})
# Fonts without digits, or with pictures in their place.
_NO_DIGITS = ("symbol", "d050000l", "dingbat", "emoji")


@lru_cache(maxsize=2)
def font_files(held_out: bool = False) -> tuple[Path, ...]:
    """The TrueType and OpenType files of the training families (``held_out``: of the held-out
    ones), sorted, so a seed draws the same fonts on every machine that has the same ones."""
    found = []
    for folder in FONT_FOLDERS:
        if not folder.is_dir():
            continue
        for path in folder.rglob("*"):
            if path.suffix.lower() not in (".ttf", ".otf") or any(s in path.name.lower() for s in _NO_DIGITS):
                continue
            if (family(path) in HELD_OUT_FAMILIES) == held_out:
                found.append(path)
    return tuple(sorted(found))


def family(path: Path) -> str:
    """The family a font file belongs to: the folder its package installed it in."""
    for folder in FONT_FOLDERS:
        if path.is_relative_to(folder):
            parts = path.relative_to(folder).parts
            return parts[1] if len(parts) > 2 else parts[0]
    return path.parent.name


@lru_cache(maxsize=1)
def glyph_font_files() -> tuple[Path, ...]:
    """The training fonts that letters and symbols that are no digit are printed in, for the
    review flag: all but ``GLYPH_HELD_OUT_FAMILIES``."""
    return tuple(path for path in font_files() if family(path) not in GLYPH_HELD_OUT_FAMILIES)
