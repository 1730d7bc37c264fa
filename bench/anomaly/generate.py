"""Seeded, labelled corpus of synthetic container metrics for the anomaly benchmark.

``make_corpus(seed, n_series)`` returns :class:`Series` whose values look like
what cgwatch samples from a container, with 0-3 injected anomalies each and a
labelled window per anomaly. Everything is a function of ``(seed, index)``:
series ``i`` of a corpus is the same whatever ``n_series`` is, so a corpus of
10 is the first 10 series of a corpus of 60.

Metric families (see docs/metrics.md for the real metrics):

``cpu.usage_cores``
    0..limit; daily and hourly cycles, correlated noise, short random bursts
    and, in some series, *benign* periodic batch jobs (cron-like plateaus every
    1 h, 6 h or 24 h): they are not labelled and a detector that alerts on them
    pays for false alarms.
``mem.usage_bytes``
    slowly varying level (small daily cycle) with a GC sawtooth; page-rounded.
``proc.execs``
    execs/s: mostly 0, Poisson background plus cron bursts.
``net.rx_bytes``
    bytes/s: daily cycle with heavy-tailed (log-normal and Pareto) noise.
``cpu.runq_latency_p99_ms``
    small log-normal level that follows the load cycle, with heavy tails.

Sampling intervals are 1 s, 10 s or 60 s; lengths 2-12 h at 1 s, 6-36 h at
10 s and 12-72 h at 60 s (so a series has at most ~43k samples).

Anomaly kinds (which apply depends on the metric, see ``KINDS``):

``spike``          1-5 samples far above the local level.
``level_shift``    the level multiplies (x1.6-3 or x0.25-0.6) for a while, then returns.
``leak``           (memory) a linear ramp of +30-150 % of the level, ending in an
                   OOM kill: one or two samples at 0, then back to the normal level.
``variance_change`` noise several times larger around the same level.
``crash_loop``     periodic drops to 0 and restarts (period >= 4 samples), with a
                   start-up burst (cpu, execs) or a refill from low (memory).
``stuck_at_zero``  flat 0 (frozen or dead container still being sampled).

Labelled windows (a deliberate choice, documented here and in docs/anomaly.md):
a window starts at the anomaly's onset (the first anomalous sample; nothing
before it, since a causal detector cannot know of it earlier) and ends
``tail`` after the anomaly's last anomalous sample, with
``tail = max(5 samples, 300 s)``: enough for a detector that needs a few
samples of evidence to still be on time for a one-sample spike, and it covers
the return to normal at the end of a level shift or a leak's OOM drop. Onsets
lie in the last 80 % of a series (the first 20 % are clean, for warm-up) and
windows never overlap. Every fifth series (index 4, 9, ...) has no anomaly, so
false alarms per day are measured on clean data too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

#: 2026-01-01T00:00:00Z; every series starts on the day after, at a random time.
EPOCH0 = 1_767_225_600.0
DAY = 86_400.0
HOUR = 3_600.0

METRICS = ("cpu.usage_cores", "mem.usage_bytes", "proc.execs", "net.rx_bytes", "cpu.runq_latency_p99_ms")
METRIC_P = (0.3, 0.25, 0.15, 0.15, 0.15)
INTERVALS = (1.0, 10.0, 60.0)
INTERVAL_P = (0.25, 0.35, 0.4)
#: (min, max) duration in seconds for each sampling interval
LENGTHS = {1.0: (2 * HOUR, 12 * HOUR), 10.0: (6 * HOUR, 36 * HOUR), 60.0: (12 * HOUR, 72 * HOUR)}

#: anomaly kinds that make sense for each metric, with their relative weights
KINDS: dict[str, dict[str, float]] = {
    "cpu.usage_cores": {"spike": 1, "level_shift": 1, "variance_change": 1, "crash_loop": 1, "stuck_at_zero": 1},
    "mem.usage_bytes": {"spike": 1, "level_shift": 1, "leak": 3, "variance_change": 0.5, "crash_loop": 1,
                        "stuck_at_zero": 1},
    "proc.execs": {"spike": 1, "level_shift": 1, "crash_loop": 1},
    "net.rx_bytes": {"spike": 1, "level_shift": 1, "variance_change": 1, "crash_loop": 1, "stuck_at_zero": 1},
    "cpu.runq_latency_p99_ms": {"spike": 1, "level_shift": 1, "variance_change": 1, "crash_loop": 0.5,
                                "stuck_at_zero": 0.5},
}
ALL_KINDS = ("spike", "level_shift", "leak", "variance_change", "crash_loop", "stuck_at_zero")


@dataclass(frozen=True)
class Anomaly:
    """One injected anomaly: samples ``[i0, i1)`` are anomalous."""

    kind: str
    i0: int
    i1: int
    onset_ts: float
    end_ts: float
    """timestamp of the last anomalous sample"""
    params: dict[str, float] = field(default_factory=dict, compare=False)


@dataclass
class Series:
    """One metric of one synthetic container, with its labels.

    ``windows[k]`` is the labelled window of the anomaly ``kinds[k]``
    (``anomalies[k]`` has the detail); windows are sorted and disjoint.
    """

    name: str
    metric: str
    interval_s: float
    ts: np.ndarray
    values: np.ndarray
    windows: list[tuple[float, float]]
    kinds: list[str]
    anomalies: list[Anomaly] = field(default_factory=list)
    meta: dict[str, float] = field(default_factory=dict)
    base: np.ndarray | None = field(default=None, repr=False)
    """the same series before the anomalies were injected"""

    @property
    def duration_s(self) -> float:
        """Time covered, counting the last sample's interval."""
        return float(self.ts[-1] - self.ts[0] + self.interval_s) if len(self.ts) else 0.0


