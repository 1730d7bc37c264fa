"""``stdout`` and ``file``: each notification as one JSON line (DESIGN.md's alert line plus ``id``).

``file`` appends to ``path`` and flushes once per group; it opens the file
for each group, so log rotation needs no signal. Its directory must exist:
cgwatch creates no directories for you (a missing one is a config error, and
at send time a retried failure naming the path). Writes are synchronous: a
local append of a few lines.

>>> import asyncio, contextlib, io
>>> from cgwatch.sinks.base import test_notification
>>> out = io.StringIO()
>>> with contextlib.redirect_stdout(out):
...     r = asyncio.run(StdoutSink("out", StdoutConfig()).send([test_notification("h", now=0.0)]))
>>> r.ok, json.loads(out.getvalue())["rule"]
(True, 'cgwatch-test')
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Literal

from pydantic import field_validator

from ..alerts.notification import Notification, SendResult
from .base import BaseSink, SinkConfig


def lines(group: Sequence[Notification]) -> str:
    """The group as JSON Lines (each line ends with a newline)."""
    return "".join(json.dumps(n.to_json(), ensure_ascii=False) + "\n" for n in group)


class StdoutConfig(SinkConfig):
    """``notify.NAME`` for ``type: stdout``."""

    type: Literal["stdout"] = "stdout"


class FileConfig(SinkConfig):
    """``notify.NAME`` for ``type: file``: ``path`` (its directory must exist)."""

    type: Literal["file"] = "file"
    path: str

    @field_validator("path")
    @classmethod
    def _dir_exists(cls, v: str) -> str:
        if not v or v.endswith("/"):
            raise ValueError("must name a file")
        parent = os.path.dirname(os.path.abspath(v))
        if not os.path.isdir(parent):
            raise ValueError(f"directory {parent} does not exist (cgwatch does not create it)")
        return v


class StdoutSink(BaseSink):
    """JSON lines on standard output."""

    Config = StdoutConfig

    async def send(self, group: Sequence[Notification]) -> SendResult:
        """Write and flush the group."""
        try:
            sys.stdout.write(lines(group))
            sys.stdout.flush()
        except (OSError, ValueError) as e:
            return SendResult.retry_later(f"cannot write to stdout: {getattr(e, 'strerror', None) or e}")
        return SendResult.delivered()


class FileSink(BaseSink):
    """JSON lines appended to a file."""

    Config = FileConfig
    config: FileConfig

    def __repr__(self) -> str:
        return f"FileSink(name={self.name!r}, path={self.config.path!r})"

    async def send(self, group: Sequence[Notification]) -> SendResult:
        """Append and flush the group."""
        path = self.config.path
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(lines(group))
                f.flush()
        except OSError as e:
            return SendResult.retry_later(f"cannot write {path}: {e.strerror or e}")
        return SendResult.delivered()

