/* proc.bpf.c: process lifecycle per cgroup, and the rare events worth a line.
 *
 * Counts of forks, execs and exits live in a per-CPU hash keyed by cgroup id.
 * exec and abnormal exits (non-zero code, fatal signal) also go to user space
 * through the ring buffer; a full ring buffer is counted, never silent.
 *
 * The exit code is not an argument of sched_process_exit, so it is taken
 * where it is one and kept per process (exit_info, by tgid) until it ends:
 *
 * - exit_group(code) records the code, 0 included, over anything recorded
 *   before it: exit_group is final.
 * - a fatal signal delivered with its default action is recorded only if
 *   nothing is yet. Once a process is dying, the kernel SIGKILLs its other
 *   threads (zap_other_threads at exit_group and exec, zap_process at a core
 *   dump) and each of them passes signal_deliver(SIGKILL) on its way out:
 *   the first record must win over those.
 * - a fatal-by-default signal sent to a process without a handler is turned
 *   by complete_signal() into SIGKILL for every thread, so signal_deliver
 *   shows SIGKILL for `kill -TERM` too. signal_generate (sender's context)
 *   still has the real one: the last fatal signal generated per target pid is
 *   kept (generated), and a delivered SIGKILL is recorded as that signal.
 *   A SIGKILL that no one generated for the thread or its process is the
 *   kernel ending the siblings of a thread that exited, exec'd or crashed,
 *   and is not recorded at all.
 * - exec clears the record: de_thread's SIGKILLs of the siblings of a thread
 *   that exec'd were no death of the process.
 *
 * When the process ends (the last thread, where sched_process_exit says
 * group_dead; else the leader), code 0 and no signal is a normal exit; any
 * other outcome is counted in exits_nonzero and sent as an exit event.
 *
 *   -DCGW_HAVE_EXIT_GROUP   syscalls:sys_enter_exit_group exists (exit codes)
 *   -DCGW_HAVE_SIGNAL       signal:signal_deliver exists (fatal signals)
 *   -DCGW_HAVE_SIGNAL_GENERATE  signal:signal_generate exists (the signal a
 *                           group exit's SIGKILL stands for)
 *   -DCGW_HAVE_GROUP_DEAD   sched_process_exit has group_dead (newer kernels)
 *   -DCGW_RINGBUF_PAGES=N   ring buffer size, in pages (power of two)
 *   -DCGW_EXEC_EVENTS=0     count execs but send no exec events
 */
#include "cgwatch.h"

#ifndef CGW_RINGBUF_PAGES
#define CGW_RINGBUF_PAGES 64
#endif
#ifndef CGW_EXEC_EVENTS
#define CGW_EXEC_EVENTS 1
#endif

struct exit_info {
    s32 code;
    s32 sig;
};

BPF_PERCPU_HASH(proc_stats, u64, struct cgw_proc, CGW_MAX_CGROUPS);
BPF_TABLE("lru_hash", u32, struct exit_info, exit_info, CGW_MAX_PIDS);
#if defined(CGW_HAVE_SIGNAL) && defined(CGW_HAVE_SIGNAL_GENERATE)
#define CGW_TRACK_GENERATED 1
/* target pid (thread id) -> last fatal-by-default signal generated for it */
BPF_TABLE("lru_hash", u32, s32, generated, CGW_MAX_PIDS);
#endif
BPF_RINGBUF_OUTPUT(proc_events, CGW_RINGBUF_PAGES);
/* index 0: records the ring buffer had no room for */
BPF_PERCPU_ARRAY(proc_lost, u64, 1);

static __always_inline struct cgw_proc *proc_stats_of(u64 *cgid)
{
    *cgid = bpf_get_current_cgroup_id();
    struct cgw_proc *p = proc_stats.lookup(cgid);
    if (p)
        return p;
    struct cgw_proc init = {};
    proc_stats.update(cgid, &init);
    return proc_stats.lookup(cgid);
}

