"""A named profile outputs what it output when it was pinned: a faster ``normalize`` or
``decode`` must not change a single pixel of what a model was (or is being) trained on."""

from __future__ import annotations

import numpy as np
import pytest
from pinned_pages import PINNED_PROFILES, PINS, REFUSED, digest, model_input, pages


@pytest.fixture(scope="module")
def pinned(mnist_test):
    pins = np.load(PINS)
    made = list(pages(mnist_test[0]))
    assert [name for name, _ in made] == list(pins["names"])
    changed = [name for (name, page), kept in zip(made, pins["digests"], strict=True) if digest(page) != kept]
    assert not changed, f"the factories make other pages now ({changed[:5]}...): the pins no longer apply"
    return made, pins


@pytest.mark.slow
@pytest.mark.parametrize("profile_name", PINNED_PROFILES)
def test_each_profile_gives_what_it_gave_when_pinned(pinned, profile_name):
    made, pins = pinned
    expected = pins[profile_name]
    differing = []
    for (name, page), want in zip(made, expected, strict=True):
        got = model_input(page, name, profile_name)
        if not np.array_equal(got, want):
            refused = (got[0, 0] == REFUSED, want[0, 0] == REFUSED)
            worst = "refused" if any(refused) else int(np.abs(got - want).max())
            differing.append(f"{name} (off by {worst})")
    assert not differing, f"{len(differing)} of {len(made)} pages differ: {differing[:10]}"


def test_the_pins_hold_pages_of_every_kind_and_both_outcomes():
    """The pins are no test if they hold only one kind of page: v4 and v5 differ on forms,
    some pages are refused (no ink), scans come as JPEG and PNG."""
    pins = np.load(PINS)
    names = list(pins["names"])
    assert len(names) >= 300
    assert any(n.endswith(".jpg") for n in names) and any(n.endswith(".png") for n in names)
    v4, v5 = pins["digits-v4"], pins["digits-v5"]
    assert sum(not np.array_equal(a, b) for a, b in zip(v4, v5, strict=True)) >= 50
    assert 0 < int((v5[:, 0, 0] == REFUSED).sum()) < len(names) // 10
