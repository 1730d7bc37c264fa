"""Network per container from ``bpf/net.bpf.c``: bytes sent and received on
IPv4/IPv6 sockets, and TCP retransmits (see docs/metrics.md for the hooks).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..model import Container, Sample
from .bpf import Probe
from .kernel import KernelSource, rate_samples


class NetSource(KernelSource):
    name = "net"
    program = "net"
    tables = ("net_stats",)
    metrics = ("net.rx_bytes", "net.tx_bytes", "net.tcp_retransmits")
    probes = (
        Probe("sock", "sock_send_length", "CGW_HAVE_SEND_LENGTH", ("net.tx_bytes",)),
        Probe("sock", "sock_recv_length", "CGW_HAVE_RECV_LENGTH", ("net.rx_bytes",)),
        Probe("sock", "inet_sock_set_state", "CGW_HAVE_SOCK_STATE"),
        Probe("tcp", "tcp_retransmit_skb", "CGW_HAVE_RETRANS", ("net.tcp_retransmits",)),
    )

    def extra_flags(self, have: list[str]) -> list[str]:
        if {"-DCGW_HAVE_SEND_LENGTH", "-DCGW_HAVE_RECV_LENGTH"} <= set(have):
            return ["-DCGW_SOCK_LENGTH"]
        self.absent |= {"net.rx_bytes", "net.tx_bytes"}
        return []

    def collect(self, now: float, containers: Iterable[Container]) -> list[Sample]:
        dt = self.interval(now)
        if dt <= 0:
            return []
        d = self.deltas("net_stats", now)
        return rate_samples(now, d, containers, 3, {
            "net.rx_bytes": lambda v: float(v[0]) / dt,
            "net.tx_bytes": lambda v: float(v[1]) / dt,
            "net.tcp_retransmits": lambda v: float(v[2]) / dt,
        }, self.absent)
