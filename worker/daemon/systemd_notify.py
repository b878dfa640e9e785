"""The sd_notify protocol: one datagram of ``KEY=VALUE`` lines to the socket systemd names in
``NOTIFY_SOCKET`` (sd_notify(3)). A path starting with ``/`` is a filesystem socket; one
starting with ``@`` is in the abstract namespace (the ``@`` stands for a leading NUL byte).

Each message goes out on a socket of its own with ``sendto``, as libsystemd's sd_notify does:
nothing stays connected, so systemd re-executing itself (``daemon-reexec``) and binding the path
again costs nothing, and there is no socket to close at the end. A failure is logged once, when
sending starts to fail, and once more when it works again; it is never raised, because the
daemon's work goes on without systemd.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class NotifySocket:
    """The address systemd listens on, and the sending to it."""

    def __init__(self, address: str) -> None:
        self.name = address
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._failing = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> NotifySocket | None:
        """The socket ``NOTIFY_SOCKET`` names; None when it is unset (not started by systemd)
        or names no socket this protocol reaches (logged, as a unit misconfigured)."""
        address = environ.get("NOTIFY_SOCKET", "")
        if not address:
            return None
        if not address.startswith(("/", "@")):
            # vsock: and relative paths are for VMs and other managers: say so, do not guess.
            log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract name: systemd will not "
                        "hear from this daemon", address)
            return None
        return cls(address)

    def send(self, message: str) -> bool:
        """Send one message (lines joined by ``\\n``); True if the kernel took it."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), self.address)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot tell systemd %r through %s: %s (logged once until it works again)",
                            message.split("\n", 1)[0], self.name, exc)
            self._failing = True
            return False
        if self._failing:
            log.info("systemd's notify socket %s answers again", self.name)
        self._failing = False
        return True
