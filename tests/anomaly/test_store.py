"""Baselines on disk: round trip, atomic writes, hostile and old files, limits, timing."""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import stat
from pathlib import Path

import pytest

from cgwatch.anomaly import store
from cgwatch.anomaly.baselines import Baselines, ModelSpec
from cgwatch.anomaly.models import SCALAR_KINDS
from cgwatch.anomaly.store import FORMAT_VERSION, LoadResult, Saver, load, save

KEYS = [(f"rule-{kind}", f"ctr-{i}", "cpu.usage_cores") for kind in sorted(SCALAR_KINDS) for i in range(2)]


def series(n: int, seed: int, start: int = 0) -> list[tuple[float, float]]:
    r = random.Random(seed)
    return [(float(t), 10.0 + 3.0 * (t % 7 == 0) + r.gauss(0.0, 1.0)) for t in range(start, start + n)]


def trained(now: float = 1000.0) -> Baselines:
    """Two models of every kind, trained on different noise, used at different times."""
    b = Baselines()
    for i, key in enumerate(KEYS):
        model = b.get(key, ModelSpec(key[0].removeprefix("rule-"), warmup=20), now=now - 100 + i)
        for ts, v in series(400, seed=i):
            model.update(ts, v)
    return b


def read_doc(path: Path) -> dict:
    return json.loads(gzip.decompress(path.read_bytes()))


def write_doc(path: Path, doc: object) -> None:
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "baselines.json.gz"


def test_round_trip_gives_same_scores(path: Path) -> None:
    b = trained()
    assert save(b, path, now=1000.0) == len(KEYS)
    fresh = Baselines()
    r = load(path, fresh, now=1000.0)
    assert (r.loaded, r.skipped_bad, r.skipped_old, r.warnings) == (len(KEYS), 0, 0, [])
    assert sorted(fresh.keys()) == sorted(KEYS)
    kinds_seen = set()
    for i, key in enumerate(KEYS):
        orig, back = b.peek(key), fresh.peek(key)
        assert orig is not None and back is not None and back is not orig
        kinds_seen.add(back.detector.kind)
        nxt = series(200, seed=100 + i, start=400) + [(600.0, 80.0), (601.0, 10.0)]
        out_orig = [orig.update(ts, v) for ts, v in nxt]
        out_back = [back.update(ts, v) for ts, v in nxt]
        assert out_back == out_orig
        assert any(s is not None for s, _ in out_orig)
    assert kinds_seen == set(SCALAR_KINDS)


def test_header_and_last_use_kept_in_order(path: Path) -> None:
    b = trained(now=1000.0)
    save(b, path, now=1000.0)
    doc = read_doc(path)
    assert doc["format_version"] == FORMAT_VERSION
    assert doc["written_at"] == 1000.0
    assert {"cgwatch", "river"} <= set(doc)
    assert [tuple(m["key"]) for m in doc["models"]] == KEYS
    fresh = Baselines(idle_evict_s=50.0)
    load(path, fresh, now=1000.0)
    assert list(fresh.keys()) == KEYS  # least recently used first, as saved
    # the first model was last used at 900 and the idle limit is 50 s: it is idle
    assert fresh.evict_idle(now=1000.0) > 0


def test_downtime_does_not_count_as_idle(path: Path) -> None:
    b = Baselines(idle_evict_s=3600.0)
    b.get(("r", "web", "m"), ModelSpec(), now=900.0)
    save(b, path, now=1000.0)
    fresh = Baselines(idle_evict_s=3600.0)
    load(path, fresh, now=1000.0 + 86400.0)  # a day later
    assert fresh.evict_idle(now=1000.0 + 86400.0) == 0
    assert fresh.evict_idle(now=1000.0 + 86400.0 + 3600.0) == 1


def test_empty_baselines_round_trip(path: Path) -> None:
    assert save(Baselines(), path, now=1.0) == 0
    r = load(path, Baselines(), now=2.0)
    assert (r.loaded, r.warnings) == (0, [])


