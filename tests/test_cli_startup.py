"""What a command loads: those that read folders and text start without image or model code.

Each command runs in a fresh interpreter, which then lists the modules it loaded: a deterministic
check of what a start costs, where a timing would only be noise.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from worker.daemon.claim import new_id
from worker.outbox.records import Row
from worker.outbox.writer import Outbox

# Image, model and queue libraries, and rich (typer's boxed help): each costs tens of
# milliseconds or more to import, and none is needed to print help or read the folders.
HEAVY = ("numpy", "cv2", "tensorflow", "keras", "PIL", "ai_edge_litert", "pypdfium2", "celery", "rich")

RUN_AND_LIST = """
import sys
from worker.cli import app
try:
    app(sys.argv[2:], prog_name="worker")
except SystemExit:
    pass
with open(sys.argv[1], "w") as out:
    out.write("\\n".join(sys.modules))
"""


def modules_loaded(tmp_path: Path, *args: str) -> set[str]:
    listing = tmp_path / "modules.txt"
    subprocess.run([sys.executable, "-c", RUN_AND_LIST, str(listing), *args], check=True,
                   capture_output=True, timeout=60)
    return {name.partition(".")[0] for name in listing.read_text().splitlines()}


@pytest.fixture
def boxes_with_rows(tmp_path) -> tuple[Path, Path]:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    classes = [str(d) for d in range(10)]
    box = Outbox(outbox, classes)
    box.record([Row(id=new_id(), file=f"{n}.png", label=str(n), confidence=0.5 + n / 20, class_index=n,
                    sha256="ab" * 32, model="mnist", processed_at="2026-11-20T10:00:00.000Z",
                    probabilities={c: 0.5 + n / 20 if c == str(n) else 0.01 for c in classes},
                    model_version="v1") for n in range(10)])
    box.close()
    return inbox, outbox


@pytest.mark.parametrize("args", [
    ["--help"], ["--version"], ["watch", "--help"], ["serve", "--help"], ["train", "--help"],
    ["report", "--help"], ["classify-worker", "--help"],
], ids=" ".join)
def test_help_loads_no_image_code_and_no_rich(tmp_path, args):
    loaded = modules_loaded(tmp_path, *args)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("args", [
    ["status"], ["status", "--json"], ["report"], ["report", "--json"], ["report", "--truth", "folders"],
], ids=" ".join)
def test_status_and_report_of_rows_load_no_image_code(tmp_path, boxes_with_rows, args):
    inbox, outbox = boxes_with_rows
    folders = {"status": ["--inbox", str(inbox), "--outbox", str(outbox)],
               "report": ["--outbox", str(outbox)]}
    loaded = modules_loaded(tmp_path, *args, *folders[args[0]])
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_check_itself_sees_a_command_that_loads_image_code(tmp_path, boxes_with_rows):
    """``predict`` needs NumPy: the listing must show it, or the tests above prove nothing."""
    inbox, _ = boxes_with_rows
    assert "numpy" in modules_loaded(tmp_path, "predict", str(inbox), "--model", str(tmp_path / "none.keras"))


@pytest.mark.parametrize("count", [0, 1, 2, 5, 1000])
def test_the_median_is_the_same_with_numpy_or_without(tmp_path, monkeypatch, count):
    """Below NUMPY_MEDIAN_ROWS a report sorts in Python; from it on NumPy partitions."""
    from array import array

    from worker.report import summary
    from worker.report.truth import Truth

    values = array("d", [((n * 7919) % 1000) / 1000 for n in range(count)])
    medians = []
    for threshold in (count + 1, 0):  # Python's, then NumPy's
        monkeypatch.setattr(summary, "NUMPY_MEDIAN_ROWS", threshold)
        report = summary.Summary(Truth(None, tmp_path), summary.Caps())
        report.confidences = values
        medians.append(report.median())
    assert medians[0] == medians[1]
    assert medians[0] is None if count == 0 else isinstance(medians[0], float)
