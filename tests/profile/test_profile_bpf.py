"""Real profiles of real processes in docker-named cgroups, through the kernel's perf events.

A C program built here spends about 70% of its time in ``hot_alpha`` and 30%
in ``hot_beta``; ``cgwatch profile`` must name both, in that order, within 10
points of the truth, and nothing of a busy neighbour in another cgroup.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cgwatch.identity.cgroups import find_cgroup2_root
from cgwatch.model import Container
from cgwatch.profile.formats import top_functions
from cgwatch.profile.model import LOST_FRAME, Profile
from cgwatch.profile.profiler import Profiler

pytestmark = pytest.mark.bpf

HOT = r"""
#include <stdint.h>
volatile uint64_t sink;
/* the same register-only loop (a multiply-add chain), 7 and 3 million times: 70% / 30% of the time */
__attribute__((noinline)) void hot_alpha(void) {
    uint64_t x = sink; for (uint64_t i = 0; i < 7000000; i++) x = x * 6364136223846793005ULL + i; sink = x;
}
__attribute__((noinline)) void hot_beta(void) {
    uint64_t x = sink; for (uint64_t i = 0; i < 3000000; i++) x = x * 6364136223846793005ULL + i; sink = x;
}
int main(void) { for (;;) { hot_alpha(); hot_beta(); } }
"""

OTHER = r"""
#include <stdint.h>
static volatile uint64_t sink;
__attribute__((noinline)) void neighbour_spin(void) { for (uint64_t i = 0; i < 1000000; i++) sink += i; }
int main(void) { for (;;) neighbour_spin(); }
"""


def cc(tmp: Path, name: str, src: str) -> Path:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is missing (make setup-test installs it)")
    c = tmp / f"{name}.c"
    c.write_text(src)
    out = tmp / name
    subprocess.run(["gcc", "-O1", "-fno-omit-frame-pointer", "-o", str(out), str(c)], check=True)
    return out


def cid() -> str:
    return secrets.token_hex(32)


def cgwatch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cgwatch", *args], capture_output=True, text=True, timeout=timeout)


def shares(folded: str) -> dict[str, float]:
    """Inclusive share of every frame in folded stacks."""
    total = 0
    count: dict[str, int] = {}
    for line in folded.splitlines():
        stack, _, n = line.rpartition(" ")
        total += int(n)
        for f in set(stack.split(";")):
            count[f] = count.get(f, 0) + int(n)
    return {f: c / total for f, c in count.items()}


def test_a_profile_names_the_hot_functions_in_order_and_nothing_of_the_neighbours(tmp_path, cgroups):
    hot, other = cc(tmp_path, "hotprog", HOT), cc(tmp_path, "neighbour", OTHER)
    one, two = cid(), cid()
    cgroups(f"docker/{one}").run([str(hot)])
    cgroups(f"system.slice/docker-{two}.scope").run([str(other)])
    out = tmp_path / "p.folded"
    r = cgwatch("profile", one[:12], "--duration", "4s", "--hz", "99", "--output", str(out))
    assert r.returncode == 0, r.stderr
    s = shares(out.read_text())
    assert abs(s["hot_alpha"] - 0.7) < 0.10, s
    assert abs(s["hot_beta"] - 0.3) < 0.10, s
    assert "neighbour_spin" not in s and "neighbour" not in s
    assert sum(1 for _ in out.read_text().splitlines()) >= 2
    # the top functions (stderr) list hot_alpha before hot_beta, and main's trunk is not in the way
    lines = [ln for ln in r.stderr.splitlines() if "%" in ln]
    names = [ln.split()[-1] for ln in lines]
    assert names.index("hot_alpha") < names.index("hot_beta"), r.stderr
    assert "_start" not in names


def test_every_output_format_and_container_lookup(tmp_path, cgroups):
    hot = cc(tmp_path, "hotprog", HOT)
    one = cid()
    c = cgroups(f"docker/{one}")
    c.run([str(hot)])
    r = cgwatch("profile", one, "--duration", "1s", "--output", str(tmp_path / "p.json"))
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "p.json").read_text())
    names = {f["name"] for f in doc["shared"]["frames"]}
    assert {"hot_alpha", "hotprog"} <= names and doc["profiles"][0]["type"] == "sampled"
    for name, bad in (("nosuch", "no container"), (one[:3] + "zz", "no container")):
        r = cgwatch("profile", name, "--duration", "1s")
        assert r.returncode == 2 and bad in r.stderr and "Traceback" not in r.stderr
    r = cgwatch("profile", one[:12], "--output", str(tmp_path / "p.png"))
    assert r.returncode == 2 and "unknown profile format '.png'" in r.stderr


def test_a_container_that_exits_mid_profile_gives_a_partial_profile_with_names(tmp_path, cgroups):
    hot = cc(tmp_path, "hotprog", HOT)
    one = cid()
    c = cgroups(f"docker/{one}")
    p = c.run([str(hot)])
    root = find_cgroup2_root()
    assert root is not None
    prof = Profiler(None, root, hz=99)
    assert prof.load(), prof.unavailable
    try:
        box = Container(id=one, name="short-lived", runtime="docker", cgroup=f"docker/{one}")
        assert prof.start(box, 30.0)
        t0 = time.monotonic()
        done: list = []
        while not done and time.monotonic() - t0 < 20:
            done = prof.poll()
            if time.monotonic() - t0 > 2 and p.poll() is None:
                c.stop()                    # the processes go, then the cgroup
            time.sleep(0.5)
        [d] = done
    finally:
        prof.close()
    profile: Profile = d.profile
    assert profile.partial.startswith("the container exited"), profile.partial
    assert 1.5 < profile.duration_s < 10
    top = dict(top_functions(profile))
    assert "hot_alpha" in top, top               # named although the process is gone
    assert os.path.exists(hot)


def test_a_full_stack_map_is_counted_and_shown_not_fatal(tmp_path, cgroups):
    """With room for two stacks, a Python process (many distinct native stacks) overflows the map:
    the samples still count, under '[lost stack]', and the profile says how many lost their stack."""
    one = cid()
    c = cgroups(f"docker/{one}")
    c.run(["python3", "-c", "import json, random\nwhile True: json.dumps([random.random() for _ in range(50)])"])
    root = find_cgroup2_root()
    assert root is not None
    prof = Profiler(None, root, hz=99, stack_entries=2)
    assert prof.load(), prof.unavailable
    try:
        box = Container(id=one, name="python-box", runtime="docker", cgroup=f"docker/{one}")
        assert prof.start(box, 2.0)
        done: list = []
        t0 = time.monotonic()
        while not done and time.monotonic() - t0 < 15:
            time.sleep(0.5)
            done = prof.poll()
        [d] = done
    finally:
        prof.close()
    p = d.profile
    assert p.samples > 50 and p.lost > 0, (p.samples, p.lost)
    assert any(LOST_FRAME in s for s in p.stacks), list(p.stacks)[:5]
    assert prof.stats.lost_samples == p.lost
