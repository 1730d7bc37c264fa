"""``cgwatch run`` as systemd runs it, for tests: a real process with a notify
socket bound by the test (READY=1, WATCHDOG=1, STATUS=), its log in a file."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CGWATCH = str(Path(sys.executable).with_name("cgwatch"))
READY_TIMEOUT = 120.0


class NotifySocket:
    """The AF_UNIX datagram socket systemd would give a Type=notify service."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[dict[str, str]] = []

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                return
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line))

    def wait_for(self, pred, timeout: float) -> dict[str, str] | None:  # type: ignore[no-untyped-def]
        end = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < end:
            self._drain()
            for m in self.messages[seen:]:
                if pred(m):
                    return m
            seen = len(self.messages)
        return None

    def close(self) -> None:
        self.sock.close()


class Daemon:
    def __init__(self, tmp: Path, config: Path) -> None:
        self.tmp, self.config = tmp, config
        self.notify = NotifySocket(tmp / f"notify-{secrets.token_hex(3)}.sock")
        self.log = open(tmp / "daemon.log", "ab")   # noqa: SIM115 - closed in stop()
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), "WATCHDOG_USEC": "2000000",
               "WATCHDOG_PID": ""}
        self.proc = subprocess.Popen([CGWATCH, "run", "--config", str(config)], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

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
