"""Stored profiles stay within their bound and survive damage; the formats say what a user reads."""

from __future__ import annotations

import gzip
import json
import logging

from cgwatch.model import Container
from cgwatch.profile.formats import folded, speedscope, top_functions
from cgwatch.profile.model import LOST_FRAME, Profile, profile_id, unknown
from cgwatch.profile.store import ProfileStore

WEB = Container(id="ab" * 32, name="web-1", runtime="docker", cgroup="docker/" + "ab" * 32)
DB = Container(id="cd" * 32, name="db-1", runtime="docker")


def profile(c: Container, started: float, stacks: dict | None = None, **kw) -> Profile:
    return Profile(id=profile_id(c.id, started), container=c, started=started, duration_s=10.0, requested_s=10.0,
                   hz=49, stacks=stacks or {("app", "main", f"f{i}"): i + 1 for i in range(200)}, **kw)


def test_the_store_keeps_the_newest_within_its_bound(tmp_path):
    s = ProfileStore(tmp_path / "profiles", max_bytes=1024 * 1024)
    size = s.save(profile(WEB, 1000.0)).bytes
    s.max_bytes = size * 3 + size // 2                  # room for three
    for i in range(1, 6):
        s.save(profile(WEB if i % 2 else DB, 1000.0 + i))
    kept = [i.started for i in s.list()]
    assert kept == [1005.0, 1004.0, 1003.0]              # the oldest went first
    assert s.total_bytes() <= s.max_bytes
    assert [i.container for i in s.list(container_id=DB.id)] == ["db-1"]


def test_a_damaged_profile_file_is_skipped_with_a_warning(tmp_path, caplog):
    s = ProfileStore(tmp_path)
    good = profile(WEB, 2000.0)
    s.save(good)
    bad = s.path(profile_id(WEB.id, 1000.0))
    assert bad is not None
    bad.write_bytes(b"not gzip at all")
    other = s.path(profile_id(WEB.id, 1500.0))
    assert other is not None
    other.write_bytes(gzip.compress(json.dumps({"version": 99}).encode()))
    with caplog.at_level(logging.WARNING, logger="cgwatch.profile"):
        assert [i.id for i in ProfileStore(tmp_path).list(container_id=WEB.id)] == [good.id]
    assert "not a readable profile" in caplog.text
    assert s.load("../../etc/passwd") is None and s.load("x" * 200) is None


def test_top_functions_skip_pass_through_and_unnamed_frames():
    p = profile(WEB, 0.0, {
        ("app", "_start", "__libc_start_main", "main", "parse", "hot_alpha"): 50,
        ("app", "_start", "__libc_start_main", "main", "hot_beta"): 30,
        ("app", "_start", "__libc_start_main", "main", unknown("libjit.so")): 15,
        ("app", LOST_FRAME): 5,
    })
    top = top_functions(p)
    names = [f for f, _ in top]
    assert names == ["main", "hot_alpha", "hot_beta"]       # parse only passes through to hot_alpha
    assert dict(top)["main"] == 0.95 and dict(top)["hot_alpha"] == 0.5
    assert not any(n.startswith("[") for n in names) and "_start" not in names and "app" not in names
    assert top_functions(profile(WEB, 0.0, {("app", "x"): 0})) == []


def test_folded_and_speedscope_carry_every_sample():
    p = profile(WEB, 0.0, {("app", "main", "a;b<c>"): 3, ("app", "main"): 2})
    text = folded(p)
    assert text.splitlines() == ["app;main 2", "app;main;a:b<c> 3"]      # ';' inside a name would split it
    doc = speedscope(p)
    prof = doc["profiles"][0]
    assert sum(prof["weights"]) == 5 and len(prof["samples"]) == 2
    frames = [f["name"] for f in doc["shared"]["frames"]]
    assert [[frames[i] for i in s] for s in prof["samples"]] == [["app", "main"], ["app", "main", "a;b<c>"]]
