"""The systemd unit: a real, parseable, hardened unit that starts `worker watch` as a notify
service; and the daemon runs as far as this machine can reproduce that sandbox (PID 1 here is
not systemd: the offline forms of systemd-analyze, and setpriv/unshare for the rest)."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import REPO
from factories import digit_stroke, write

UNIT = REPO / "deploy" / "worker.service"
TEMPLATE = REPO / "deploy" / "worker@.service"
CLASSIFY = REPO / "deploy" / "worker-classify.service"
SERVE = REPO / "deploy" / "worker-serve.service"
BROKER_DROP_IN = REPO / "deploy" / "worker-broker.conf"
METRICS_DROP_IN = REPO / "deploy" / "worker-metrics.conf"
UNITS = pytest.mark.parametrize("unit", [UNIT, TEMPLATE, CLASSIFY, SERVE], ids=lambda unit: unit.stem)
needs_systemd_analyze = pytest.mark.skipif(
    not shutil.which("systemd-analyze"), reason="systemd-analyze not installed (./scripts/test installs it)"
)


def _unit(path: Path = UNIT) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(path)
    return parser


def test_unit_starts_the_watcher_as_notify_service():
    unit = _unit()
    assert unit["Service"]["ExecStart"].endswith("worker watch")
    assert unit["Service"]["Type"] == "notify"
    assert unit["Service"]["Restart"] == "always"
    assert unit["Service"]["RestartPreventExitStatus"] == "78", "a configuration error is not retried"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def _as_analyzed(unit: Path, tmp_path: Path) -> Path:
    """The unit as systemd-analyze takes it: a template through an instance of it."""
    if "@." not in unit.name:
        return unit
    instance = tmp_path / unit.name.replace("@.", "@digits.")
    shutil.copy(unit, tmp_path / unit.name)
    instance.symlink_to(tmp_path / unit.name)
    return instance


@needs_systemd_analyze
@UNITS
def test_systemd_analyze_accepts_the_unit(unit, tmp_path):
    result = subprocess.run(["systemd-analyze", "verify", str(_as_analyzed(unit, tmp_path))],
                            capture_output=True, text=True)
    assert "Unknown key" not in result.stderr and "Invalid" not in result.stderr, result.stderr


@needs_systemd_analyze
@UNITS
def test_the_unit_is_hardened_to_safe(unit, tmp_path):
    command = ["systemd-analyze", "security", "--offline=true", str(_as_analyzed(unit, tmp_path))]
    result = subprocess.run(command, capture_output=True, text=True)
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) <= 2.0, result.stdout


def test_the_classify_unit_runs_a_worker_that_may_reach_redis_only():
    service = _unit(CLASSIFY)["Service"]
    assert service["ExecStart"].endswith("worker classify-worker")
    assert service["Restart"] == "always" and service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed", "SIGTERM to the pool processes too would cut their batches"
    assert "PrivateNetwork" not in service and "ReadWritePaths" not in service
    assert service["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"


def _with_drop_in(tmp_path: Path, drop_in: Path, name: str) -> dict:
    """The watcher's unit with the drop-in in its .d folder, as systemd reads them together:
    the environment under which systemd-analyze finds both."""
    shutil.copy(UNIT, tmp_path / UNIT.name)
    (tmp_path / f"{UNIT.name}.d").mkdir()
    shutil.copy(drop_in, tmp_path / f"{UNIT.name}.d" / name)
    return {**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"}


@needs_systemd_analyze
def test_the_broker_drop_in_opens_the_watchers_network(tmp_path):
    env = _with_drop_in(tmp_path, BROKER_DROP_IN, "broker.conf")
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / UNIT.name)], capture_output=True,
                            text=True, env=env)
    assert "broker.conf" not in result.stderr, result.stderr  # nothing in it unknown or invalid
    assert "Unknown key" not in result.stderr and "Invalid" not in result.stderr, result.stderr
    drop_in = _unit(BROKER_DROP_IN)["Service"]
    assert drop_in["PrivateNetwork"] == "no" and "AF_INET" in drop_in["RestrictAddressFamilies"]


@needs_systemd_analyze
def test_the_metrics_drop_in_opens_loopback_only_and_stays_hardened(tmp_path):
    env = _with_drop_in(tmp_path, METRICS_DROP_IN, "metrics.conf")
    result = subprocess.run(["systemd-analyze", "verify", UNIT.name], capture_output=True, text=True, env=env)
    assert "metrics.conf" not in result.stderr, result.stderr
    assert "Unknown key" not in result.stderr and "Invalid" not in result.stderr, result.stderr
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", UNIT.name], capture_output=True,
                            text=True, env=env)
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert score and float(score.group(1)) <= 2.0, result.stdout + result.stderr
    drop_in = _unit(METRICS_DROP_IN)["Service"]
    assert drop_in["Environment"].startswith("WORKER_METRICS=127.0.0.1:")
    assert drop_in["IPAddressAllow"] == "localhost"
    assert "IPAddressDeny" not in drop_in, "the unit's IPAddressDeny=any stays"


def test_the_page_unit_serves_on_loopback_and_writes_the_two_folders_only():
    service = _unit(SERVE)["Service"]
    watcher = _unit()["Service"]
    assert service["ExecStart"] == watcher["ExecStart"].replace(" watch", " serve")
    assert service["User"] == watcher["User"] and service["UMask"] == watcher["UMask"]
    assert service["ReadWritePaths"] == watcher["ReadWritePaths"]
    assert service["IPAddressAllow"] == "localhost" and service["IPAddressDeny"] == "any"
    assert "PrivateNetwork" not in service and "WORKER_HOST" not in SERVE.read_text().split("[Service]")[1]


def test_the_template_differs_from_the_unit_only_by_instance():
    """One unit, two files: the template must not drift from the hardened unit."""
    def settings(path: Path) -> list[str]:
        return [line.replace("/%i", "").replace(" %i", "") for line in path.read_text().splitlines()
                if line and not line.startswith("#") and "EnvironmentFile=-/etc/worker/%i.env" not in line]

    assert settings(TEMPLATE) == settings(UNIT)


@pytest.mark.slow
def test_the_daemon_runs_sandboxed_as_the_unit_runs_it():
    """No network namespace access, no privileges, no capabilities, another user, UMask 0027:
    it still classifies, and tells systemd it is ready through the notify socket."""
    import pwd

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to build the sandbox")
    try:
        user = pwd.getpwnam("worker-test")
    except KeyError:
        pytest.skip("needs the user worker-test (./scripts/test creates it)")
    root = Path(tempfile.mkdtemp(prefix="worker-unit-", dir="/tmp"))
    inbox, outbox = root / "inbox", root / "outbox"
    inbox.mkdir()
    write(inbox / "one.png", 255 - digit_stroke(100))
    for path in (root, inbox, inbox / "one.png"):
        os.chown(path, user.pw_uid, user.pw_gid)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(root / "notify"))
    os.chown(root / "notify", user.pw_uid, user.pw_gid)
    notify.settimeout(60)
    sandbox = ["unshare", "--net", "setpriv", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all",
               f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    with_umask = "import os, runpy; os.umask(0o027); runpy.run_module('worker', run_name='__main__')"
    command = [*sandbox, sys.executable, "-c", with_umask, "watch", "--once", "--settle", "0",
               "--inbox", str(inbox), "--outbox", str(outbox)]
    env = {**os.environ, "NOTIFY_SOCKET": str(root / "notify"), "HOME": str(root)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert b"READY=1" in notify.recv(4096)
    notify.close()
    assert (outbox / "processed" / "one.png").exists()
    assert oct((outbox / "predictions.csv").stat().st_mode & 0o777) == "0o640", "UMask=0027"


@pytest.mark.slow
def test_an_inbox_the_sandbox_keeps_read_only_is_a_configuration_error(tmp_path):
    """ProtectSystem=strict mounts everything read-only but ReadWritePaths=: another inbox
    without a drop-in naming it. One line and exit 78 (no restart loop), not a traceback."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a read-only bind mount")
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    write(inbox / "one.png", 255 - digit_stroke(100))
    outbox.mkdir()
    watch = [sys.executable, "-m", "worker", "watch", "--once", "--settle", "0", "--inbox", str(inbox),
             "--outbox", str(outbox)]
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", str(inbox), *watch],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 78, result.stderr
    [line] = [line for line in result.stderr.splitlines() if "error" in line]
    assert "Read-only file system" in line and "ReadWritePaths=" in line, result.stderr
    assert sorted(os.listdir(inbox)) == ["one.png"], "untouched, for the start with the drop-in"
