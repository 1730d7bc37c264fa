/* profile.bpf.c: sampled stacks of the cgroups being profiled.
 *
 * Attached to the software cpu-clock perf event on every CPU (N Hz each).
 * A sample whose current task is in a wanted cgroup (a hash lookup: the whole
 * cost for every other task) stores its user and kernel stacks in the stack
 * map and counts one for (cgroup id, process, user stack, kernel stack).
 * Only helper results and the perf event's own registers are read.
 *
 * Stack ids < 0 are kept in the key: -EFAULT is "no stack of this kind" (a
 * kernel thread has no user stack; user code interrupted has no kernel one),
 * anything else means the stack found no slot in the stack map (-EEXIST: its
 * hash bucket holds another stack; -ENOMEM: full) or the unwind failed, which is
 * also counted in `errors` so user space can say how much was lost.
 *
 * The context is passed to the stack helper as it is: its registers are its
 * first member, so no layout is needed, and <uapi/linux/bpf_perf_event.h>
 * (which pulls in the architecture's ptrace headers and costs 1.4 s of
 * compile time) is not included.
 *
 *   -DCGW_STACKS=N        stack map entries (default 16384)
 *   -DCGW_COUNTS=N        distinct (cgroup, process, stacks) keys (default 40960)
 */
#include <uapi/linux/errno.h>

#ifndef CGW_STACKS
#define CGW_STACKS 16384
#endif
#ifndef CGW_COUNTS
#define CGW_COUNTS 40960
#endif

struct cgw_stack_key {
    u64 cgid;
    u32 tgid;
    s32 user_stack;
    s32 kernel_stack;
    u32 pad;
    char comm[16];
};

/* error slots */
#define CGW_ERR_USER 0      /* user stack not stored (map full, unwind failed) */
#define CGW_ERR_KERNEL 1    /* kernel stack not stored */
#define CGW_ERR_COUNTS 2    /* sample not counted: the counts map is full */

BPF_HASH(wanted, u64, u8, 1024);
BPF_HASH(counts, struct cgw_stack_key, u64, CGW_COUNTS);
BPF_STACK_TRACE(stacks, CGW_STACKS);
BPF_PERCPU_ARRAY(errors, u64, 3);

int on_sample(struct bpf_perf_event_data *ctx)
{
    u64 cgid = bpf_get_current_cgroup_id();
    if (!wanted.lookup(&cgid))
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    struct cgw_stack_key key = {};
    key.cgid = cgid;
    key.tgid = id >> 32;
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    key.user_stack = stacks.get_stackid(ctx, BPF_F_USER_STACK);
    key.kernel_stack = stacks.get_stackid(ctx, 0);
    if (key.user_stack < 0 && key.user_stack != -EFAULT) {
        int slot = CGW_ERR_USER;
        u64 *e = errors.lookup(&slot);
        if (e)
            *e += 1;
    }
    if (key.kernel_stack < 0 && key.kernel_stack != -EFAULT) {
        int slot = CGW_ERR_KERNEL;
        u64 *e = errors.lookup(&slot);
        if (e)
            *e += 1;
    }
    u64 zero = 0;
    u64 *n = counts.lookup_or_try_init(&key, &zero);
    if (n) {
        __sync_fetch_and_add(n, 1);
    } else {
        int slot = CGW_ERR_COUNTS;
        u64 *e = errors.lookup(&slot);
        if (e)
            *e += 1;
    }
    return 0;
}
