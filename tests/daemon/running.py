"""``cgwatch run`` as systemd runs it, for tests: a real process with a notify
socket bound by the test (READY=1, WATCHDOG=1, STATUS=), its log in a file."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

CGWATCH = str(Path(sys.executable).with_name("cgwatch"))
READY_TIMEOUT = 120.0


class NotifySocket:
    """The AF_UNIX datagram socket systemd would give a Type=notify service, read all the time
    as systemd reads it: the kernel queues only 10 datagrams (net.unix.max_dgram_qlen), and
    the daemon drops what does not fit, so a test that stopped reading would miss READY=1."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[dict[str, str]] = []
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="notify-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line))

    def mark(self) -> int:
        """How many messages came so far: ``wait_for(..., since=mark())`` looks only at later ones."""
        return len(self.messages)

    def wait_for(self, pred, timeout: float, since: int = 0) -> dict[str, str] | None:  # type: ignore[no-untyped-def]
        """The first message from the ``since``-th on that ``pred`` accepts; None after ``timeout``."""
        end = time.monotonic() + timeout
        seen = since
        while True:
            new = self.messages[seen:]
            for m in new:
                if pred(m):
                    return m
            seen += len(new)
            if time.monotonic() >= end:
                return None
            time.sleep(0.05)

    def close(self) -> None:
        self._closed = True
        self._reader.join(1.0)
        self.sock.close()


class Daemon:
    """``cgwatch run --config config`` (behind ``prefix``, e.g. ``ip netns exec NS``), its log in ``tmp``."""

    def __init__(self, tmp: Path, config: Path, prefix: tuple[str, ...] = ()) -> None:
        self.tmp, self.config = tmp, config
        self.notify = NotifySocket(tmp / f"notify-{secrets.token_hex(3)}.sock")
        self.log = open(tmp / "daemon.log", "ab")   # noqa: SIM115 - closed in stop()
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), "WATCHDOG_USEC": "2000000",
               "WATCHDOG_PID": ""}
        self.proc = subprocess.Popen([*prefix, CGWATCH, "run", "--config", str(config)], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def ready(self) -> float:
        t0 = time.monotonic()
        got = self.notify.wait_for(lambda m: m.get("READY") == "1", READY_TIMEOUT)
        assert got is not None, f"no READY=1; log:\n{self.log_text()}"
        return time.monotonic() - t0

    def log_text(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.tmp / "daemon.log").read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        self.notify.close()
        self.log.close()
        return self.proc.returncode


def healthy(port: int, within: float) -> bool:
    """/healthz answers 200 within ``within`` seconds (it says "starting" until the first interval)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False
