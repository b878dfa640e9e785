"""The command line through typer's CliRunner: help, predict formats and errors, report."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from factories import digit_stroke, write
from typer.testing import CliRunner

from worker.cli import app

runner = CliRunner()
COMMANDS = ["train", "publish", "predict", "watch", "report", "serve", "status", "export-reviewed"]


def test_top_level_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_complete_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    options = re.findall(r"--[a-z][a-z-]+", result.output)
    assert options, result.output
    assert len(result.output.strip().splitlines()) > 3


def test_watch_help_documents_the_contract_options():
    output = runner.invoke(app, ["watch", "--help"]).output
    for option in ["--inbox", "--outbox", "--model", "--once", "--poll"]:
        assert option in output


def test_train_help_documents_the_contract_options():
    output = runner.invoke(app, ["train", "--help"]).output
    for option in ["--dataset", "--arch", "--epochs", "--batch-size", "--seed", "--data", "--output"]:
        assert option in output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("worker ")


def test_missing_model_is_one_line_exit_78(tmp_path):
    result = runner.invoke(app, ["predict", str(tmp_path), "--model", str(tmp_path / "none.keras")])
    assert result.exit_code == 78, "a configuration error: restarting will not help"
    assert "error:" in result.output and "Traceback" not in result.output


@pytest.mark.train
def test_unknown_arch_is_one_line_exit_78(tmp_path):
    result = runner.invoke(app, ["train", "--arch", "resnet-9000", "--output", str(tmp_path / "m.keras")])
    assert result.exit_code == 78
    assert "unknown architecture" in result.output


def test_env_variable_sets_an_option(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKER_MODEL", str(tmp_path / "from-env.keras"))
    result = runner.invoke(app, ["predict", str(tmp_path)])
    assert result.exit_code == 78 and "from-env" in result.output


def test_report_on_empty_outbox(tmp_path):
    result = runner.invoke(app, ["report", "--outbox", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "0 predictions, 0 failed" in result.output


@pytest.mark.slow
def test_predict_table_and_json_and_errors(tmp_path, real_model_path):
    good = write(tmp_path / "in" / "one.png", 255 - np.pad(digit_stroke(100), 50))
    (tmp_path / "in" / "sub").mkdir()
    bad = tmp_path / "in" / "sub" / "bad.png"
    bad.write_text("nope")
    table = runner.invoke(app, ["predict", str(tmp_path / "in"), "--model", str(real_model_path)])
    assert table.exit_code == 1
    lines = table.stdout.strip().splitlines()
    assert lines[0].startswith(f"{good}\t1\t")
    assert "not-an-image" in lines[1]
    as_json = runner.invoke(app, ["predict", str(good), str(bad), "--json", "--model", str(real_model_path)])
    records = [json.loads(line) for line in as_json.stdout.strip().splitlines()]
    assert records[0]["label"] == "1" and records[0]["class_index"] == 1
    assert set(records[0]) == {"file", "label", "confidence", "class_index", "probabilities", "review",
                               "review_score"}
    assert abs(sum(records[0]["probabilities"]) - 1) < 1e-3
    assert records[1]["error"]["kind"] == "not-an-image"
    assert as_json.exit_code == 1


@pytest.mark.slow
def test_predict_then_report_after_watch_once(tmp_path, real_model_path):
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    write(inbox / "a.png", digit_stroke())
    (inbox / "b.png").write_bytes(b"")
    result = runner.invoke(app, ["watch", "--once", "--settle", "0", "--inbox", str(inbox),
                                 "--outbox", str(outbox), "--model", str(real_model_path)])
    assert result.exit_code == 0, result.output
    report = runner.invoke(app, ["report", "--outbox", str(outbox), "--json"])
    summary = json.loads(report.stdout)
    assert summary["predictions"] == 1 and summary["failures_by_kind"] == {"empty": 1}


def test_choices_come_from_their_one_source():
    """--arch lists every architecture; --dataset every dataset (the CLI keeps its own list of
    names so that `worker --help` does not import numpy and OpenCV)."""
    from worker.cli.model import Dataset
    from worker.training import archs, datasets

    help_text = " ".join(runner.invoke(app, ["train", "--help"]).output.split())
    for name in archs.ARCHS:
        assert name in help_text, name
    assert [d.value for d in Dataset] == list(datasets.DATASETS)


def _watch_once_log(tmp_path, env: dict, *, journal: bool) -> list[str]:
    import os
    import subprocess
    import sys

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "bad.png").write_text("not an image")
    log_path = tmp_path / "stderr.log"
    with open(log_path, "w") as stderr:
        if journal:
            info = os.fstat(stderr.fileno())
            env = {**env, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        subprocess.run([sys.executable, "-m", "worker", "watch", "--once", "--settle", "0",
                        "--inbox", str(inbox), "--outbox", str(tmp_path / "outbox")],
                       stderr=stderr, env=env, timeout=120, check=True)
    return [line for line in log_path.read_text().splitlines() if "worker" in line]


@pytest.mark.slow
def test_logs_for_the_journal_carry_priorities_and_no_timestamp(tmp_path):
    import os

    lines = _watch_once_log(tmp_path, dict(os.environ), journal=True)
    assert any(line.startswith("<6>worker.daemon.loop: ready:") for line in lines), lines
    assert any(line.startswith("<4>worker.daemon.quarantine: failed bad.png") for line in lines), lines


@pytest.mark.slow
def test_logs_elsewhere_start_with_local_time_and_its_zone(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    lines = _watch_once_log(tmp_path, env, journal=False)
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d (INFO|WARNING) worker")
    assert lines and all(stamp.match(line) for line in lines), lines


def test_an_error_in_any_thread_is_one_log_line_not_a_bare_traceback(capsys, monkeypatch):
    import logging
    import threading

    from worker.logs import setup_logging

    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # restored after the test
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    setup_logging(logging.INFO)

    def broken():
        raise RuntimeError("model thread fell over")

    thread = threading.Thread(target=broken, name="model_0")
    thread.start()
    thread.join()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "ERROR worker: unexpected error in thread model_0: RuntimeError" in err[0], err


@pytest.mark.train
def test_train_never_overwrites_a_model_kept_as_plain_files(tmp_path, real_model_path):
    plain = tmp_path / "m.keras"
    plain.write_bytes(real_model_path.read_bytes())
    result = runner.invoke(app, ["train", "--output", str(plain)])
    assert result.exit_code == 78 and "--force" in result.output, result.output
    assert plain.read_bytes() == real_model_path.read_bytes()


def test_status_from_the_folders_alone(tmp_path, fake_classifier):
    import subprocess
    import sys
    import threading

    from worker.daemon.claims import Claims
    from worker.daemon.loop import Daemon
    from worker.daemon.settings import Settings

    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    write(inbox / "done.png", digit_stroke())
    (inbox / "bad.png").write_text("not an image")
    Daemon(Settings(inbox=inbox, outbox=outbox, once=True, settle=0), fake_classifier).run(threading.Event())
    for name in ("waiting-1.png", "waiting-2.png", "dead.png", "live.png"):
        write(inbox / name, digit_stroke())
    code = ("import os, sys; from worker.daemon.claims import Claims\n"
            "Claims(sys.argv[1]).claim('dead.png'); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(inbox)], check=True)  # a daemon that died holding it
    live = Claims(inbox)
    live.claim("live.png")
    try:
        result = runner.invoke(app, ["status", "--inbox", str(inbox), "--outbox", str(outbox), "--json"])
        text = runner.invoke(app, ["status", "--inbox", str(inbox), "--outbox", str(outbox)])
    finally:
        live.close()
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["daemons_alive"], report["daemons_dead_with_claims"]) == (1, 1)
    assert (report["claimed"], report["waiting"]) == (2, 2)
    assert report["last_row"]["file"] == "done.png" and report["last_row"]["model_version"] == "fake-1"
    assert report["failed_today"] == {"not-an-image": 1}
    assert "1 daemon(s) alive, 2 file(s) claimed, 2 waiting" in text.stdout


def test_metrics_file_in_a_missing_folder_is_a_configuration_error(tmp_path):
    (tmp_path / "in").mkdir()
    result = runner.invoke(app, ["watch", "--once", "--inbox", str(tmp_path / "in"), "--outbox",
                                 str(tmp_path / "out"), "--metrics-file", str(tmp_path / "no" / "w.prom")])
    assert result.exit_code == 78 and "its folder does not exist" in result.output, result.output


def _png(tmp_path) -> bytes:
    return write(tmp_path / "digit.png", digit_stroke()).read_bytes()


def test_status_leaves_out_what_worker_ignore_names(tmp_path, monkeypatch):
    """A repeatable option's variable holds several values, separated by spaces."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    png = _png(tmp_path)
    inbox.mkdir()
    for name in ("a.png", "b.BAK", "scan_tmp1.png", "c.png.filepart"):
        (inbox / name).write_bytes(png)
    arguments = ["status", "--inbox", str(inbox), "--outbox", str(outbox), "--json"]
    assert json.loads(runner.invoke(app, arguments).stdout)["waiting"] == 3
    monkeypatch.setenv("WORKER_IGNORE", "*.bak  scan_tmp*")
    assert json.loads(runner.invoke(app, arguments).stdout)["waiting"] == 1
    # the command line wins over the variable: only its pattern
    assert json.loads(runner.invoke(app, [*arguments, "--ignore", "a*"]).stdout)["waiting"] == 2