# --------------------------------------------------------------------------- helpers


def _daily(ts: np.ndarray, phase: float) -> np.ndarray:
    return np.sin(2 * np.pi * ((ts % DAY) / DAY - phase))


def _hourly(ts: np.ndarray, phase: float) -> np.ndarray:
    return np.sin(2 * np.pi * ((ts % HOUR) / HOUR - phase))


def _ar_noise(rng: np.random.Generator, n: int, interval: float, corr_s: float) -> np.ndarray:
    """Unit-variance noise correlated over about ``corr_s`` seconds (an
    exponential moving-average kernel, vectorised)."""
    white = rng.standard_normal(n)
    tau = corr_s / interval
    if tau < 0.3:
        return white
    k = np.exp(-np.arange(int(min(5 * tau, 200)) + 1) / tau)
    out = np.convolve(white, k, mode="full")[:n]
    return out / np.sqrt(np.sum(k * k))


def _events(rng: np.random.Generator, t0: float, t1: float, rate_per_s: float) -> np.ndarray:
    n = rng.poisson(max(rate_per_s * (t1 - t0), 0.0))
    return np.sort(rng.uniform(t0, t1, n))


def _add_plateaus(ts: np.ndarray, out: np.ndarray, starts: np.ndarray, durs: np.ndarray, amps: np.ndarray,
                  interval: float) -> None:
    """Add each plateau (start, duration, amplitude) to the samples it covers,
    pro rata for samples it covers only partly."""
    t0 = ts[0]
    n = len(ts)
    for s, d, a in zip(starts, durs, amps):
        i0 = int((s - t0) // interval)
        i1 = int((s + d - t0) // interval) + 1
        for i in range(max(i0, 0), min(i1, n)):
            lo, hi = max(ts[i], s), min(ts[i] + interval, s + d)
            if hi > lo:
                out[i] += a * (hi - lo) / interval


# --------------------------------------------------------------------------- base shapes


def _cpu(rng: np.random.Generator, ts: np.ndarray, interval: float) -> tuple[np.ndarray, dict[str, float]]:
    limit = float(rng.choice([0.5, 1.0, 2.0, 4.0, 8.0]))
    util = rng.uniform(0.05, 0.45)
    base = limit * util * (1 + rng.uniform(0.15, 0.5) * _daily(ts, rng.uniform()) +
                           rng.uniform(0.0, 0.15) * _hourly(ts, rng.uniform()))
    noise = rng.uniform(0.03, 0.12) * (1 / interval) ** 0.2
    v = base * (1 + noise * _ar_noise(rng, len(ts), interval, rng.uniform(2, 30)))
    # short random bursts (request storms, GC): 0.5-4 per hour, 5-120 s
    bs = _events(rng, ts[0], ts[-1], rng.uniform(0.5, 4) / HOUR)
    _add_plateaus(ts, v, bs, rng.uniform(5, 120, len(bs)), rng.uniform(0.1, 0.6, len(bs)) * limit * (1 - util),
                  interval)
    batch = 0.0
    if rng.uniform() < 0.4:  # benign periodic batch job: NOT an anomaly
        period = float(rng.choice([HOUR, 6 * HOUR, DAY]))
        dur = rng.uniform(120, 1200)
        off = rng.uniform(0, period)
        starts = np.arange(ts[0] - period + off, ts[-1], period)
        _add_plateaus(ts, v, starts, np.full(len(starts), dur),
                      np.full(len(starts), rng.uniform(0.2, 0.5) * limit), interval)
        batch = period
    return np.clip(v, 0.0, limit), {"limit": limit, "batch_period_s": batch}


def _mem(rng: np.random.Generator, ts: np.ndarray, interval: float) -> tuple[np.ndarray, dict[str, float]]:
    level = 10 ** rng.uniform(7.7, 9.6)
    gc_period = rng.uniform(60, 900)
    gc_amp = rng.uniform(0.03, 0.2)
    saw = ((ts + rng.uniform(0, gc_period)) % gc_period) / gc_period
    slow = rng.uniform(0.02, 0.1) * _daily(ts, rng.uniform()) + 0.02 * _ar_noise(rng, len(ts), interval, 1800)
    v = level * (1 + slow + gc_amp * saw + 0.003 * rng.standard_normal(len(ts)))
    return np.round(np.maximum(v, 0) / 4096) * 4096, {"level": level, "gc_period_s": gc_period}


def _execs(rng: np.random.Generator, ts: np.ndarray, interval: float) -> tuple[np.ndarray, dict[str, float]]:
    rate = 10 ** rng.uniform(-3.0, -1.3) * (1 + 0.5 * _daily(ts, rng.uniform()))
    counts = rng.poisson(rate * interval).astype(float)
    cron = float(rng.choice([60.0, 300.0, HOUR]))
    per = rng.integers(3, 40)
    starts = np.arange(ts[0] + rng.uniform(0, cron), ts[-1], cron)
    idx = ((starts - ts[0]) // interval).astype(int)
    np.add.at(counts, idx[idx < len(ts)], rng.poisson(per, np.count_nonzero(idx < len(ts))))
    # occasional unscheduled bursts (deploy scripts, health checks)
    ev = _events(rng, ts[0], ts[-1], rng.uniform(0.2, 2) / HOUR)
    idx = ((ev - ts[0]) // interval).astype(int)
    np.add.at(counts, idx, rng.poisson(per, len(idx)))
    return counts / interval, {"cron_period_s": cron, "cron_execs": float(per)}


def _net(rng: np.random.Generator, ts: np.ndarray, interval: float) -> tuple[np.ndarray, dict[str, float]]:
    level = 10 ** rng.uniform(3, 7)
    sigma = rng.uniform(0.2, 0.6) * (1 / interval) ** 0.25
    v = level * (1 + rng.uniform(0.3, 0.8) * _daily(ts, rng.uniform()))
    v = v * np.exp(sigma * _ar_noise(rng, len(ts), interval, rng.uniform(1, 20)) - sigma**2 / 2)
    heavy = rng.uniform(size=len(ts)) < 0.01
    v[heavy] *= 1 + rng.pareto(1.5, np.count_nonzero(heavy))
    return np.maximum(v, 0), {"level": level}


def _runq(rng: np.random.Generator, ts: np.ndarray, interval: float) -> tuple[np.ndarray, dict[str, float]]:
    level = 10 ** rng.uniform(-1.3, 0.5)
    load = 1 + rng.uniform(0.1, 0.5) * _daily(ts, rng.uniform())
    sigma = rng.uniform(0.15, 0.4)
    v = level * load * np.exp(sigma * _ar_noise(rng, len(ts), interval, 5) - sigma**2 / 2)
    heavy = rng.uniform(size=len(ts)) < 0.005
    v[heavy] *= rng.uniform(2, 6, np.count_nonzero(heavy))
    return v, {"level": level}


BASES: dict[str, Callable[[np.random.Generator, np.ndarray, float], tuple[np.ndarray, dict[str, float]]]] = {
    "cpu.usage_cores": _cpu,
    "mem.usage_bytes": _mem,
    "proc.execs": _execs,
    "net.rx_bytes": _net,
    "cpu.runq_latency_p99_ms": _runq,
}


# --------------------------------------------------------------------------- anomalies


def _stats(v: np.ndarray) -> tuple[float, float]:
    """(level, short-term noise sd), robust."""
    level = float(np.median(v))
    d = np.diff(v)
    noise = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2)
    if noise <= 0:
        noise = float(np.std(v)) or max(abs(level), 1.0) * 0.01
    return level, noise


def _inject(rng: np.random.Generator, kind: str, metric: str, ts: np.ndarray, v: np.ndarray, i0: int, i1: int,
            interval: float, meta: dict[str, float]) -> tuple[int, dict[str, float]]:
    """Make samples ``[i0, i1)`` anomalous in place; return the index one past
    the last anomalous sample (a leak's OOM drop may add samples) and the
    parameters used."""
    seg = slice(i0, i1)
    level, noise = _stats(v[: max(i0, 10)])
    limit = meta.get("limit", np.inf)
    if kind == "spike":
        if metric == "proc.execs":
            v[seg] = rng.uniform(20, 200)
        else:
            scale = max(rng.uniform(6, 15) * noise, rng.uniform(1.5, 4) * max(level, 0))
            v[seg] = np.minimum(np.maximum(v[seg], level) + scale, limit)
            if metric == "mem.usage_bytes":
                v[seg] = np.round(v[seg] / 4096) * 4096
        return i1, {}
    if kind == "level_shift":
        if metric == "proc.execs":
            extra = rng.uniform(0.3, 3.0)
            v[seg] += rng.poisson(extra * interval, i1 - i0) / interval
            return i1, {"extra_rate": extra}
        up = metric == "mem.usage_bytes" or rng.uniform() < 0.7 or v[seg].min() <= 0
        f = rng.uniform(1.6, 3.0) if up else rng.uniform(0.25, 0.6)
        v[seg] = np.minimum(v[seg] * f, limit)
        return i1, {"factor": f}
    if kind == "leak":
        grow = rng.uniform(0.3, 1.5) * level
        v[seg] += np.linspace(0, grow, i1 - i0)
        v[seg] = np.round(v[seg] / 4096) * 4096
        drop = min(int(rng.integers(1, 3)), len(v) - i1)
        v[i1:i1 + drop] = 0.0  # OOM kill, then the container restarts at its normal level
        return i1 + drop, {"growth_bytes": grow}
    if kind == "variance_change":
        k = rng.uniform(4, 10)
        if metric in ("net.rx_bytes", "cpu.runq_latency_p99_ms"):
            s = rng.uniform(0.8, 1.5)
            v[seg] *= np.exp(s * rng.standard_normal(i1 - i0) - s * s / 2)
        else:
            v[seg] += k * noise * rng.standard_normal(i1 - i0)
        v[seg] = np.clip(v[seg], 0, limit)
        if metric == "mem.usage_bytes":
            v[seg] = np.round(v[seg] / 4096) * 4096
        return i1, {"factor": k}
    if kind == "crash_loop":
        period = max(4 * interval, rng.uniform(30, 300))
        down_frac = rng.uniform(0.3, 0.7)
        phase = ((ts[seg] - ts[i0]) % period) / period
        down = phase < down_frac
        if not down.any():
            down[0] = True
        up_start = np.zeros(i1 - i0, dtype=bool)
        up_start[1:] = down[:-1] & ~down[1:]
        s = v[seg].copy()
        if metric == "cpu.usage_cores":
            s[up_start] = np.minimum(s[up_start] + rng.uniform(0.5, 1.0) * limit, limit)  # JIT, init
        elif metric == "mem.usage_bytes":
            refill = np.clip((phase - down_frac) / max(1 - down_frac, 1e-9), 0, 1)
            s = np.round(s * (0.2 + 0.8 * refill) / 4096) * 4096
        elif metric == "proc.execs":
            s[up_start] += rng.uniform(5, 50) / interval  # entrypoint scripts
        s[down] = 0.0
        v[seg] = s
        return i1, {"period_s": period, "down_frac": down_frac}
    if kind == "stuck_at_zero":
        v[seg] = 0.0
        return i1, {}
    raise ValueError(f"unknown anomaly kind {kind!r}")


#: (min, max) anomaly duration in seconds, and a minimum in samples
DURATIONS = {
    "spike": (0.0, 0.0, 1),
    "level_shift": (30 * 60, 4 * HOUR, 20),
    "leak": (45 * 60, 8 * HOUR, 30),
    "variance_change": (30 * 60, 4 * HOUR, 20),
    "crash_loop": (10 * 60, 2 * HOUR, 12),
    "stuck_at_zero": (10 * 60, 3 * HOUR, 10),
}


def window_tail(interval_s: float) -> float:
    """How far a labelled window extends past the anomaly's last sample."""
    return max(5 * interval_s, 300.0)


def make_series(seed: int, index: int) -> Series:
    """Series number ``index`` of the corpus of ``seed``."""
    rng = np.random.default_rng([seed, index])
    metric = str(rng.choice(METRICS, p=METRIC_P))
    interval = float(rng.choice(INTERVALS, p=INTERVAL_P))
    lo, hi = LENGTHS[interval]
    n = int(rng.uniform(lo, hi) // interval)
    t0 = EPOCH0 + DAY + float(rng.integers(0, int(DAY // interval))) * interval
    ts = t0 + np.arange(n) * interval
    values, meta = BASES[metric](rng, ts, interval)
    values = values.astype(float)
    base = values.copy()

    n_anom = 0 if index % 5 == 4 else int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
    names = list(KINDS[metric])
    w = np.array([KINDS[metric][k] for k in names], dtype=float)
    tail_n = int(np.ceil(window_tail(interval) / interval))
    lo_i, hi_i = int(0.2 * n), n - 1
    slot = (hi_i - lo_i) // max(n_anom, 1)
    anomalies: list[Anomaly] = []
    windows: list[tuple[float, float]] = []
    for k in range(n_anom):
        kind = str(rng.choice(names, p=w / w.sum()))
        s0, s1 = lo_i + k * slot, lo_i + (k + 1) * slot
        room = s1 - s0 - tail_n - 3  # room for the anomaly itself (3 = leak's OOM drop + margin)
        dmin_s, dmax_s, dmin_n = DURATIONS[kind]
        if kind == "spike":
            dur = int(rng.integers(1, 6))
        else:
            dur = int(rng.uniform(dmin_s, dmax_s) / interval)
            dur = max(dur, dmin_n)
            dur = min(dur, int(0.6 * room))
        if dur < 1 or room - dur < 1:
            continue
        i0 = s0 + int(rng.integers(0, room - dur + 1))
        i1 = i0 + dur
        end, params = _inject(rng, kind, metric, ts, values, i0, i1, interval, meta)
        last = ts[end - 1]
        anomalies.append(Anomaly(kind, i0, end, float(ts[i0]), float(last), params))
        windows.append((float(ts[i0]), float(min(last + window_tail(interval), ts[-1]))))
    name = f"s{seed}-{index:03d}-{metric}-{int(interval)}s"
    return Series(name, metric, interval, ts, values, windows, [a.kind for a in anomalies], anomalies, meta, base)


def make_corpus(seed: int, n_series: int = 60) -> list[Series]:
    """``n_series`` labelled series, fully determined by ``seed``."""
    return [make_series(seed, i) for i in range(n_series)]


def describe(corpus: list[Series]) -> dict[str, object]:
    """Counts for a report header: series, samples, series-days, windows per kind."""
    kinds = {k: 0 for k in ALL_KINDS}
    for s in corpus:
        for k in s.kinds:
            kinds[k] += 1
    return {
        "series": len(corpus),
        "clean_series": sum(1 for s in corpus if not s.windows),
        "samples": int(sum(len(s.ts) for s in corpus)),
        "series_days": round(sum(s.duration_s for s in corpus) / DAY, 3),
        "windows": int(sum(kinds.values())),
        "windows_by_kind": kinds,
    }
