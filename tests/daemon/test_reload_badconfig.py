"""``Daemon.reload`` without the kernel: a broken config file, or a bug while reloading, is one
logged line and the old config and rules run on (issue 15: SIGHUP with ``type: [webhook]``
ended the daemon with a traceback)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from cgwatch.alerts.state import AlertManager
from cgwatch.alerts.store import Store
from cgwatch.config import load_config
from cgwatch.daemon import service
from cgwatch.daemon.pipeline import Pipeline
from cgwatch.daemon.sdnotify import Notifier
from cgwatch.daemon.service import Daemon, load_rules_or_fail
from cgwatch.rules.engine import Engine
from cgwatch.sinks import build_sinks

RULES = "rules:\n  - {name: hot, expr: cpu.usage_cores > 1, severity: warning}\n"
GOOD = "interval: 1s\nrules: [r.yaml]\nstate_dir: state\nnotify: {out: {type: stdout}}\n"


class Notes(Notifier):
    """What the daemon tells systemd, kept."""

    def __init__(self) -> None:
        super().__init__(None)
        self.sent: list[dict[str, Any]] = []

    def send(self, **fields: object) -> bool:
        self.sent.append(fields)
        return True


def started(tmp_path: Path) -> Daemon:
    """A Daemon as ``_start`` leaves it, minus the probes, the web server and delivery."""
    (tmp_path / "r.yaml").write_text(RULES)
    (tmp_path / "config.yaml").write_text(GOOD)
    d = Daemon(str(tmp_path / "config.yaml"), notifier=Notes())
    d.cfg = load_config(d.config_path)
    rules = load_rules_or_fail(d.cfg.rules)
    d.store = Store.open(tmp_path / "state")
    manager = AlertManager(d.store, build_sinks(d.cfg.notify), {r.name: r for r in rules}, host="h")
    d.pipeline = Pipeline(Engine(rules), manager, d.cfg.interval)
    return d


def reload(d: Daemon) -> bool:
    return asyncio.run(d.reload())


def kept(d: Daemon, cfg: Any, engine: Engine, caplog: pytest.LogCaptureFixture, message: str) -> None:
    """The reload failed in one logged line containing ``message``; nothing changed."""
    assert d.cfg is cfg and d.pipeline is not None and d.pipeline.engine is engine
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert errors[0].startswith("reload failed, the old config and rules stay: ") and message in errors[0], errors
    c = d.pipeline.counters
    assert not c.reload_ok and message in c.reload_error and "\n" not in c.reload_error
    assert "last reload FAILED, old config kept" in d.notifier.sent[-1]["STATUS"]   # type: ignore[attr-defined]


@pytest.mark.parametrize(("text", "message"), [
    ("notify: {hook: {type: [webhook], url: 'http://127.0.0.1:9/x'}}\n",
     "config.yaml:1:23: notify.hook.type: must be one of journald, webhook"),
    ("notify: {hook: {type: webhook, url_file: /dev/zero}}\n",
     "config.yaml:1:42: notify.hook.url_file: /dev/zero is a character device, not a regular file"),
    ("rules: [r.yaml]\nnotify: {out: {type: stdout}}\ninterval: [1s]\n", "config.yaml:3:11: interval"),
])
def test_a_broken_config_on_reload_keeps_the_old_one(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                     text: str, message: str) -> None:
    d = started(tmp_path)
    assert d.pipeline is not None
    cfg, engine = d.cfg, d.pipeline.engine
    (tmp_path / "config.yaml").write_text(text)
    with caplog.at_level(logging.INFO, logger="cgwatch"):
        assert reload(d) is False
    kept(d, cfg, engine, caplog, message)
    (tmp_path / "config.yaml").write_text(GOOD)          # mended: the next reload works
    (tmp_path / "r.yaml").write_text(RULES.replace("> 1", "> 2"))
    assert reload(d) is True and d.pipeline.counters.reload_ok and d.pipeline.engine is not engine


@pytest.mark.parametrize("where", ["load_config", "build_sinks", "replace_rules"])
def test_a_bug_during_reload_is_one_line_and_the_old_config_runs_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    d = started(tmp_path)
    assert d.pipeline is not None
    cfg, engine = d.cfg, d.pipeline.engine
    (tmp_path / "config.yaml").write_text(GOOD.replace("stdout", "journald"))    # new sinks: build_sinks runs

    def boom(*args: object, **kwargs: object) -> Any:
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(d.pipeline if where == "replace_rules" else service, where, boom)
    with caplog.at_level(logging.INFO, logger="cgwatch"):
        assert reload(d) is False
    kept(d, cfg, engine, caplog, "unexpected RuntimeError")
    assert "a bug over two lines" in d.pipeline.counters.reload_error