@pytest.mark.slow
def test_watch_reads_close_settle_and_ignore_from_the_environment(tmp_path, real_model_path, monkeypatch):
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    png = _png(tmp_path)
    left = ["b.BAK", "scan_tmp1.png", "~$c.png", "d.png.filepart", "e.png.!sync", "f.png.download"]
    inbox.mkdir()
    for name in ["a.png", *left]:
        (inbox / name).write_bytes(png)
    monkeypatch.setenv("WORKER_IGNORE", "*.bak scan_tmp*")
    monkeypatch.setenv("WORKER_CLOSE_SETTLE", "0.5")
    result = runner.invoke(app, ["watch", "--once", "--settle", "0", "--inbox", str(inbox),
                                 "--outbox", str(outbox), "--model", str(real_model_path)])
    assert result.exit_code == 0, result.output
    assert "close_settle=0.5s" in result.output and "ignore=['*.bak', 'scan_tmp*']" in result.output
    assert sorted(p.name for p in inbox.iterdir() if p.name != ".work") == sorted(left)
    assert [p.name for p in (outbox / "processed").iterdir()] == ["a.png"]


def test_options_of_another_meaning_read_variables_of_their_own():
    """WORKER_BATCH_SIZE is files per model call for watch and predict; train's batch is
    another thing, read from its own variable, and each --help names what it reads."""
    train_help = " ".join(runner.invoke(app, ["train", "--help"]).output.split())
    assert "WORKER_TRAIN_BATCH_SIZE" in train_help and "WORKER_BATCH_SIZE]" not in train_help
    report_help = " ".join(runner.invoke(app, ["report", "--help"]).output.split())
    assert "WORKER_REPORT_MODEL" in report_help
    watch_help = " ".join(runner.invoke(app, ["watch", "--help"]).output.split())
    assert "WORKER_BATCH_SIZE" in watch_help and "WORKER_MODEL" in watch_help


