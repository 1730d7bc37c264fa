"""Network per container from ``bpf/net.bpf.c``: bytes sent and received on
IPv4/IPv6 sockets, and TCP retransmits (see docs/metrics.md for the hooks).
"""

from __future__ import annotations

from .bpf import Probe
from .kernel import KernelSource


class NetSource(KernelSource):
    name = "net"
    program = "net"
    tables = ("net_stats",)
    metrics = ("net.rx_bytes", "net.tx_bytes", "net.tcp_retransmits")
    rate_fields = {"net.rx_bytes": 0, "net.tx_bytes": 1, "net.tcp_retransmits": 2}  # fields of struct cgw_net
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

