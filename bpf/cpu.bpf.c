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
 * cpu.usage_cores does not come from here (user space reads the cgroup's own
 * cpu.stat, see sources/cpu.py); oncpu_ns is kept for the `host` remainder.
 *
 * Run-queue latency is measured from a task's wake-up (or preemption) to its
 * switch-in. Tasks are told apart by the task pointer the raw tracepoints
 * pass, used only as an opaque map key, never dereferenced. The incoming
 * task's cgroup cannot be read at switch-in, so its latency is parked per CPU
 * and charged at the next switch on that CPU, when that task is `current`.
 *
 * CFS bandwidth throttling is not run-queue latency. A task whose cgroup ran
 * out of quota is switched out still runnable (to sched_switch it looks
 * preempted) and waits off the run queue until the quota is refilled, which
 * no tracepoint announces per task or cgroup. What is visible is *where and
 * when* a refill can make a throttled task runnable again: the bandwidth
 * period/slack hrtimer expiring on a CPU (it unthrottles that CPU's queues)
 * and, on >= 6.2, the __cfsb_csd_unthrottle call it sends to every other CPU
 * with a throttled queue (csd:csd_function_entry, run on that CPU). Each such
 * moment is stamped per CPU (refill_ns); a wait that a refill on its CPU
 * interrupted is counted from the refill on: what came before was the
 * quota's doing. The cost: a genuine wait that happens to span another
 * cgroup's refill on the same CPU is counted short (docs/metrics.md).
 *
 *   -DCGW_RAW_SWITCH      raw sched_switch (else the classic tracepoint,
 *                         without run-queue latency)
 *   -DCGW_SWITCH_STATE    its 4th argument is prev_state (kernel >= 5.18)
 *   -DCGW_RUNQ            run-queue latency (raw sched_wakeup, _wakeup_new)
 *   -DCGW_FLUSH_NS=N      longest a CPU keeps counts to itself (default 10 ms)
 *   -DCGW_REFILL          with CGW_RUNQ: waits end at bandwidth refills (classic
 *                         timer:hrtimer_expire_entry) ...
 *   -DCGW_PERIOD_FN=A -DCGW_SLACK_FN=B   ... of the timers whose callbacks
 *                         are at these kernel addresses (from /proc/kallsyms)
 *   -DCGW_CSD_FN=C        and raw csd_function_entry of __cfsb_csd_unthrottle;
 *                         without it (< 6.2: the timer unthrottles every CPU
 *                         itself) a refill is stamped for all CPUs
 *   -DCGW_NCPUS=N         CPU ids are below N (default 1024)
 *   -DCGW_BLAME           with CGW_RUNQ: who each wait was behind (below)
 *
 * Blame (noisy neighbours). When a waiting task gets its CPU, the task it
 * takes the CPU from is `current`: its cgroup is the one that held the CPU at
 * the end of the wait (0 when the CPU was idle: a wake-up's own latency). The
 * wait is charged to the pair {waiter's cgroup, that cgroup} once the waiter's
 * cgroup is known (at its own switch-out, as its latency is), and the part of
 * a wait that a quota refill ended (see CGW_REFILL) to {waiter, CGW_QUOTA}:
 * its own quota's doing, not a neighbour's. The last holder stands for the
 * whole wait; over many waits the shares follow who keeps the CPU. Each CPU
 * sums its pairs in CGW_PAIR_SLOTS slots of its own state and adds them to
 * the shared pair_wait hash when the slots are full or CGW_FLUSH_NS passed.
 */
#include "cgwatch.h"

#ifndef CGW_FLUSH_NS
#define CGW_FLUSH_NS 10000000ULL
#endif
#ifndef CGW_NCPUS
#define CGW_NCPUS 1024
#endif
#define CGW_FRESH_NS 2000000ULL

/* One per cgroup, per CPU. The run-queue fields exist only when it is built
 * with -DCGW_RUNQ (user space reads the width from the map). Defined here, not
 * in cgwatch.h: its layout depends on this program's flags, and the loader may
 * compile the programs as one unit, where the header is read once. */
struct cgw_cpu {
    u64 oncpu_ns;
    u64 switches;
    u64 involuntary;
#ifdef CGW_RUNQ
    u64 runq_count;
    u64 runq_sum_ns;
    u64 runq_slots[CGW_RUNQ_SLOTS];
#endif
};

/* User space reads the first three fields (sources/cpu.py, stale_cpus()) to
 * tell which CPUs it must make switch before a read. */
#ifdef CGW_BLAME
#define CGW_PAIR_SLOTS 4
/* the culprit of the part of a wait the waiter's own CPU quota imposed */
#define CGW_QUOTA 0xffffffffffffffffULL
struct cgw_pair_key {
    u64 victim;
    u64 culprit;
};
struct cgw_pair {
    u64 victim;
    u64 culprit;
    u64 ns;
    u64 count;
};
struct cgw_wait {
    u64 ns;
    u64 count;
};
#ifndef CGW_MAX_PAIRS
#define CGW_MAX_PAIRS 16384
#endif
BPF_HASH(pair_wait, struct cgw_pair_key, struct cgw_wait, CGW_MAX_PAIRS);
#endif

struct cpu_state {
    u64 last_ns;         /* this CPU's previous switch */
    u64 flushed_ns;      /* when `pend` last went into cpu_stats */
    u64 idle;            /* 1: the previous switch went to the idle task, and
                            flushed; nothing is pending here until the next */
    u64 cgid;            /* whose counts `pend` holds (0: nobody's) */
    u64 wait_ns;         /* run-queue latency of the task switched in ... */
    u64 wait_task;       /* ... which is this one (an opaque pointer) */
    u64 idle_task;       /* this CPU's idle task (an opaque pointer), once seen */
    struct cgw_cpu pend;
#ifdef CGW_BLAME
    u64 wait_culprit;    /* the cgroup the waiter took its CPU from (0: idle) */
    u64 wait_quota_ns;   /* the part of its wait its own quota imposed */
    u64 pairs_flushed_ns;
    struct cgw_pair pairs[CGW_PAIR_SLOTS];
#endif
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
    if ((u32)bpf_get_current_pid_tgid() == 0) {   /* the idle task: nobody's work */
        st->idle_task = bpf_get_current_task();
        return st;
    }
    if (last == 0)
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

/* After a switch: whether it went to the idle task. If so, hand on what is
 * pending unless it was handed on within CGW_FRESH_NS (FRESH_NS in
 * sources/cpu.py): nothing is charged on this CPU until its next switch, so
 * user space need not make it switch to read it up to date, and a task that
 * sleeps and wakes a thousand times a second costs no flush at each sleep. */
static __always_inline void note_idle(struct cpu_state *st, u64 now, int to_idle)
{
    st->idle = to_idle;
    if (to_idle && now - st->flushed_ns >= CGW_FRESH_NS)
        flush(st, now);
}

/* Task states: anything in the low byte means the task went to sleep (or
 * stopped, or died); none of it means it was still runnable: preempted. */
#define CGW_SLEEP_MASK 0xff

#ifdef CGW_RAW_SWITCH

#ifdef CGW_RUNQ
/* when a task became runnable, and on which CPU */
struct runnable {
    u64 ns;
    u64 cpu;
};
BPF_TABLE("lru_hash", u64, struct runnable, wakeup_ns, CGW_MAX_PIDS);

static __always_inline void mark_runnable(u64 task, u64 now)
{
    struct runnable r = {now, bpf_get_smp_processor_id()};
    struct runnable *ts = wakeup_ns.lookup(&task);
    if (ts)
        *ts = r;
    else
        wakeup_ns.update(&task, &r);
}

#ifdef CGW_REFILL
/* per CPU id: the last bandwidth refill that may have unthrottled queues on
 * that CPU; slot CGW_NCPUS: one that may have unthrottled every CPU's */
BPF_ARRAY(refill_ns, u64, CGW_NCPUS + 1);

static __always_inline void mark_refill(u32 slot)
{
    u64 *r = refill_ns.lookup(&slot);
    if (r)
        *r = bpf_ktime_get_ns();
}

TRACEPOINT_PROBE(timer, hrtimer_expire_entry)
{
    u64 fn = (u64)args->function;
    if (fn != CGW_PERIOD_FN && fn != CGW_SLACK_FN)
        return 0;
#ifdef CGW_CSD_FN
    mark_refill(bpf_get_smp_processor_id());
#else
    mark_refill(CGW_NCPUS);
#endif
    return 0;
}

#ifdef CGW_CSD_FN
/* raw: (smp_call_func_t func, call_single_data_t *csd) */
RAW_TRACEPOINT_PROBE(csd_function_entry)
{
    if (ctx->args[0] == CGW_CSD_FN)
        mark_refill(bpf_get_smp_processor_id());
    return 0;
}
#endif

static __always_inline u64 refill_of(u32 slot)
{
    u64 *r = refill_ns.lookup(&slot);
    return r ? *r : 0;
}

/* When the wait that began at `from` (the task became runnable on CPU
 * `cpu`) stopped being the quota's doing: the last refill on that CPU or
 * this one since `from`, else `from`. */
static __always_inline u64 wait_start(u64 from, u32 cpu, u64 now)
{
    u64 r = refill_of(cpu), here = refill_of(bpf_get_smp_processor_id());
    if (here > r)
        r = here;
#ifndef CGW_CSD_FN
    here = refill_of(CGW_NCPUS);
    if (here > r)
        r = here;
#endif
    return r > from && r < now ? r : from;
}
#endif

#ifdef CGW_BLAME
static __always_inline void flush_pairs(struct cpu_state *st, u64 now)
{
    st->pairs_flushed_ns = now;
#pragma unroll
    for (int i = 0; i < CGW_PAIR_SLOTS; i++) {
        struct cgw_pair *p = &st->pairs[i];
        if (!p->count)
            break;
        struct cgw_pair_key k = {p->victim, p->culprit};
        struct cgw_wait *w = pair_wait.lookup(&k);
        if (w) {
            __sync_fetch_and_add(&w->ns, p->ns);
            __sync_fetch_and_add(&w->count, p->count);
        } else {
            struct cgw_wait v = {p->ns, p->count};
            pair_wait.update(&k, &v);
        }
        p->count = 0;
    }
}

/* add a wait of `ns` by `victim` behind `culprit` to this CPU's slots */
static __always_inline void blame(struct cpu_state *st, u64 victim, u64 culprit, u64 ns, u64 now)
{
    if (now - st->pairs_flushed_ns >= CGW_FLUSH_NS)
        flush_pairs(st, now);
#pragma unroll
    for (int i = 0; i < CGW_PAIR_SLOTS; i++) {
        struct cgw_pair *p = &st->pairs[i];
        if (!p->count) {
            p->victim = victim;
            p->culprit = culprit;
            p->ns = ns;
            p->count = 1;
            return;
        }
        if (p->victim == victim && p->culprit == culprit) {
            p->ns += ns;
            p->count += 1;
            return;
        }
    }
    flush_pairs(st, now);
    st->pairs[0].victim = victim;
    st->pairs[0].culprit = culprit;
    st->pairs[0].ns = ns;
    st->pairs[0].count = 1;
}
#endif

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
    if (!st)
        return 0;
    u64 next = ctx->args[2];
#ifdef CGW_RUNQ
    u64 prev = ctx->args[1];
    /* the outgoing task waited st->wait_ns before it ran: charge it now that
     * its cgroup is the current one (account() just made st->cgid that) */
    if (st->wait_task == prev && prev != 0) {
        u64 ns = st->wait_ns;
        int slot = cgw_hist_slot(ns / 1000);
        if (slot < CGW_RUNQ_SLOTS)
            st->pend.runq_slots[slot] += 1;
        st->pend.runq_count += 1;
        st->pend.runq_sum_ns += ns;
#ifdef CGW_BLAME
        blame(st, st->cgid, st->wait_culprit, ns, now);
        if (st->wait_quota_ns)
            blame(st, st->cgid, CGW_QUOTA, st->wait_quota_ns, now);
#endif
    }
    st->wait_task = 0;
    if (involuntary && (u32)bpf_get_current_pid_tgid() != 0)   /* back on the run queue */
        mark_runnable(prev, now);
    struct runnable *ts = wakeup_ns.lookup(&next);
    if (ts && ts->ns) {
        u64 from = ts->ns;
#ifdef CGW_REFILL
        from = wait_start(from, (u32)ts->cpu, now);
#endif
        if (now > from) {
            st->wait_ns = now - from;
            st->wait_task = next;
#ifdef CGW_BLAME
            /* the task leaving is current: its cgroup held the CPU (none if idle) */
            st->wait_culprit = (u32)bpf_get_current_pid_tgid() ? bpf_get_current_cgroup_id() : 0;
            st->wait_quota_ns = from - ts->ns;
#endif
        }
        ts->ns = 0;
    }
#ifdef CGW_BLAME
    /* going idle: hand on the pairs too, unless they were just handed on */
    if (next == st->idle_task && next != 0 && st->pairs[0].count && now - st->pairs_flushed_ns >= CGW_FRESH_NS)
        flush_pairs(st, now);
#endif
#endif
    note_idle(st, now, next == st->idle_task && next != 0);
    return 0;
}

#else
TRACEPOINT_PROBE(sched, sched_switch)
{
    u64 now = bpf_ktime_get_ns();
    struct cpu_state *st = account(now, (args->prev_state & CGW_SLEEP_MASK) == 0);
    if (st)
        note_idle(st, now, args->next_pid == 0);
    return 0;
}
#endif