static __always_inline struct cgw_event *reserve(u32 kind, u64 cgid)
{
    struct cgw_event *e = proc_events.ringbuf_reserve(sizeof(struct cgw_event));
    if (!e) {                /* counted, so user space can say so */
        int zero = 0;
        proc_lost.increment(zero);
        return 0;
    }
    e->kind = kind;
    e->cgroup_id = cgid;
    e->ts_ns = bpf_ktime_get_ns();
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->code = 0;
    e->sig = 0;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    return e;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u64 cgid;
    struct cgw_proc *p = proc_stats_of(&cgid);
    if (p)
        p->forks += 1;
    u32 child = args->child_pid;     /* a reused pid starts with no record */
    exit_info.delete(&child);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u64 cgid;
    struct cgw_proc *p = proc_stats_of(&cgid);
    if (p)
        p->execs += 1;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    exit_info.delete(&tgid);         /* de_thread's SIGKILLs were no death */
#if CGW_EXEC_EVENTS
    struct cgw_event *e = reserve(CGW_EV_EXEC, cgid);
    if (!e)
        return 0;
    e->path[0] = 0;
    bpf_probe_read_kernel_str(&e->path, sizeof(e->path),
                              (void *)args + (args->data_loc_filename & 0xFFFF));
    proc_events.ringbuf_submit(e, 0);
#endif
    return 0;
}

#ifdef CGW_HAVE_EXIT_GROUP
TRACEPOINT_PROBE(syscalls, sys_enter_exit_group)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct exit_info info = {.code = (s32)(args->error_code & 0xff), .sig = 0};
    exit_info.update(&tgid, &info);  /* final: over any signal before it */
    return 0;
}
#endif

#ifdef CGW_HAVE_SIGNAL
/* Signals whose default action ends the process (see signal(7)). */
static __always_inline int fatal_by_default(int sig)
{
    switch (sig) {
    case 17: /* SIGCHLD */
    case 18: /* SIGCONT */
    case 19: /* SIGSTOP */
    case 20: /* SIGTSTP */
    case 21: /* SIGTTIN */
    case 22: /* SIGTTOU */
    case 23: /* SIGURG */
    case 28: /* SIGWINCH */
        return 0;
    }
    return sig > 0 && sig < 32;
}

#ifdef CGW_TRACK_GENERATED
TRACEPOINT_PROBE(signal, signal_generate)
{
    /* the sender's context; pid is the target thread's, result 0 = queued */
    if (args->result != 0 || !fatal_by_default(args->sig))
        return 0;
    u32 target = args->pid;
    s32 sig = args->sig;
    generated.update(&target, &sig);
    return 0;
}

/* A handled signal is no longer a pending death. */
static __always_inline void forget(u32 pid, int sig)
{
    s32 *g = generated.lookup(&pid);
    if (g && *g == sig)
        generated.delete(&pid);
}
#endif

TRACEPOINT_PROBE(signal, signal_deliver)
{
    /* delivered in the receiver's context; SIG_DFL is a null handler */
    if (!fatal_by_default(args->sig))
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    if (args->sa_handler != 0) {
#ifdef CGW_TRACK_GENERATED
        forget(tid, args->sig);
        forget(tgid, args->sig);
#endif
        return 0;
    }
    struct exit_info info = {.code = 0, .sig = args->sig};
#ifdef CGW_TRACK_GENERATED
    if (info.sig == 9) {             /* SIGKILL: what was it sent as? */
        s32 *g = generated.lookup(&tid);
        if (!g)
            g = generated.lookup(&tgid);
        if (!g)                      /* sent by no one: a sibling's end */
            return 0;
        info.sig = *g;
    }
#endif
    exit_info.insert(&tgid, &info);  /* BPF_NOEXIST: the first one wins */
    return 0;
}
#endif

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
#ifdef CGW_TRACK_GENERATED
    generated.delete(&tid);
#endif
#ifdef CGW_HAVE_GROUP_DEAD
    if (!args->group_dead)           /* one exit per process: its last thread's */
        return 0;
#else
    if (tid != tgid)                 /* one exit per process: its leader's */
        return 0;
#endif
    u64 cgid;
    struct cgw_proc *p = proc_stats_of(&cgid);
    if (p)
        p->exits += 1;
    struct exit_info *info = exit_info.lookup(&tgid);
    if (!info)
        return 0;
    struct exit_info copy = *info;
    exit_info.delete(&tgid);
    if (copy.code == 0 && copy.sig == 0)   /* exit(0): a normal end */
        return 0;
    if (p)
        p->exits_nonzero += 1;
    struct cgw_event *e = reserve(CGW_EV_EXIT, cgid);
    if (!e)
        return 0;
    e->code = copy.code;
    e->sig = copy.sig;
    e->path[0] = 0;
    proc_events.ringbuf_submit(e, 0);
    return 0;
}
