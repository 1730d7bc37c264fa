"""Where the daemon's log lines go: the journal, with fields, under systemd;
stderr otherwise.

systemd connects a service's stderr to the journal and says so in
``$JOURNAL_STREAM`` (``device:inode`` of that stream); when stderr is that
stream, records go to journald directly, with ``PRIORITY`` from the level and
``SYSLOG_IDENTIFIER=cgwatch`` plus the logger name and code location as fields.

>>> under_journal({"JOURNAL_STREAM": "0:0"}, fd=2)
False
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping


def under_journal(env: Mapping[str, str] = os.environ, fd: int = 2) -> bool:
    """Whether ``fd`` is the journal stream systemd gave this process."""
    stream = env.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return st.st_dev == dev and st.st_ino == ino


def setup(verbose: int = 0) -> str:
    """Configure the root logger once; returns ``"journal"`` or ``"stderr"``."""
    level = max(logging.DEBUG, logging.INFO - 10 * verbose)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    where = "stderr"
    handler: logging.Handler
    if under_journal():
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER="cgwatch")
            where = "journal"
        except ImportError:
            handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("cgwatch: %(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    return where
