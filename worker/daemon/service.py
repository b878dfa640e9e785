"""Talking to systemd through sd_notify (the protocol is ``systemd_notify``): ready, reloading,
stopping, a status line, and the watchdog. The daemon's loop calls ``alive()`` each turn, so a
loop that is stuck stops the pings and systemd restarts it (``WatchdogSec=`` in the unit).
Without ``NOTIFY_SOCKET`` (not under systemd) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping

from worker.daemon.systemd_notify import NotifySocket

log = logging.getLogger(__name__)

# How often the status line may change: often enough to follow, rarely enough to cost nothing.
STATUS_SECONDS = 1.0


class ServiceNotifier:
    def __init__(self, environ: Mapping[str, str] = os.environ,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._notifier = NotifySocket.from_environ(environ)
        self.watchdog_interval = _watchdog_interval(environ)
        self._last_ping = self._last_status = float("-inf")

    def ready(self) -> None:
        self._send("READY=1")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match the reload; older ignore it.
        self._send(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def alive(self, status: Callable[[], str] | None = None) -> None:
        """The loop turned: ping the watchdog when half its interval has passed, and refresh
        the status line (``status`` is only called when it is due)."""
        now = self.clock()
        if self.watchdog_interval is not None and now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self._send("WATCHDOG=1")
        if status is not None and self._notifier is not None and now - self._last_status >= STATUS_SECONDS:
            self._last_status = now
            self._send(f"STATUS={status()}")

    def _send(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.send(message)


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half of ``WATCHDOG_USEC``, if the watchdog is meant for this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
