"""Without an extra, a command that needs it says which in one line and exits 78, and a file that
needs one (a PDF without ``documents``) is one error record saying so, the rest going on.

Each case runs ``python -m worker`` with the extra's modules unimportable: a ``sitecustomize``
on its ``PYTHONPATH`` sets them to None in ``sys.modules`` (what ``import`` and ``find_spec`` then
treat as not installed), in the process and in every Python child it starts (the decoding
sandbox), as an environment without the extra would be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO
from documents import text_pdf
from factories import digit_stroke

from worker.extras import MODULES

EXIT_CONFIG = 78
BLOCKER = """
import os, sys
for name in os.environ.get("BLOCKED_MODULES", "").split():
    sys.modules[name] = None
"""


def run_without(extra: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """``python -m worker ARGS`` as if ``extra`` were not installed."""
    site = tmp_path / "blocker"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    path = os.pathsep.join(filter(None, [str(site), str(REPO), environ.get("PYTHONPATH")]))
    env = {**environ, "PYTHONPATH": path, "BLOCKED_MODULES": " ".join(MODULES[extra])}
    return subprocess.run([sys.executable, "-m", "worker", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def assert_names_the_extra(done: subprocess.CompletedProcess, command: str, extra: str) -> None:
    assert done.returncode == EXIT_CONFIG, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {command} needs the {extra} extra: pip install "), lines[0]
    assert f"[{extra}]'" in lines[0], lines[0]


@pytest.fixture
def folders(tmp_path):
    inbox, outbox, models = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "models"
    for folder in (inbox, outbox, models):
        folder.mkdir()
    return inbox, outbox, models


def test_the_blocker_itself_makes_a_module_unimportable(tmp_path):
    """Without this the tests below could pass on a message printed for another reason."""
    site = tmp_path / "blocker"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    done = subprocess.run([sys.executable, "-c", "import fastapi"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(site), "BLOCKED_MODULES": "fastapi"})
    assert done.returncode == 1 and "ModuleNotFoundError" in done.stderr, done.stderr


def test_serve_without_the_web_extra(folders, tmp_path):
    inbox, outbox, _ = folders
    done = run_without("web", "serve", "--inbox", str(inbox), "--outbox", str(outbox), "--port", "0",
                       tmp_path=tmp_path)
    assert_names_the_extra(done, "worker serve", "web")


def test_classify_worker_without_the_broker_extra(folders, tmp_path):
    _, _, models = folders
    done = run_without("broker", "classify-worker", "--broker", "redis://127.0.0.1:1/0",
                       "--models", str(models), tmp_path=tmp_path)
    assert_names_the_extra(done, "worker classify-worker", "broker")


def test_watch_with_a_broker_without_the_broker_extra(folders, tmp_path):
    inbox, outbox, _ = folders
    done = run_without("broker", "watch", "--inbox", str(inbox), "--outbox", str(outbox), "--once",
                       "--broker", "redis://127.0.0.1:1/0", tmp_path=tmp_path)
    assert_names_the_extra(done, "worker watch --broker", "broker")


def test_status_of_a_broker_without_the_broker_extra(folders, tmp_path):
    inbox, outbox, _ = folders
    done = run_without("broker", "status", "--inbox", str(inbox), "--outbox", str(outbox),
                       "--broker", "redis://127.0.0.1:1/0", tmp_path=tmp_path)
    assert_names_the_extra(done, "worker status --broker", "broker")


@pytest.mark.parametrize("command", ["train", "calibrate"])
def test_training_without_the_train_extra(command, tmp_path):
    done = run_without("train", command, tmp_path=tmp_path)
    assert_names_the_extra(done, f"worker {command}", "train")


def test_watch_without_a_broker_needs_no_broker_extra(folders, tmp_path):
    inbox, outbox, _ = folders
    done = run_without("broker", "watch", "--inbox", str(inbox), "--outbox", str(outbox), "--once",
                       tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr


def _settled(path: Path) -> Path:
    """Written an hour ago: ready at once for ``--once``."""
    an_hour_ago = time.time() - 3600
    os.utime(path, (an_hour_ago, an_hour_ago))
    return path


def test_a_pdf_without_the_documents_extra_is_one_error_record_saying_so(folders, tmp_path):
    """The PDF and the HEIC photo are refused, each with one record naming the extra; the PNG beside
    them gets its row; the daemon exits 0 (nothing crashed, nothing lost)."""
    inbox, outbox, _ = folders
    (inbox / "scan.pdf").write_bytes(text_pdf(pages=2))
    _settled(inbox / "scan.pdf")
    heic = inbox / "photo.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    _settled(heic)
    cv2.imwrite(str(inbox / "digit.png"), 255 - cv2.resize(digit_stroke(), (100, 100)))
    _settled(inbox / "digit.png")
    done = run_without("documents", "watch", "--inbox", str(inbox), "--outbox", str(outbox), "--once",
                       tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    records = {json.loads(p.read_text())["file"]: json.loads(p.read_text())
               for p in (outbox / "failed").rglob("*.error.json")}
    assert sorted(records) == ["photo.heic", "scan.pdf"], records
    for record in records.values():
        assert record["kind"] == "unsupported", record
        assert "needs the documents extra: pip install" in record["message"], record
    assert (outbox / "failed" / "scan.pdf").is_file(), "the input is kept beside its record"
    lines = (outbox / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["file"] for line in lines] == ["digit.png"]


def test_predict_of_a_pdf_without_the_documents_extra_says_which(tmp_path):
    pdf = tmp_path / "scan.pdf"
    pdf.write_bytes(text_pdf(pages=1))
    image = tmp_path / "digit.png"
    cv2.imwrite(str(image), np.asarray(255 - cv2.resize(digit_stroke(), (100, 100))))
    done = run_without("documents", "predict", str(pdf), str(image), tmp_path=tmp_path)
    assert done.returncode == 1, done.stderr
    by_file = dict(line.split("\t", 1) for line in done.stdout.splitlines())
    assert by_file[str(pdf)].startswith("error\tunsupported: ") and "documents extra" in by_file[str(pdf)]
    assert not by_file[str(image)].startswith("error"), by_file


def test_the_hint_names_the_checkout_or_the_source_never_pypis_worker(monkeypatch, tmp_path):
    """PyPI's "worker" is another project: ``pip install 'worker[web]'`` would install it."""
    from worker import extras

    assert extras.install_hint("web") == f"pip install -e '{REPO}[web]'"
    monkeypatch.setattr(extras, "SOURCE", tmp_path / "site-packages")  # installed from a copy
    assert extras.install_hint("web") == "pip install '<worker's source>[web]'"
