/* cpu.bpf.c: on-CPU time, context switches and run-queue latency per cgroup.
 *
 * On-CPU time needs no per-task state: at every switch, the time since this
 * CPU's previous switch belongs to the task that is leaving, which is still
 * `current`, so bpf_get_current_cgroup_id() names the cgroup to charge.
 *
 * Run-queue latency is measured from a task's wake-up (or its preemption) to
 * its switch-in. The incoming task's cgroup cannot be read at switch-in
 * without walking kernel structs, so the latency is parked per CPU and
 * charged at the next switch on that CPU, when that task is `current`.
 *
 *   -DCGW_RAW_SWITCH      use the raw sched_switch tracepoint (cheaper)
 *   -DCGW_SWITCH_STATE    its 4th argument is prev_state (kernel >= 5.18)
 *   -DCGW_RUNQ            measure run-queue latency (needs classic
 *                         tracepoints: next_pid is only a classic argument)
 */
#include "cgwatch.h"

struct cpu_state {
    u64 last_ns;        /* this CPU's previous switch */
    u64 pending_ns;     /* run-queue latency of the task switched in ... */
    u32 pending_pid;    /* ... which is this one */
    u32 pad;
};

BPF_PERCPU_ARRAY(cpu_state, struct cpu_state, 1);
BPF_PERCPU_HASH(cpu_stats, u64, struct cgw_cpu, CGW_MAX_CGROUPS);

/* Charge the time since the previous switch on this CPU to the outgoing task.
 * Returns the CPU's state for the run-queue part. */
static __always_inline struct cpu_state *account(u64 now, u32 pid, int involuntary,
                                                 u64 *cgid)
{
    int zero = 0;
    struct cpu_state *st = cpu_state.lookup(&zero);
    if (!st)
        return 0;
    u64 last = st->last_ns;
    st->last_ns = now;
    if (pid == 0 || last == 0)      /* the idle task is nobody's work */
        return st;
    *cgid = bpf_get_current_cgroup_id();
    struct cgw_cpu *c = cpu_stats.lookup(cgid);
    if (!c) {
        struct cgw_cpu init = {};
        cpu_stats.update(cgid, &init);
        c = cpu_stats.lookup(cgid);
        if (!c)
            return st;
    }
    c->oncpu_ns += now - last;
    c->switches += 1;
    c->involuntary += involuntary;
    return st;
}

/* Task states: anything in the low byte means the task went to sleep (or
 * stopped, or died); none of it means it was still runnable: preempted. */
#define CGW_SLEEP_MASK 0xff

#ifdef CGW_RUNQ
BPF_HASH(wakeup_ns, u32, u64, CGW_MAX_PIDS);
BPF_PERCPU_HASH(runq_stats, u64, struct cgw_runq, CGW_MAX_CGROUPS);

static __always_inline int log2_slot(u64 us)
{
    int slot = 0;
#pragma unroll
    for (int i = 0; i < CGW_RUNQ_SLOTS - 1; i++) {
        if (us >= 2) {
            us >>= 1;
            slot++;
        }
    }
    return slot;
}

static __always_inline void mark_runnable(u32 pid)
{
    if (pid == 0)
        return;
    u64 now = bpf_ktime_get_ns();
    wakeup_ns.update(&pid, &now);
}

TRACEPOINT_PROBE(sched, sched_wakeup)
{
    mark_runnable(args->pid);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup_new)
{
    mark_runnable(args->pid);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_switch)
{
    u64 now = bpf_ktime_get_ns();
    u32 prev = args->prev_pid, next = args->next_pid;
    int involuntary = (args->prev_state & CGW_SLEEP_MASK) == 0;
    u64 cgid = 0;
    struct cpu_state *st = account(now, prev, involuntary, &cgid);
    if (!st)
        return 0;

    /* the outgoing task ran because it was switched in earlier: charge the
     * latency it waited then, now that its cgroup is known */
    if (st->pending_pid == prev && prev != 0 && cgid) {
        struct cgw_runq *h = runq_stats.lookup(&cgid);
        if (!h) {
            struct cgw_runq init = {};
            runq_stats.update(&cgid, &init);
            h = runq_stats.lookup(&cgid);
        }
        if (h) {
            u64 ns = st->pending_ns;
            int slot = log2_slot(ns / 1000);
            if (slot < CGW_RUNQ_SLOTS)
                h->slots[slot] += 1;
            h->count += 1;
            h->sum_ns += ns;
        }
    }
    st->pending_pid = 0;

    if (involuntary && prev != 0)        /* back on the run queue */
        wakeup_ns.update(&prev, &now);

    u64 *ts = wakeup_ns.lookup(&next);
    if (ts) {
        if (now > *ts) {
            st->pending_ns = now - *ts;
            st->pending_pid = next;
        }
        wakeup_ns.delete(&next);
    }
    return 0;
}

#elif defined(CGW_RAW_SWITCH)
/* raw: (bool preempt, struct task_struct *prev, struct task_struct *next
 *       [, unsigned int prev_state])  -- pointers are never dereferenced */
RAW_TRACEPOINT_PROBE(sched_switch)
{
    u64 now = bpf_ktime_get_ns();
    u32 pid = (u32)bpf_get_current_pid_tgid();
    int involuntary = ctx->args[0] != 0;
#ifdef CGW_SWITCH_STATE
    involuntary |= ((u32)ctx->args[3] & CGW_SLEEP_MASK) == 0;
#endif
    u64 cgid = 0;
    account(now, pid, involuntary, &cgid);
    return 0;
}

#else
TRACEPOINT_PROBE(sched, sched_switch)
{
    u64 now = bpf_ktime_get_ns();
    int involuntary = (args->prev_state & CGW_SLEEP_MASK) == 0;
    u64 cgid = 0;
    account(now, args->prev_pid, involuntary, &cgid);
    return 0;
}
#endif
