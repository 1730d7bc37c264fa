"""What ``cgwatch run`` needs from its host: capabilities and paths, written once.

The systemd unit (``packaging/systemd/cgwatch.service``, CapabilityBoundingSet=)
and the Kubernetes DaemonSet (``packaging/kubernetes/daemonset.yaml``) each
grant these; ``tests/packaging/test_kubernetes.py`` checks that they agree
with this module. :func:`cgwatch.sources.bpf.check_host` tests the same host
at start, at run time.

``/proc`` is not listed: cgwatch reads ``/proc/<pid>`` of every process and
``/proc/kallsyms``, which a service has and a pod gets with the host's PID
namespace (``hostPID: true``), not with a mount.

Examples
--------
>>> [p.path for p in HOST_PATHS if p.required]
['/sys/fs/cgroup', '/sys/kernel/tracing', '/lib/modules', '/usr/src', '/var/lib/cgwatch']
>>> [p.path for p in HOST_PATHS if not p.read_only]
['/var/lib/cgwatch']
>>> bare(CAPABILITIES)[:2]
('BPF', 'PERFMON')
"""

from __future__ import annotations

from dataclasses import dataclass

#: Linux capabilities the daemon runs with, and no others (not CAP_SYS_ADMIN).
CAPABILITIES: tuple[str, ...] = (
    "CAP_BPF",
    "CAP_PERFMON",
    "CAP_SYS_RESOURCE",
    "CAP_DAC_READ_SEARCH",
    "CAP_SYSLOG",
    "CAP_SYS_PTRACE",
)

#: Why each capability is needed (the unit file says it at length).
WHY: dict[str, str] = {
    "CAP_BPF": "bpf(2): load programs, create and read maps (kernel >= 5.8)",
    "CAP_PERFMON": "perf_event_open(2): attach tracepoints and raw tracepoints (kernel >= 5.8)",
    "CAP_SYS_RESOURCE": "raise RLIMIT_MEMLOCK for BPF maps on kernels < 5.11",
    "CAP_DAC_READ_SEARCH": "read runtime state and /proc/<pid> files owned by other users",
    "CAP_SYSLOG": "real addresses in /proc/kallsyms (CFS refill functions for cpu.runq_latency_*, kernel profile frames)",
    "CAP_SYS_PTRACE": "read /proc/<pid>/maps and /proc/<pid>/root of containers to name profile frames",
}


@dataclass(frozen=True, slots=True)
class HostPath:
    """A host path ``cgwatch run`` reads (or, if not ``read_only``, writes).

    ``host_root``: cgwatch reads it below the config's ``host_root`` (``/`` on a
    host), so a container mounts it there; otherwise it is read at the same path.
    ``required``: cgwatch cannot run (or loses its core metrics) without it.
    """

    path: str
    read_only: bool
    why: str
    required: bool
    host_root: bool = False


HOST_PATHS: tuple[HostPath, ...] = (
    HostPath("/sys/fs/cgroup", True, "cgroup2 (and v1) trees: cgroup id -> path, memory/pids/io/PSI files", True),
    HostPath("/sys/kernel/tracing", True, "tracefs: tracepoint formats and ids BCC attaches to", True),
    HostPath("/sys/kernel/debug", True, "older kernels' tracefs, at /sys/kernel/debug/tracing", False),
    HostPath("/lib/modules", True, "kernel headers BCC compiles against: /lib/modules/$(uname -r)/build", True),
    HostPath("/usr/src", True, "where the build/ and source/ links of /lib/modules point (linux-headers-*)", True),
    HostPath("/var/lib/cgwatch", False, "state_dir: alert history, outbox, anomaly baselines, profiles, compiled BPF programs", True),
    HostPath("/var/lib/docker/containers", True, "docker: <id>/config.v2.json (names, images, labels)", False, True),
    HostPath("/run/containerd", True, "containerd: io.containerd.runtime.v2.task/k8s.io/<id>/config.json", False, True),
    HostPath("/var/lib/containers", True, "podman and CRI-O: storage/overlay-containers/", False, True),
    HostPath("/run/containers", True, "CRI-O: storage/overlay-containers/<id>/userdata/config.json", False, True),
)


def bare(caps: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Capability names without ``CAP_``, as Kubernetes writes them.

    >>> bare(["CAP_BPF", "SYSLOG"])
    ('BPF', 'SYSLOG')
    """
    return tuple(c.removeprefix("CAP_") for c in caps)
