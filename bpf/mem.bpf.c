/* mem.bpf.c: user page faults per cgroup, and the OOM killer's victims.
 *
 * oom:mark_victim runs while the OOM killer picks its victim; for a cgroup's
 * own OOM the task that ran out of memory is in the victim's cgroup, so
 * bpf_get_current_cgroup_id() names the right container.
 *
 *   -DCGW_HAVE_FAULT       exceptions:page_fault_user exists (x86)
 *   -DCGW_HAVE_OOM         oom:mark_victim exists
 *   -DCGW_RAW_FAULT        count faults on the raw tracepoint (no arguments read)
 *   -DCGW_VICTIM_COMM      mark_victim carries the victim's comm (kernel >= 6.?)
 */
#include "cgwatch.h"

#ifndef CGW_RINGBUF_PAGES
#define CGW_RINGBUF_PAGES 16
#endif

BPF_PERCPU_HASH(mem_stats, u64, struct cgw_mem, CGW_MAX_CGROUPS);
BPF_RINGBUF_OUTPUT(mem_events, CGW_RINGBUF_PAGES);
BPF_PERCPU_ARRAY(mem_lost, u64, 1);

static __always_inline void count_fault(void)
{
    u64 cgid = bpf_get_current_cgroup_id();
    struct cgw_mem *m = mem_stats.lookup(&cgid);
    if (m) {
        m->faults += 1;
        return;
    }
    struct cgw_mem init = {.faults = 1};
    mem_stats.update(&cgid, &init);
}

#ifdef CGW_HAVE_FAULT
#ifdef CGW_RAW_FAULT
RAW_TRACEPOINT_PROBE(page_fault_user)
{
    count_fault();
    return 0;
}
#else
TRACEPOINT_PROBE(exceptions, page_fault_user)
{
    count_fault();
    return 0;
}
#endif
#endif

#ifdef CGW_HAVE_OOM
TRACEPOINT_PROBE(oom, mark_victim)
{
    struct cgw_event *e = mem_events.ringbuf_reserve(sizeof(struct cgw_event));
    if (!e) {                /* counted, so user space can say so */
        int zero = 0;
        mem_lost.increment(zero);
        return 0;
    }
    e->kind = CGW_EV_OOM;
    e->cgroup_id = bpf_get_current_cgroup_id();
    e->ts_ns = bpf_ktime_get_ns();
    e->pid = args->pid;
    e->code = 0;
    e->sig = 9;
    e->path[0] = 0;
#ifdef CGW_VICTIM_COMM
    bpf_probe_read_kernel_str(&e->comm, sizeof(e->comm),
                              (void *)args + (args->data_loc_comm & 0xFFFF));
#else
    /* older kernels: the victim's comm when the victim is the one running */
    if ((bpf_get_current_pid_tgid() >> 32) == (u32)args->pid)
        bpf_get_current_comm(&e->comm, sizeof(e->comm));
    else
        e->comm[0] = 0;
#endif
    mem_events.ringbuf_submit(e, 0);
    return 0;
}
#endif
