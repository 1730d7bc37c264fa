/* Shared between the BPF programs and their Python readers.
 *
 * Every map is keyed by the cgroup2 id of the task that did the work
 * (bpf_get_current_cgroup_id()); every value only grows, and user space turns
 * the difference between two reads into a rate. Knobs arrive as -D flags.
 *
 * The loader may compile several programs as one unit (sources/loader.py,
 * merge()), where this header is read once, at the first program's turn:
 * nothing here may depend on a program's own -D flags, and every map, function
 * and struct a program declares carries a name no other program uses. */
#ifndef CGWATCH_H
#define CGWATCH_H

#ifndef CGW_MAX_CGROUPS
#define CGW_MAX_CGROUPS 10240
#endif
#ifndef CGW_MAX_PIDS
#define CGW_MAX_PIDS 65536
#endif
/* log2 histogram slots of latencies in microseconds (run-queue, block I/O):
 * slot i holds latencies in [2^i, 2^(i+1)) us, slot 0 also holds < 1 us. */
#define CGW_HIST_SLOTS 26
#define CGW_RUNQ_SLOTS CGW_HIST_SLOTS
#define CGW_COMM_LEN 16
#define CGW_PATH_LEN 128

/* the histogram slot of a latency of `us` microseconds */
static __always_inline int cgw_hist_slot(u64 us)
{
    int slot = 0;
#pragma unroll
    for (int i = 0; i < CGW_HIST_SLOTS - 1; i++) {
        if (us >= 2) {
            us >>= 1;
            slot++;
        }
    }
    return slot;
}

/* proc.bpf.c */
struct cgw_proc {
    u64 forks;
    u64 execs;
    u64 exits;
    u64 exits_nonzero;
};

/* mem.bpf.c */
struct cgw_mem {
    u64 faults;
};

/* net.bpf.c */
struct cgw_net {
    u64 rx_bytes;
    u64 tx_bytes;
    u64 retransmits;
};

/* ring-buffer records: rare events only */
enum cgw_event_kind {
    CGW_EV_EXEC = 1,
    CGW_EV_EXIT = 2,
    CGW_EV_OOM = 3,
};

struct cgw_event {
    u64 cgroup_id;
    u64 ts_ns;          /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
    u32 kind;
    u32 pid;            /* thread group id, as users know it */
    s32 code;           /* exit: exit code; 0 when killed by a signal */
    s32 sig;            /* exit: fatal signal, 0 for a plain exit */
    char comm[CGW_COMM_LEN];
    char path[CGW_PATH_LEN]; /* exec: filename */
};

#endif
