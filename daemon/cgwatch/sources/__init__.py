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
    "cgroupfs": "cgwatch.sources.cgroupfs:CgroupfsSource",
}
