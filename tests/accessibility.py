"""axe-core (npm's, pinned in tests/js/package-lock.json, installed by ./scripts/test) run in a
page a browser test has open: the accessibility rules a person with a screen reader, a keyboard
or poor sight meets, checked by the same engine browsers' tools use."""

from __future__ import annotations

from pathlib import Path

AXE = Path(__file__).parent / "js" / "node_modules" / "axe-core" / "axe.min.js"
# axe's impact levels that fail a test: "serious" and "critical" stop some people using the
# page; "moderate" and "minor" are reported by axe but not held against it here.
FAILING = ("serious", "critical")


def violations(page, impacts: tuple[str, ...] = FAILING) -> list[str]:
    """The violations of ``impacts`` in what ``page`` shows now, one line each (rule, impact,
    the first nodes), for an assertion message."""
    if not AXE.is_file():
        raise AssertionError(f"{AXE} is missing: run ./scripts/test (npm ci --prefix tests/js)")
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=AXE.read_text(encoding="utf-8"))  # path=: a thread that stays
    found = page.evaluate("async () => (await axe.run(document)).violations.map(v => ({id: v.id, "
                          "impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))")
    return [f"{v['id']} ({v['impact']}): {v['help']}: {', '.join(v['nodes'][:5])}"
            for v in found if v["impact"] in impacts]
