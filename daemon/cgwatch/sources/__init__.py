"""The collectors. Each turns one kind of kernel or cgroupfs data into Samples.

``SOURCES`` names every source and where its class lives; nothing is imported
until a source is used, so ``cgwatch rules check`` never pays for BCC.
"""

#: source name -> "module:Class", in the order they run
SOURCES = {
    "cpu": "cgwatch.sources.cpu:CpuSource",
    "proc": "cgwatch.sources.proc:ProcSource",
    "mem": "cgwatch.sources.mem:MemSource",
    "net": "cgwatch.sources.net:NetSource",
    "io": "cgwatch.sources.io:IoSource",
    "cgroupfs": "cgwatch.sources.cgroupfs:CgroupfsSource",
}

#: sources that run only when asked for (``collectors: {io: true}``, ``--sources``): io
#: traces every block request (about 1.3 us of BPF time each, docs/performance.md), which
#: on a host doing 100,000 requests a second is about a seventh of one CPU
OPT_IN = frozenset({"io"})
#: what runs when nothing says otherwise
DEFAULT_SOURCES = tuple(n for n in SOURCES if n not in OPT_IN)
