/* net.bpf.c: network bytes and TCP retransmits per cgroup.
 *
 * sock:sock_send_length and sock:sock_recv_length (kernel >= 6.3) fire in the
 * context of the task that sent or received, after the fact, with the byte
 * count as an argument: attribution by bpf_get_current_cgroup_id() is exact
 * and no kernel struct is read. Only AF_INET and AF_INET6 sockets count.
 *
 * Retransmits happen mostly in timer softirqs, where `current` is whoever
 * was running. So the socket's address (an opaque key, never dereferenced) is
 * remembered with its cgroup when the socket is used by a task, and a
 * retransmit on that socket is charged to that cgroup.
 *
 *   -DCGW_SOCK_LENGTH    the sock_*_length tracepoints exist
 *   -DCGW_HAVE_SOCK_STATE sock:inet_sock_set_state exists
 *   -DCGW_HAVE_RETRANS   tcp:tcp_retransmit_skb exists
 */
#include "cgwatch.h"

#define CGW_AF_INET 2
#define CGW_AF_INET6 10

BPF_PERCPU_HASH(net_stats, u64, struct cgw_net, CGW_MAX_CGROUPS);
BPF_TABLE("lru_hash", u64, u64, sock_owner, CGW_MAX_PIDS);

static __always_inline struct cgw_net *net_stats_of(u64 cgid)
{
    struct cgw_net *n = net_stats.lookup(&cgid);
    if (n)
        return n;
    struct cgw_net init = {};
    net_stats.update(&cgid, &init);
    return net_stats.lookup(&cgid);
}

static __always_inline void remember(u64 sk, u64 cgid)
{
    u64 *owner = sock_owner.lookup(&sk);
    if (!owner || *owner != cgid)
        sock_owner.update(&sk, &cgid);
}

#ifdef CGW_SOCK_LENGTH
TRACEPOINT_PROBE(sock, sock_send_length)
{
    if (args->ret <= 0 || (args->family != CGW_AF_INET && args->family != CGW_AF_INET6))
        return 0;
    u64 cgid = bpf_get_current_cgroup_id();
    struct cgw_net *n = net_stats_of(cgid);
    if (n)
        n->tx_bytes += args->ret;
    remember((u64)args->sk, cgid);
    return 0;
}

TRACEPOINT_PROBE(sock, sock_recv_length)
{
    if (args->ret <= 0 || (args->family != CGW_AF_INET && args->family != CGW_AF_INET6))
        return 0;
    u64 cgid = bpf_get_current_cgroup_id();
    struct cgw_net *n = net_stats_of(cgid);
    if (n)
        n->rx_bytes += args->ret;
    return 0;
}
#endif

#ifdef CGW_HAVE_SOCK_STATE
/* connect() and accept() paths change state in the owner's context */
TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != 6 /* IPPROTO_TCP */)
        return 0;
    u64 sk = (u64)args->skaddr;
    if (args->newstate == 7 /* TCP_CLOSE */) {
        sock_owner.delete(&sk);
        return 0;
    }
    if (args->newstate == 2 /* TCP_SYN_SENT */)
        remember(sk, bpf_get_current_cgroup_id());
    return 0;
}
#endif

#ifdef CGW_HAVE_RETRANS
TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
    u64 sk = (u64)args->skaddr;
    u64 *owner = sock_owner.lookup(&sk);
    u64 cgid = owner ? *owner : bpf_get_current_cgroup_id();
    struct cgw_net *n = net_stats_of(cgid);
    if (n)
        n->retransmits += 1;
    return 0;
}
#endif