def test_file_mode_0600(path: Path) -> None:
    save(trained(), path, now=1.0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    os.chmod(path, 0o644)  # an old, looser file is replaced with a 0600 one
    save(trained(), path, now=2.0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_failed_replace_leaves_old_file_and_no_temp(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = trained()
    save(b, path, now=1.0)
    before = path.read_bytes()

    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.os, "replace", crash)
    b.get(("r", "new", "m"), ModelSpec(), now=2.0)
    with pytest.raises(OSError):
        save(b, path, now=2.0)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    monkeypatch.undo()
    assert load(path, Baselines(), now=3.0).loaded == len(KEYS)


def test_failed_write_leaves_old_file_and_no_temp(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = trained()
    save(b, path, now=1.0)
    before = path.read_bytes()
    monkeypatch.setattr(store.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        save(b, path, now=2.0)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_stale_temp_files_cleaned_on_save(path: Path) -> None:
    path.parent.mkdir(parents=True)
    stale = path.parent / f".{path.name}.abc123.tmp"
    stale.write_bytes(b"half a file")
    other = path.parent / "unrelated.tmp"
    other.write_bytes(b"not ours")
    save(Baselines(), path, now=1.0)
    assert not stale.exists() and other.exists()


def test_missing_file_is_quiet(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cgwatch.anomaly"):
        r = load(path, Baselines(), now=0.0)
    assert r == LoadResult()
    assert caplog.records == []


def _truncated(path: Path) -> None:
    save(trained(), path, now=1.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random_bytes(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(7).randbytes(4096))


def _random_gzip(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x1f\x8b" + random.Random(8).randbytes(4096))


def _gzip_not_json(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(b"{\"format\": \"cgwatch-baselines\", "))


def _gzip_binary(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(bytes(range(256))))


def _json_list(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_doc(path, [1, 2, 3])


def _json_wrong_shape(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_doc(path, {"format": "cgwatch-baselines", "format_version": 1, "written_at": 1.0, "models": {"a": 1}})


def _json_other_format(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_doc(path, {"hello": "world"})


def _version(v: object):
    def make(path: Path) -> None:
        save(trained(), path, now=1.0)
        doc = read_doc(path)
        doc["format_version"] = v
        write_doc(path, doc)

    return make


def _deep(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(b"[" * 100_000 + b"]" * 100_000))


def _nan_constant(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(b'{"format": "cgwatch-baselines", "format_version": 1, "written_at": NaN, '
                                   b'"models": []}'))


def _a_directory(path: Path) -> None:
    path.mkdir(parents=True)


CORRUPT = {
    "truncated gzip": (_truncated, "gzip"),
    "random bytes": (_random_bytes, "not a gzip file"),
    "random after gzip magic": (_random_gzip, "gzip"),
    "gzip of half a JSON": (_gzip_not_json, "not JSON"),
    "gzip of binary": (_gzip_binary, "not"),
    "JSON list": (_json_list, "wrong shape"),
    "models not a list": (_json_wrong_shape, "wrong shape"),
    "other JSON": (_json_other_format, "wrong shape"),
    "version 999": (_version(999), "newer"),
    "version 0": (_version(0), "older"),
    "version string": (_version("1"), "wrong shape"),
    "deeply nested": (_deep, "not JSON"),
    "NaN constant": (_nan_constant, "not JSON"),
    "a directory": (_a_directory, "IsADirectoryError"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_file_warns_once_and_loads_nothing(path: Path, case: str, caplog: pytest.LogCaptureFixture) -> None:
    make, problem = CORRUPT[case]
    make(path)
    b = Baselines()
    with caplog.at_level(logging.WARNING, logger="cgwatch.anomaly"):
        r = load(path, b, now=10.0)
    assert r.loaded == 0 and len(b) == 0
    assert len(r.warnings) == 1, r.warnings
    assert str(path) in r.warnings[0] and problem in r.warnings[0], r.warnings[0]
    assert [rec.getMessage() for rec in caplog.records] == r.warnings


def test_size_cap(path: Path) -> None:
    save(trained(), path, now=1.0)
    size = len(gzip.decompress(path.read_bytes()))
    r = load(path, Baselines(), now=2.0, max_bytes=size - 1)
    assert r.loaded == 0 and "bytes decompressed" in r.warnings[0]
    assert load(path, Baselines(), now=2.0, max_bytes=size).loaded == len(KEYS)


def test_gzip_bomb_stops_at_cap(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wb") as f:
        for _ in range(64):
            f.write(b" " * (1 << 20))  # 64 MiB of spaces, about 64 KiB compressed
    r = load(path, Baselines(), now=1.0, max_bytes=1 << 20)
    assert r.loaded == 0 and "bytes decompressed" in r.warnings[0]


def test_one_bad_entry_among_good_ones(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    save(trained(), path, now=1000.0)
    doc = read_doc(path)
    doc["models"][0]["state"]["scores"]["counts"] = [1.0]  # malformed
    write_doc(path, doc)
    b = Baselines()
    with caplog.at_level(logging.WARNING, logger="cgwatch.anomaly"):
        r = load(path, b, now=1000.0)
    assert (r.loaded, r.skipped_bad, r.skipped_old) == (len(KEYS) - 1, 1, 0)
    assert len(r.warnings) == 1 and f"1 of {len(KEYS)} models not loaded" in r.warnings[0]
    assert tuple(doc["models"][0]["key"]) not in set(b.keys())
    assert len(caplog.records) == 1


def test_hst_state_from_another_river_is_old(path: Path) -> None:
    save(trained(), path, now=1000.0)
    doc = read_doc(path)
    hst = [m for m in doc["models"] if m["state"]["detector"]["kind"] == "hst"]
    assert len(hst) == 2
    hst[0]["state"]["detector"]["data"]["river"] = "0.0.1"
    doc["models"][-1]["state"]["detector"]["version"] = 0  # an older detector state version
    write_doc(path, doc)
    b = Baselines()
    r = load(path, b, now=1000.0)
    assert (r.loaded, r.skipped_old, r.skipped_bad) == (len(KEYS) - 2, 2, 0)
    assert len(r.warnings) == 1 and "another detector or River version" in r.warnings[0]
    assert tuple(hst[0]["key"]) not in set(b.keys())


@pytest.mark.parametrize(
    "entry",
    [
        "not a dict",
        {"key": ["r", "c"], "last_used": 1.0, "state": {}},
        {"key": ["r", "c", 3], "last_used": 1.0, "state": {}},
        {"key": ["r", "c", "m"], "last_used": "yesterday", "state": {}},
        {"key": ["r", "c", "m"], "last_used": 1.0},
        {"key": ["r", "c", "m"], "last_used": 1.0, "state": {"kind": "thresholder", "version": 1, "params": 5}},
        {"key": ["r", "c", "m"], "last_used": 1.0, "state": {"kind": "thresholder", "version": 1, "params": {},
                                                            "detector": {"kind": "mad", "version": 1}}},
        {"key": ["r", "c", "m"], "last_used": 1.0, "state": {"kind": "pickle", "data": "gASVAAAAAAAAAAAu"}},
    ],
)
def test_malformed_entries_skipped(path: Path, entry: object) -> None:
    save(trained(), path, now=1000.0)
    doc = read_doc(path)
    doc["models"].append(entry)
    write_doc(path, doc)
    r = load(path, Baselines(), now=1000.0)
    assert (r.loaded, r.skipped_bad + r.skipped_old, len(r.warnings)) == (len(KEYS), 1, 1)


def test_max_models_keeps_most_recently_used(path: Path) -> None:
    save(trained(), path, now=1000.0)
    b = Baselines(max_models=3)
    r = load(path, b, now=1000.0)
    assert (r.loaded, r.dropped, r.warnings) == (3, len(KEYS) - 3, [])
    assert list(b.keys()) == KEYS[-3:]


def test_bad_entries_do_not_take_room(path: Path) -> None:
    save(trained(), path, now=1000.0)
    doc = read_doc(path)
    doc["models"][-1]["state"]["scored"] = -1  # the most recent one is bad
    write_doc(path, doc)
    b = Baselines(max_models=3)
    r = load(path, b, now=1000.0)
    assert (r.loaded, r.skipped_bad, r.dropped) == (3, 1, len(KEYS) - 4)
    assert list(b.keys()) == KEYS[-4:-1]


def test_live_models_kept_and_counted_against_max(path: Path) -> None:
    save(trained(), path, now=1000.0)
    b = Baselines(max_models=3)
    live = b.get(KEYS[-1], ModelSpec(), now=1001.0)
    r = load(path, b, now=1001.0)
    assert len(b) == 3 and r.loaded == 2
    assert b.peek(KEYS[-1]) is live


def test_duplicate_keys_keep_latest(path: Path) -> None:
    b = Baselines()
    m = b.get(("r", "c", "m"), ModelSpec("mad"), now=5.0)
    for t in range(50):
        m.update(float(t), 1.0)
    save(b, path, now=10.0)
    doc = read_doc(path)
    older = json.loads(json.dumps(doc["models"][0]))
    older["last_used"] = 1.0
    older["state"]["scored"] = 0
    doc["models"].insert(0, older)
    doc["models"].append(older)
    write_doc(path, doc)
    fresh = Baselines()
    assert load(path, fresh, now=10.0).loaded == 1
    assert fresh.peek(("r", "c", "m")).scored == m.scored


def test_no_pickle_in_store() -> None:
    src = Path(store.__file__).read_text()
    assert "pickle" not in src.replace("no pickle", "")


def test_saver_timing(path: Path) -> None:
    b = trained()
    s = Saver(path, every_s=300.0)
    assert not s.maybe_save(b, now=0.0)  # starts the clock
    assert not path.exists()
    assert not s.maybe_save(b, now=299.0)
    assert s.maybe_save(b, now=300.0) and path.exists() and s.last_count == len(KEYS)
    assert not s.maybe_save(b, now=450.0)
    assert s.maybe_save(b, now=601.0)
    assert not s.maybe_save(b, now=100.0)  # the clock went back: restart the period
    assert not s.maybe_save(b, now=399.0)
    assert s.maybe_save(b, now=400.0)
    assert s.save(b, now=401.0)  # at shutdown, whatever the period
    assert read_doc(path)["written_at"] == 401.0


def test_saver_failure_is_logged_not_raised(path: Path, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    s = Saver(path, every_s=10.0)
    s.maybe_save(Baselines(), now=0.0)

    def crash(src: object, dst: object) -> None:
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(store.os, "replace", crash)
    with caplog.at_level(logging.WARNING, logger="cgwatch.anomaly"):
        assert not s.maybe_save(Baselines(), now=10.0)
    assert s.failures == 1 and "not saved" in caplog.text
    assert not s.maybe_save(Baselines(), now=15.0)  # tried again a period later, not every tick
    monkeypatch.undo()
    assert s.maybe_save(Baselines(), now=20.0) and path.exists()
