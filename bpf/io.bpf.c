/* io.bpf.c: block I/O requests per cgroup: how many completed, and how long
 * the device took with each (issue to completion).
 *
 * A request is charged to the cgroup of the task that queued its first bio:
 * block:block_bio_queue fires in the submitter's context, so
 * bpf_get_current_cgroup_id() names it; the request is known from then on by
 * its device and first sector (a bio merged in front of it is queued by the
 * same path, with its own sector, so the request's is always known).
 * block:block_rq_issue stamps when the device got the request, and
 * block:block_rq_complete (in interrupt context) charges the latency. Only
 * tracepoint arguments are read.
 *
 * Writes that the page cache flushes later are queued by the kernel's
 * writeback workers, not by the container: they count in `host`. Reads that
 * miss the cache, direct I/O and fsync'd writes queued by the task count in
 * its container.
 *
 *   -DCGW_IO_BLOCK        block_bio_queue, block_rq_issue and block_rq_complete
 *                         all exist (else nothing is traced)
 *   -DCGW_IO_INFLIGHT=N   requests followed at once (default 65536; the
 *                         oldest is forgotten when full, so a lost
 *                         completion costs nothing for ever)
 */
#include "cgwatch.h"

#ifndef CGW_IO_INFLIGHT
#define CGW_IO_INFLIGHT 65536
#endif
#define CGW_IO_SLOTS CGW_HIST_SLOTS

/* One per cgroup, per CPU: completed requests, their summed latency, and a
 * log2 histogram of it in microseconds (cgw_hist_slot), as cpu.bpf.c keeps
 * run-queue latency. */
struct cgw_io {
    u64 ops;
    u64 lat_sum_ns;
    u64 lat_slots[CGW_IO_SLOTS];
};

struct io_key {
    u64 sector;
    u32 dev;
    u32 pad;             /* always 0: the key is compared byte by byte */
};

struct io_req {
    u64 cgid;            /* who queued it */
    u64 issued_ns;       /* 0 until the device has it */
};

BPF_PERCPU_HASH(io_stats, u64, struct cgw_io, CGW_MAX_CGROUPS);
BPF_TABLE("lru_hash", struct io_key, struct io_req, io_inflight, CGW_IO_INFLIGHT);

static __always_inline struct cgw_io *io_stats_of(u64 cgid)
{
    struct cgw_io *s = io_stats.lookup(&cgid);
    if (s)
        return s;
    struct cgw_io init = {};
    io_stats.update(&cgid, &init);
    return io_stats.lookup(&cgid);
}

#ifdef CGW_IO_BLOCK
TRACEPOINT_PROBE(block, block_bio_queue)
{
    if (args->nr_sector == 0)       /* a flush or other empty bio: no data moved */
        return 0;
    struct io_key k = {.sector = args->sector, .dev = args->dev, .pad = 0};
    struct io_req r = {.cgid = bpf_get_current_cgroup_id(), .issued_ns = 0};
    io_inflight.update(&k, &r);
    return 0;
}

TRACEPOINT_PROBE(block, block_rq_issue)
{
    if (args->nr_sector == 0)
        return 0;
    struct io_key k = {.sector = args->sector, .dev = args->dev, .pad = 0};
    struct io_req *r = io_inflight.lookup(&k);
    if (r)                          /* a requeued request is timed from its last issue */
        r->issued_ns = bpf_ktime_get_ns();
    return 0;
}

TRACEPOINT_PROBE(block, block_rq_complete)
{
    if (args->nr_sector == 0)
        return 0;
    struct io_key k = {.sector = args->sector, .dev = args->dev, .pad = 0};
    struct io_req *r = io_inflight.lookup(&k);
    if (!r)
        return 0;
    u64 cgid = r->cgid, issued = r->issued_ns, now = bpf_ktime_get_ns();
    io_inflight.delete(&k);
    if (!issued || now <= issued)
        return 0;
    struct cgw_io *s = io_stats_of(cgid);
    if (!s)
        return 0;
    u64 ns = now - issued;
    int slot = cgw_hist_slot(ns / 1000);
    if (slot < CGW_IO_SLOTS)
        s->lat_slots[slot] += 1;
    s->ops += 1;
    s->lat_sum_ns += ns;
    return 0;
}
#endif
