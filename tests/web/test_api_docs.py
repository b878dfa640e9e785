"""docs/api.md has a section for every endpoint of ``worker serve``'s schema, and no other."""

from __future__ import annotations

import re

from conftest import REPO

from worker.web.app import ServeSettings, create_app


def test_every_endpoint_has_its_section(tmp_path, fake_classifier):
    app = create_app(ServeSettings(inbox=tmp_path, outbox=tmp_path), fake_classifier)
    endpoints = {f"{method.upper()} {path}" for path, methods in app.openapi()["paths"].items()
                 for method in methods}
    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^## `([A-Z]+ /\S+)`$", text, re.MULTILINE))
    assert documented == endpoints
