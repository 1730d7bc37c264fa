"""Reading and reducing: tolerant reading, statistics, downsampling, safe embedding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cgwatch.record import RecordingError, read_recording
from cgwatch.report.html import json_for_script
from cgwatch.report.summary import MAX_POINTS, downsample, summarize


def write(path: Path, lines: list[bytes]) -> str:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


def sample(ts: float, v: float, c: str = "a") -> bytes:
    return json.dumps({"ts": ts, "container": c, "metric": "cpu.usage_cores", "value": v}).encode()


def test_bad_lines_are_skipped_with_reasons_and_replay_still_refuses_them(tmp_path: Path) -> None:
    lines = [sample(1, 1), b"\xff\xfe not utf-8", sample(3, 3), sample(2, 2), b"[1]",
             b'{"ts": 4, "container": "a"}', b"", sample(5, 5), b"{", b"nope"]
    path = write(tmp_path / "r.jsonl", lines)
    r = summarize(path)
    assert r.samples == 3 and r.containers["a"].series["cpu.usage_cores"].stats.max == 5.0
    assert r.skipped.count == 6
    assert [n for n, _ in r.skipped.first] == [2, 4, 5, 6, 9]          # the first 5 of 6
    reasons = dict(r.skipped.first)
    assert reasons[2] == "not UTF-8 text" and "before the previous line" in reasons[4]
    assert reasons[5] == "a line must be a JSON object"
    with pytest.raises(RecordingError, match=r"r.jsonl:\d+: not UTF-8 text"):
        list(read_recording(path))                                    # the default is unchanged


def test_missing_file_still_raises(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="cannot read"):
        summarize(str(tmp_path / "nope.jsonl"))


def test_statistics_ignore_non_finite_values(tmp_path: Path) -> None:
    path = write(tmp_path / "r.jsonl", [sample(1, 1), b'{"ts": 2, "container": "a", "metric": '
                                        b'"cpu.usage_cores", "value": NaN}', sample(3, 3)])
    s = summarize(path).containers["a"].series["cpu.usage_cores"].stats
    assert (s.count, s.mean, s.max, s.first_ts, s.last_ts) == (2, 2.0, 3.0, 1.0, 3.0)


def test_downsampling_keeps_spikes_gaps_and_the_limit() -> None:
    ts = np.arange(3600.0)
    values = np.zeros(3600)
    values[2345] = 100.0
    keep = ts < 1000
    keep[2000:] = True                                                # a 1000 s gap
    x, y, hi = downsample(ts[keep], values[keep])
    assert len(x) == len(y) == len(hi or []) == MAX_POINTS
    assert max(v for v in hi or [] if v is not None) == 100.0         # the spike survives as a maximum
    assert None in y                                                  # the gap stays a gap
    assert x == sorted(x)


def test_embedded_json_cannot_end_the_script() -> None:
    evil = {"name": "</script><script>alert(1)</script>", "s": "\u2028&<!--"}
    text = str(json_for_script(evil))
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == evil
