"""stdout and file sinks, build_sinks and the policy keys, notify_test."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from cgwatch.alerts.notification import Sink, SinkPolicy
from cgwatch.sinks import SINKS, build_sinks, notify_test
from tests.sinks.conftest import Receiver, note, send


def test_stdout_writes_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    sink = build_sinks({"o": {"type": "stdout"}})["o"]
    assert send(sink, [note(1), note(2)]).ok  # type: ignore[arg-type]
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["container"] for r in rows] == ["web-1", "web-2"] and rows[0] == note(1, id=rows[0]["id"]).to_json()


def test_file_appends_one_line_per_notification(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_text('{"old": 1}\n')
    sink = build_sinks({"f": {"type": "file", "path": str(path)}})["f"]
    assert send(sink, [note(1)]).ok and send(sink, [note(2), note(3)]).ok  # type: ignore[arg-type]
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert rows[0] == {"old": 1} and [r["container"] for r in rows[1:]] == ["web-1", "web-2", "web-3"]


def test_file_sink_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        build_sinks({"f": {"type": "file", "path": str(tmp_path / "nope" / "a.jsonl")}})
    (tmp_path / "d").mkdir()
    sink = build_sinks({"f": {"type": "file", "path": str(tmp_path / "d" / "a.jsonl")}})["f"]
    (tmp_path / "d").rmdir()            # removed after the config was accepted
    r = send(sink, [note(1)])  # type: ignore[arg-type]
    assert r.retry and "No such file or directory" in r.error and str(tmp_path / "d" / "a.jsonl") in r.error


def test_common_keys_map_onto_the_policy() -> None:
    sink = build_sinks({"o": {"type": "stdout", "min_severity": "critical", "group_wait": "500ms", "max_group": 5,
                              "rate_limit": 2.5, "repeat": "1h", "max_age": "2d"}})["o"]
    assert sink.policy == SinkPolicy("critical", 0.5, 5, 2.5, 3600.0, 172800.0)
    assert build_sinks({"o": {"type": "stdout"}})["o"].policy == SinkPolicy()


@pytest.mark.parametrize("bad", [{"min_severity": "warn"}, {"group_wait": "soon"}, {"max_group": 0},
                                 {"rate_limit": -1}, {"colour": "red"}])
def test_bad_common_keys_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        build_sinks({"o": {"type": "stdout", **bad}})


def test_every_registered_type_builds_a_sink(tmp_path: Path) -> None:
    extra = {"webhook": {"url": "https://e.com/x"}, "slack": {"url": "https://e.com/x"},
             "alertmanager": {"url": "http://am:9093"}, "file": {"path": str(tmp_path / "a")}}
    sinks = build_sinks({t: {"type": t, **extra.get(t, {})} for t in SINKS})
    assert all(isinstance(s, Sink) for s in sinks.values()) and list(sinks) == list(SINKS)


def test_notify_test_reaches_every_sink(receiver: Receiver, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    sinks = build_sinks({
        "hook": {"type": "webhook", "url": receiver.url(), "min_severity": "critical"},
        "file": {"type": "file", "path": str(path)},
        "dead": {"type": "webhook", "url": "http://127.0.0.1:1/x", "timeout": "2s"},
    })

    async def go() -> list[tuple[str, object]]:
        try:
            return await notify_test(sinks, "node-9")  # type: ignore[return-value]
        finally:
            for s in sinks.values():
                await s.close()

    results = dict(asyncio.run(go()))
    assert results["hook"].ok and results["file"].ok and results["dead"].retry  # type: ignore[attr-defined]
    alert = json.loads(receiver.requests[0].body)["alerts"][0]
    assert alert["rule"] == "cgwatch-test" and alert["severity"] == "info" and "node-9" in alert["summary"]
    assert json.loads(path.read_text())["rule"] == "cgwatch-test"
