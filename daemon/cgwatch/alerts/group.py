"""When a sink may send its next message: grouping, the rate limit, backoff.

Grouping lives in the outbox: a new row is due ``group_wait_s`` after it was
queued; when a sink's earliest row is due, the delivery loop takes every
pending row due within the next ``group_wait_s`` (so everything that arrived
since the first one), at most ``max_group`` of them, as one message. What the
rate limit holds back stays in the outbox and joins a later, bigger group.

The rate limit is a token bucket per sink: ``rate_limit_per_min`` messages a
minute on average, with a burst of :func:`burst_for` messages.

Retries back off exponentially with full jitter (Vector's default, AWS's
"Exponential Backoff And Jitter"): attempt n waits a uniform random time in
``[0, min(cap, base * 2**(n-1))]``.

Examples
--------
>>> b = TokenBucket(rate_per_min=60, burst=2, now=0.0)
>>> b.ready_at(0.0), b.take(0.0), b.take(0.0), b.ready_at(0.0)
(0.0, True, True, 1.0)
>>> import random
>>> 0 <= full_jitter(3, base=1.0, cap=300.0, rng=random.Random(1)) <= 4.0
True
"""

from __future__ import annotations

import random


def burst_for(rate_per_min: float) -> float:
    """The bucket's size: ten seconds' worth of messages, at least one.

    >>> burst_for(30), burst_for(600), burst_for(1)
    (5.0, 100.0, 1.0)
    """
    return max(1.0, rate_per_min / 6.0)


class TokenBucket:
    """``rate_per_min`` tokens a minute, at most ``burst`` saved up; one token per message."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate_per_min: float, burst: float | None = None, now: float = 0.0) -> None:
        if rate_per_min <= 0:
            raise ValueError(f"rate_limit_per_min must be positive, not {rate_per_min}")
        self.rate = rate_per_min / 60.0
        self.burst = burst if burst is not None else burst_for(rate_per_min)
        self.tokens = self.burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def ready_at(self, now: float) -> float:
        """When the next message may go (``now`` if a token is there)."""
        self._refill(now)
        if self.tokens >= 1.0:
            return now
        return now + (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> bool:
        """Spend a token if there is one."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def full_jitter(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
    return rng.uniform(0.0, min(cap, base * 2.0 ** max(0, attempt - 1)))
