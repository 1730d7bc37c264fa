"""What an unready host gets: one line saying what to do, or a warning and an
absent metric. Never a traceback, never a zero standing in for 'unknown'."""

from __future__ import annotations

import logging
import os
import sys
import time

import pytest

from cgwatch.identity import CgroupTree, Metadata, Resolver, find_cgroup2_root
from cgwatch.sources import bpf
from cgwatch.sources.bpf import Probe, SetupError, check_host
from cgwatch.sources.mem import MemSource

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="root's checks come after the root check")


@root_only
def test_missing_bcc_says_which_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "bcc", None)     # import bcc -> ImportError
    with pytest.raises(SetupError, match=r"^BCC's Python module is missing: install python3-bpfcc"):
        check_host()


@root_only
def test_missing_headers_say_which_package(monkeypatch):
    monkeypatch.setattr(bpf.platform, "release", lambda: "9.9.9-nosuch")
    monkeypatch.setattr(bpf.Path, "exists", lambda self: False if "kheaders" in str(self) else os.path.exists(self))
    with pytest.raises(SetupError) as e:
        check_host()
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("no kernel headers for 9.9.9-nosuch at /lib/modules/9.9.9-nosuch/build: install linux-headers-9.9.9-nosuch")


def test_probe_flags_name_the_missing_tracepoint(caplog):
    with caplog.at_level(logging.WARNING, logger="cgwatch.bpf"):
        flags, lost = bpf.probe_flags([Probe("sched", "no_such_event", "CGW_X", ("cpu.made_up",))], "cpu")
    assert flags == [] and lost == {"cpu.made_up"}
    assert caplog.messages == ["cpu: tracepoint sched:no_such_event is missing on this kernel; cpu.made_up will be absent"]


class MemWithoutFaults(MemSource):
    """MemSource on a kernel whose page-fault tracepoint does not exist."""

    probes = (
        Probe("exceptions", "no_such_page_fault", "CGW_HAVE_FAULT", ("mem.page_faults",)),
        *MemSource.probes[1:],
    )


@pytest.mark.bpf
def test_a_missing_tracepoint_makes_its_metric_absent_not_zero(caplog):
    root = find_cgroup2_root()
    assert root is not None
    res = Resolver(CgroupTree(root), Metadata())
    with caplog.at_level(logging.WARNING):
        src = MemWithoutFaults(res)
    try:
        assert any("no_such_page_fault" in m and "mem.page_faults will be absent" in m for m in caplog.messages)
        time.sleep(0.2)
        res.refresh(time.time())
        samples = src.collect(time.time(), res.containers())
        assert [s for s in samples if s.metric == "mem.page_faults"] == []
        assert src.events() == []     # the OOM probe still loaded and polls fine
    finally:
        src.close()
