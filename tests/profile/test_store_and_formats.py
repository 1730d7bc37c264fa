"""Stored profiles stay within their bound and survive damage; the formats say what a user reads."""

from __future__ import annotations

import gzip
import json
import logging

from cgwatch.model import Container
from cgwatch.profile.formats import flame_tree, folded, speedscope, top_functions, top_json, top_text
from cgwatch.profile.model import KERNEL_SUFFIX, LOST_FRAME, Profile, profile_id, unknown
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


def test_top_functions_skip_pass_through_and_nameless_frames():
    p = profile(WEB, 0.0, {
        ("app", "_start", "__libc_start_main", "main", "parse", "hot_alpha"): 50,
        ("app", "_start", "__libc_start_main", "main", "hot_beta"): 30,
        ("app", "_start", "__libc_start_main", "main", unknown()): 10,
        ("app", "_start", "__libc_start_main", "main", unknown("libjit.so")): 4,
        ("app", "main", "read", unknown() + KERNEL_SUFFIX): 1,
        ("app", LOST_FRAME): 4,
        ("app", "main", LOST_FRAME + KERNEL_SUFFIX): 1,
    })
    top = top_functions(p, n=10)
    names = [f for f, _ in top]
    # parse only passes through to hot_alpha; no name and no module: never listed; a module alone: listed;
    # read passes all its samples to a nameless frame: it is the last name known for them, so it stays
    assert names == ["main", "hot_alpha", "hot_beta", "[libjit.so]", "read"]
    assert dict(top)["main"] == 0.96 and dict(top)["hot_alpha"] == 0.5 and dict(top)["[libjit.so]"] == 0.04
    assert "_start" not in names and "__libc_start_main" not in names and "app" not in names
    assert top_functions(profile(WEB, 0.0, {("app", "x"): 0})) == []


def test_a_container_busy_in_a_stripped_binary_is_summarised_as_that_binary():
    """The issue's case: a static, stripped busybox at 97%, a little kernel time that could be named."""
    bb = unknown("busybox")
    p = profile(WEB, 0.0, {
        ("sh", bb, bb, bb): 60,
        ("sh", bb, bb): 25,
        ("sh", bb): 12,
        ("sh", bb, "entry_SYSCALL_64_[k]", "vfs_read_[k]"): 1,
        ("sh", "[vdso]"): 1,
        ("sh", unknown()): 1,
    })
    top = top_functions(p)
    assert top[0] == ("[busybox]", 0.98), top               # counted once per sample, however deep
    assert [f for f, _ in top] == ["[busybox]", "vfs_read_[k]", "[vdso]"]   # entry_SYSCALL_64 passes through
    assert top_json(top)[0] == {"function": "[busybox]", "share": 0.98}
    assert top_text(top).splitlines()[0] == " 98%  [busybox]"
    # the folded stacks and the flame graph carry the same name, so its samples add up there too
    assert "sh;[busybox];[busybox];[busybox] 60" in folded(p).splitlines()
    [sh] = flame_tree(p)["children"]
    assert {c["name"]: c["value"] for c in sh["children"]} == {"[busybox]": 98, "[vdso]": 1, "[unknown]": 1}


def test_a_module_counts_where_the_cpu_was_in_it_not_where_it_called_named_code():
    """Debian's libc has no symbol for __libc_start_call_main: [libc.so.6] is at the root of every stack
    of every dynamically linked program, and must not top every list."""
    p = profile(WEB, 0.0, {("hotprog", "[libc.so.6]", "hot_alpha"): 68, ("hotprog", "[libc.so.6]", "hot_beta"): 32})
    assert [f for f, _ in top_functions(p)] == ["hot_alpha", "hot_beta"]
    # a stripped program: credited where it is the innermost user frame, once however deep its tower
    app, libc = unknown("app"), unknown("libc.so.6")
    p = profile(WEB, 0.0, {
        ("app", app, libc, app, app): 60,
        ("app", app, libc, app, "memcpy"): 30,
        ("app", app, libc, app, "entry_SYSCALL_64_[k]", unknown("kernel") + KERNEL_SUFFIX): 10,
    })
    assert [(f, round(s, 2)) for f, s in top_functions(p)] == [("[app]", 0.7), ("memcpy", 0.3), ("[kernel]_[k]", 0.1)]
    # profiles stored before frames were named [module] still name the module in their top functions
    old = profile(WEB, 0.0, {("sh", "[unknown] (busybox)", "[unknown] (busybox)"): 9, ("sh", "[unknown]"): 1})
    assert top_functions(old) == [("[unknown] (busybox)", 0.9)]


def test_a_kernel_nothing_could_name_is_still_the_kernel():
    """Without kallsyms' addresses kernel frames are [kernel]_[k]: time in the kernel, shown as such."""
    k = unknown("kernel") + KERNEL_SUFFIX
    p = profile(WEB, 0.0, {("app", "main", "write", k, k): 7, ("app", "main", "compute"): 3})
    assert [f for f, _ in top_functions(p)] == ["main", "[kernel]_[k]", "compute"]   # write passes through


def test_folded_and_speedscope_carry_every_sample():
    p = profile(WEB, 0.0, {("app", "main", "a;b<c>"): 3, ("app", "main"): 2})
    text = folded(p)
    assert text.splitlines() == ["app;main 2", "app;main;a:b<c> 3"]      # ';' inside a name would split it
    doc = speedscope(p)
    prof = doc["profiles"][0]
    assert sum(prof["weights"]) == 5 and len(prof["samples"]) == 2
    frames = [f["name"] for f in doc["shared"]["frames"]]
    assert [[frames[i] for i in s] for s in prof["samples"]] == [["app", "main"], ["app", "main", "a;b<c>"]]
