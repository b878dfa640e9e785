"""The systemd unit is a real, parseable unit that starts `worker watch` as a notify service."""

from __future__ import annotations

import configparser
import shutil
import subprocess

import pytest
from conftest import REPO

UNIT = REPO / "deploy" / "worker.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNIT)
    return parser


def test_unit_starts_the_watcher_as_notify_service():
    unit = _unit()
    assert unit["Service"]["ExecStart"].endswith("worker watch")
    assert unit["Service"]["Type"] == "notify"
    assert unit["Service"]["Restart"] == "always"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_accepts_the_unit():
    result = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True)
    assert "Unknown key" not in result.stderr and "Invalid" not in result.stderr, result.stderr
