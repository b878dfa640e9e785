"""sd_notify's protocol against real datagram sockets, bound here as systemd binds its own: a
path and an abstract name, a socket that goes away and comes back (systemd re-executing), and
the mistakes that must be said once rather than raised or hidden."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from worker.daemon.systemd_notify import NotifySocket


def _listen(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_messages_reach_a_socket_at_a_path_as_sent(tmp_path):
    path = str(tmp_path / "notify")
    with _listen(path) as systemd:
        notify = NotifySocket.from_environ({"NOTIFY_SOCKET": path})
        assert notify.send("READY=1")
        assert notify.send("STATUS=3 files done")
        assert notify.send("RELOADING=1\nMONOTONIC_USEC=12")
        said = [systemd.recv(4096) for _ in range(3)]
    assert said == [b"READY=1", b"STATUS=3 files done", b"RELOADING=1\nMONOTONIC_USEC=12"]


def test_an_at_sign_names_an_abstract_socket():
    name = f"@worker-test-notify-{os.getpid()}"
    with _listen("\0" + name[1:]) as systemd:
        assert NotifySocket.from_environ({"NOTIFY_SOCKET": name}).send("WATCHDOG=1")
        assert systemd.recv(4096) == b"WATCHDOG=1"


@pytest.mark.parametrize("value", ["", "vsock:2:1234", "relative/notify"])
def test_no_socket_without_a_path_or_abstract_name(value, caplog):
    with caplog.at_level(logging.WARNING, logger="worker.daemon.systemd_notify"):
        assert NotifySocket.from_environ({"NOTIFY_SOCKET": value} if value else {}) is None
    assert bool(caplog.records) == bool(value), "an unusable value is said; an unset one is not"


def test_a_socket_gone_and_bound_again_is_reached_again_and_the_failure_logged_once(tmp_path, caplog):
    path = str(tmp_path / "notify")
    notify = NotifySocket.from_environ({"NOTIFY_SOCKET": path})
    with _listen(path) as systemd:
        assert notify.send("READY=1") and systemd.recv(4096) == b"READY=1"
    os.unlink(path)  # systemd gone (re-executing): nobody listens at the path
    with caplog.at_level(logging.INFO, logger="worker.daemon.systemd_notify"):
        assert [notify.send("WATCHDOG=1") for _ in range(3)] == [False, False, False]
        with _listen(path) as systemd:  # bound again: no reconnect needed
            assert notify.send("WATCHDOG=1")
            assert systemd.recv(4096) == b"WATCHDOG=1"
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(said) == 2, said
    assert said[0][0] == "WARNING" and "WATCHDOG=1" in said[0][1] and path in said[0][1]
    assert said[1][0] == "INFO" and "again" in said[1][1]
