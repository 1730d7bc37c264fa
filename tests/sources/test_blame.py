"""From the kernel's {victim, culprit} wait counters to shares and ``neighbours`` events
(sources/blame.py). The kernel side, with real containers, is tests/runtimes/test_neighbours.py."""

from __future__ import annotations

from cgwatch.model import Container
from cgwatch.sources.blame import EVERY_S, METRIC, MIN_WAIT_MS, QUOTA, TELL_EVERY_S, WINDOW, Blame

WEB = Container(id="w" * 64, name="web-1", runtime="docker")
BATCH = Container(id="b" * 64, name="batch-7", runtime="docker")
HOST = Container(id="host", name="host", runtime="host")
#: cgroup ids: web has two (a container of several cgroups), batch one, the host one
IDS = {10: WEB, 11: WEB, 20: BATCH, 1: HOST}
MS = 1_000_000


class Counters:
    """The pair_wait map as the kernel keeps it: counters that only grow."""

    def __init__(self) -> None:
        self.ns: dict[tuple[int, int], int] = {}

    def wait(self, victim: int, culprit: int, ms: float) -> None:
        self.ns[(victim, culprit)] = self.ns.get((victim, culprit), 0) + int(ms * MS)

    def read(self, b: Blame, now: float):
        keys = list(self.ns)
        return b.read(now, keys, [(self.ns[k], 1) for k in keys])


def blame() -> Blame:
    return Blame(lambda cgid, now: IDS[cgid])


def test_shares_are_by_container_and_say_self_quota_idle_and_neighbours() -> None:
    b, m = blame(), Counters()
    assert m.read(b, 0.0) == ([], [])
    m.wait(10, 20, 600)       # web behind batch
    m.wait(11, 1, 100)        # web (its other cgroup) behind the host
    m.wait(10, 11, 200)       # web behind its own tasks (another of its cgroups)
    m.wait(10, QUOTA, 50)
    m.wait(10, 0, 50)         # an idle CPU waking up
    m.wait(20, 20, 5)         # batch behind itself: 5 ms, too little to tell about
    rows, events = m.read(b, EVERY_S)
    assert {c.name: v[METRIC] for c, _, v in rows} == {"web-1": 0.7, "batch-7": 0.0}
    assert [e.container.name for e in events] == ["web-1"]
    f = events[0].fields
    assert f["text"] == ("60% behind batch-7, 20% behind its own tasks, 10% behind host, "
                         "5% held back by its CPU quota, 5% waking an idle CPU")
    assert f["main"] == "batch-7" and f["wait_ms"] == 1000.0 and f["window_s"] == EVERY_S
    assert [t["container"] for t in f["top"]] == ["batch-7", "host"]
    assert (f["self"], f["quota"], f["idle"], f["neighbours"]) == (0.2, 0.05, 0.05, 0.7)


def test_the_window_is_the_last_minute_and_a_counter_made_anew_counts_from_zero() -> None:
    b, m = blame(), Counters()
    m.read(b, 0.0)
    m.wait(10, 20, 1000)
    m.read(b, EVERY_S)
    for i in range(2, WINDOW + 2):      # then only its own tasks, for a minute
        m.wait(10, 10, 1000)
        rows, _ = m.read(b, i * EVERY_S)
    assert rows[0][2][METRIC] == 0.0    # the wait behind batch has left the window
    m.ns[(10, 20)] = 500 * MS           # the pair was deleted and made again (a cgroup id reused)
    rows, events = m.read(b, (WINDOW + 2) * EVERY_S)
    assert abs(rows[0][2][METRIC] - 500 / 5500) < 1e-9     # 500 ms new, beside 5 reads of 1 s of its own


def test_an_event_comes_when_the_main_culprit_changes_else_once_a_minute() -> None:
    b, m = blame(), Counters()
    m.read(b, 0.0)
    told = []
    for i in range(1, 14):
        m.wait(10, 20 if i < 10 else 1, 1000 if i < 10 else 20_000)
        _, events = m.read(b, i * EVERY_S)
        told += [(i, e.fields["main"]) for e in events]
    every = int(TELL_EVERY_S / EVERY_S)
    assert told == [(1, "batch-7"), (1 + every, "batch-7"), (10, "host")]


def test_a_short_wait_gets_the_share_but_no_event() -> None:
    b, m = blame(), Counters()
    m.read(b, 0.0)
    m.wait(10, 20, MIN_WAIT_MS / 2)
    rows, events = m.read(b, EVERY_S)
    assert [(c.name, v[METRIC]) for c, _, v in rows] == [("web-1", 1.0)] and events == []
