"""systemd's notify protocol, spoken directly: ``READY=1``, ``STATUS=``, ``WATCHDOG=1``.

A datagram of ``KEY=value`` lines to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). Outside
systemd there is no socket and every call is a no-op, so the daemon runs the
same in a terminal.

Examples
--------
>>> n = Notifier(None)
>>> n.enabled, n.send(READY=1)
(False, False)
>>> watchdog_interval({"WATCHDOG_USEC": "30000000"}, pid=7)
15.0
>>> watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, pid=7) is None
True
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("cgwatch")


class Notifier:
    """Sends notify messages to systemd (or nowhere, outside it)."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._sock: socket.socket | None = None
        self._warned = False
        self.dropped = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Notifier:
        """The notifier ``$NOTIFY_SOCKET`` asks for."""
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines; True if the datagram went out. Never raises."""
        if self.address is None:
            return False
        text = "\n".join(f"{k}={' '.join(str(v).split())}" for k, v in fields.items())
        addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                # non-blocking: a supervisor that stops reading must never stall the daemon
                self._sock = socket.socket(socket.AF_UNIX,
                                           socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            self._sock.sendto(text.encode(), addr)
            return True
        except BlockingIOError:
            self.dropped += 1      # the reader is behind: this STATUS/WATCHDOG is lost, the next one may pass
            return False
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %s: %s", self.address, e)
            return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(env: Mapping[str, str] = os.environ, pid: int | None = None) -> float | None:
    """How often to send ``WATCHDOG=1`` (half of ``$WATCHDOG_USEC``), or None when
    systemd set no watchdog for this process."""
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    try:
        seconds = int(usec) / 1e6
    except ValueError:
        return None
    return seconds / 2 if seconds > 0 else None