def test_a_units_worker_model_does_not_filter_a_report(tmp_path, monkeypatch):
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    row = {"file": "a.png", "label": "3", "confidence": 0.9, "processed_at": "2026-12-03T10:00:00.000Z",
           "id": "a" * 20, "probabilities": {"3": 0.9, "4": 0.1}, "model": "fashion-mnist"}
    (outbox / "predictions.jsonl").write_text(json.dumps(row) + "\n")
    monkeypatch.setenv("WORKER_MODEL", "/var/lib/worker/models/mnist.keras")
    result = runner.invoke(app, ["report", "--outbox", str(outbox), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["predictions"] == 1


@pytest.mark.parametrize("journal", [True, False])
def test_the_fatal_configuration_line_has_the_journals_error_priority(tmp_path, journal):
    """``journalctl -p err`` must find why a unit stopped: the one line of a configuration error
    carries ``<3>`` under the journal, as log lines carry theirs; elsewhere it is plain."""
    import os
    import subprocess
    import sys

    log_path = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with open(log_path, "w") as stderr:
        if journal:
            info = os.fstat(stderr.fileno())
            env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
        done = subprocess.run([sys.executable, "-m", "worker", "watch", "--once", "--model",
                               str(tmp_path / "none.keras"), "--inbox", str(tmp_path / "in"),
                               "--outbox", str(tmp_path / "out")], stderr=stderr, env=env, timeout=120)
    assert done.returncode == 78
    last = log_path.read_text().splitlines()[-1]
    assert last.startswith("<3>error: " if journal else "error: "), last
