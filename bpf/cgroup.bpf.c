/* cgroup.bpf.c: cgroups as they are made and removed, so identity need not
 * re-walk the whole cgroup tree every interval to notice them.
 *
 * cgroup:cgroup_mkdir / cgroup:cgroup_rmdir carry the hierarchy, the cgroup
 * id (the same id bpf_get_current_cgroup_id() returns for cgroup2) and the
 * path. Only the cgroup2 hierarchy (id 0, the default hierarchy) is sent.
 */
#include "cgwatch.h"

#define CGW_CG_PATH 512

struct cgw_cgroup_event {
    u64 id;
    u32 removed;
    u32 truncated;
    char path[CGW_CG_PATH];
};

BPF_RINGBUF_OUTPUT(cgroup_events, 64);
BPF_PERCPU_ARRAY(cgroup_lost, u64, 1);

static __always_inline int send(u64 id, u32 removed, void *args, u32 loc)
{
    struct cgw_cgroup_event *e = cgroup_events.ringbuf_reserve(sizeof(struct cgw_cgroup_event));
    if (!e) {                /* counted, so user space can say so */
        int zero = 0;
        cgroup_lost.increment(zero);
        return 0;
    }
    e->id = id;
    e->removed = removed;
    long len = bpf_probe_read_kernel_str(&e->path, sizeof(e->path), args + (loc & 0xFFFF));
    e->truncated = len >= CGW_CG_PATH || len < 0;
    cgroup_events.ringbuf_submit(e, 0);
    return 0;
}

TRACEPOINT_PROBE(cgroup, cgroup_mkdir)
{
    if (args->root != 0)
        return 0;
    return send(args->id, 0, args, args->data_loc_path);
}

TRACEPOINT_PROBE(cgroup, cgroup_rmdir)
{
    if (args->root != 0)
        return 0;
    return send(args->id, 1, args, args->data_loc_path);
}
