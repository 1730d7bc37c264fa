/* cpu.bpf.c: on-CPU time, context switches and run-queue latency per cgroup.
 *
 * On-CPU time needs no per-task state: at every switch, the time since this
 * CPU's previous switch belongs to the task that is leaving, which is still
 * `current`, so bpf_get_current_cgroup_id() names the cgroup to charge.
 *
 * Most switches on a CPU stay within one cgroup (a container's threads, or a
 * task and the idle loop), so each CPU accumulates the current cgroup's counts
 * in its own slot and adds them to the per-cgroup hash only when the cgroup
 * changes or CGW_FLUSH_NS has passed. User space reads only the hash; before
 * reading it makes every CPU switch once (so every slot is flushed).
 *
 * Run-queue latency is measured from a task's wake-up (or preemption) to its
 * switch-in. Tasks are told apart by the task pointer the raw tracepoints
 * pass, used only as an opaque map key, never dereferenced. The incoming
 * task's cgroup cannot be read at switch-in, so its latency is parked per CPU
 * and charged at the next switch on that CPU, when that task is `current`.
 *
 *   -DCGW_RAW_SWITCH      raw sched_switch (else the classic tracepoint,
 *                         without run-queue latency)
 *   -DCGW_SWITCH_STATE    its 4th argument is prev_state (kernel >= 5.18)
 *   -DCGW_RUNQ            run-queue latency (raw sched_wakeup, _wakeup_new)
 *   -DCGW_FLUSH_NS=N      longest a CPU keeps counts to itself (default 10 ms)
 */
#include "cgwatch.h"

#ifndef CGW_FLUSH_NS
#define CGW_FLUSH_NS 10000000ULL
#endif

struct cpu_state {
    u64 last_ns;         /* this CPU's previous switch */
    u64 flushed_ns;      /* when `pend` last went into cpu_stats */
    u64 cgid;            /* whose counts `pend` holds (0: nobody's) */
    u64 wait_ns;         /* run-queue latency of the task switched in ... */
    u64 wait_task;       /* ... which is this one (an opaque pointer) */
    struct cgw_cpu pend;
};

BPF_PERCPU_ARRAY(cpu_state, struct cpu_state, 1);
BPF_PERCPU_HASH(cpu_stats, u64, struct cgw_cpu, CGW_MAX_CGROUPS);

static __always_inline void flush(struct cpu_state *st, u64 now)
{
    st->flushed_ns = now;
    u64 cgid = st->cgid;
    struct cgw_cpu *c = cgid ? cpu_stats.lookup(&cgid) : 0;
    if (!c) {
        if (cgid)
            cpu_stats.update(&cgid, &st->pend);
    } else {
        c->oncpu_ns += st->pend.oncpu_ns;
        c->switches += st->pend.switches;
        c->involuntary += st->pend.involuntary;
#ifdef CGW_RUNQ
        c->runq_count += st->pend.runq_count;
        c->runq_sum_ns += st->pend.runq_sum_ns;
#pragma unroll
        for (int i = 0; i < CGW_RUNQ_SLOTS; i++)
            c->runq_slots[i] += st->pend.runq_slots[i];
#endif
    }
    __builtin_memset(&st->pend, 0, sizeof(st->pend));
}

/* Charge the time since the previous switch on this CPU to the outgoing task.
 * Returns the CPU's state, or 0. */
static __always_inline struct cpu_state *account(u64 now, int involuntary)
{
    int zero = 0;
    struct cpu_state *st = cpu_state.lookup(&zero);
    if (!st)
        return 0;
    u64 last = st->last_ns;
    st->last_ns = now;
    if ((u32)bpf_get_current_pid_tgid() == 0 || last == 0)   /* the idle task: nobody's work */
        return st;
    u64 cgid = bpf_get_current_cgroup_id();
    if (cgid != st->cgid || now - st->flushed_ns >= CGW_FLUSH_NS) {
        flush(st, now);
        st->cgid = cgid;
    }
    st->pend.oncpu_ns += now - last;
    st->pend.switches += 1;
    st->pend.involuntary += involuntary;
    return st;
}

/* Task states: anything in the low byte means the task went to sleep (or
 * stopped, or died); none of it means it was still runnable: preempted. */
#define CGW_SLEEP_MASK 0xff

#ifdef CGW_RAW_SWITCH

#ifdef CGW_RUNQ
BPF_TABLE("lru_hash", u64, u64, wakeup_ns, CGW_MAX_PIDS);

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

static __always_inline void mark_runnable(u64 task, u64 now)
{
    u64 *ts = wakeup_ns.lookup(&task);
    if (ts)
        *ts = now;
    else
        wakeup_ns.update(&task, &now);
}

/* raw: (struct task_struct *p) */
RAW_TRACEPOINT_PROBE(sched_wakeup)
{
    mark_runnable(ctx->args[0], bpf_ktime_get_ns());
    return 0;
}

RAW_TRACEPOINT_PROBE(sched_wakeup_new)
{
    mark_runnable(ctx->args[0], bpf_ktime_get_ns());
    return 0;
}
#endif

/* raw: (bool preempt, struct task_struct *prev, struct task_struct *next
 *       [, unsigned int prev_state])  -- the pointers are never dereferenced */
RAW_TRACEPOINT_PROBE(sched_switch)
{
    u64 now = bpf_ktime_get_ns();
    int involuntary = ctx->args[0] != 0;
#ifdef CGW_SWITCH_STATE
    involuntary |= ((u32)ctx->args[3] & CGW_SLEEP_MASK) == 0;
#endif
    struct cpu_state *st = account(now, involuntary);
#ifdef CGW_RUNQ
    if (!st)
        return 0;
    u64 prev = ctx->args[1], next = ctx->args[2];
    /* the outgoing task waited st->wait_ns before it ran: charge it now that
     * its cgroup is the current one (account() just made st->cgid that) */
    if (st->wait_task == prev && prev != 0) {
        u64 ns = st->wait_ns;
        int slot = log2_slot(ns / 1000);
        if (slot < CGW_RUNQ_SLOTS)
            st->pend.runq_slots[slot] += 1;
        st->pend.runq_count += 1;
        st->pend.runq_sum_ns += ns;
    }
    st->wait_task = 0;
    if (involuntary && (u32)bpf_get_current_pid_tgid() != 0)   /* back on the run queue */
        mark_runnable(prev, now);
    u64 *ts = wakeup_ns.lookup(&next);
    if (ts && *ts) {
        if (now > *ts) {
            st->wait_ns = now - *ts;
            st->wait_task = next;
        }
        *ts = 0;
    }
#endif
    return 0;
}

#else
TRACEPOINT_PROBE(sched, sched_switch)
{
    account(bpf_ktime_get_ns(), (args->prev_state & CGW_SLEEP_MASK) == 0);
    return 0;
}
#endif
