"""The root-cause card from what the dashboard keeps (cgwatch.web.card); end to end through
the daemon and a webhook in tests/daemon/test_card_e2e.py."""

from __future__ import annotations

from cgwatch.model import Container, Event
from cgwatch.web.card import BEFORE_S, EVENTS, TOP, build_card
from cgwatch.web.history import History

WEB = Container(id="w" * 64, name="web-1", runtime="docker")
ONSET = 3000.0


def history(metrics: dict[str, tuple[float, float]], seconds: int = 3060) -> History:
    """Each metric at its first level, then its second from ONSET on, one sample a second."""
    h = History(interval_s=1.0)
    for t in range(seconds):
        for m, (before, after) in metrics.items():
            h.add(float(t), WEB.id, m, before + (t % 2) * 0.01 * before if t < ONSET else after)
    return h


def test_what_moved_is_ranked_the_rules_own_metrics_left_out_and_at_most_five() -> None:
    moved = {f"m.{i}": (10.0, 10.0 + 5 * i) for i in range(1, 9)}       # m.8 moved most
    h = history({**moved, "flat": (3.0, 3.03), "cpu.usage_cores": (0.1, 2.0)})
    card = build_card(h, WEB.id, ONSET, ONSET + 60, skip={"cpu.usage_cores"})
    names = [c["metric"] for c in card["changed"]]
    assert names == [f"m.{i}" for i in (8, 7, 6, 5, 4)][:TOP]
    assert round(card["changed"][0]["before"], 2) == 10.05 and card["changed"][0]["now"] == 50.0   # 10 and 10.1 in turn
    assert card["missing"] == []


def test_events_of_the_window_the_neighbours_text_and_what_is_missing() -> None:
    h = history({"m": (1.0, 1.0)})
    h.event(Event(ONSET - BEFORE_S - 5, WEB, "oom_kill", {"pid": 1}))           # too early
    for i in range(EVENTS + 2):
        h.event(Event(ONSET - 100 + i, WEB, "exit", {"code": i + 1}))
    h.event(Event(ONSET - 30, WEB, "neighbours", {"text": "80% behind batch-7"}))
    h.event(Event(ONSET + 120, WEB, "exit", {"code": 99}))                      # after it fired
    card = build_card(h, WEB.id, ONSET, ONSET + 60)
    assert [e["fields"]["code"] for e in card["events"]] == list(range(3, EVENTS + 3))   # the last ten
    assert card["neighbours"] == "80% behind batch-7"
    assert card["changed"] == [] and card["missing"] == [
        "no metric moved away from where it was before the onset (or too little history)"]
    assert build_card(History(), WEB.id, ONSET)["missing"] == ["no history of this container"]


def test_a_profile_is_compared_with_the_containers_profile_before(tmp_path) -> None:
    from cgwatch.daemon.loops import _diff
    from cgwatch.profile.model import Profile
    from cgwatch.profile.profiler import Done
    from cgwatch.profile.store import ProfileStore

    store = ProfileStore(tmp_path)

    def saved(pid: str, started: float, stacks: dict) -> Done:
        p = Profile(id=f"{pid}-{WEB.id[:12]}", container=WEB, started=started, duration_s=10.0, requested_s=10.0,
                    hz=49, stacks=stacks)
        return Done(p, store.save(p), None)

    first = saved("a", 100.0, {("app", "main", "serve"): 80, ("app", "main", "gc"): 20})
    assert _diff(store, first) is None                     # nothing before it
    second = saved("b", 200.0, {("app", "main", "serve"): 30, ("app", "main", "gc"): 70})
    d = _diff(store, second)
    assert d["against"] == first.profile.id and d["started"] == 100.0
    assert d["grew"] == [{"function": "gc", "before": 0.2, "now": 0.7}]
    assert d["shrank"] == [{"function": "serve", "before": 0.8, "now": 0.3}]


def test_a_neighbours_event_from_the_cpu_source_reaches_the_card() -> None:
    """The dashboard keeps a few scalar fields of each event: the text must be among them."""
    from cgwatch.sources.blame import QUOTA, Blame

    batch = Container(id="b" * 64, name="batch-7", runtime="docker")
    b = Blame(lambda cgid, now: {10: WEB, 20: batch}[cgid])
    b.read(ONSET - 20, [(10, 20)], [(0, 0)])
    _, events = b.read(ONSET - 10, [(10, 20), (10, QUOTA)], [(900_000_000, 9), (100_000_000, 1)])
    h = history({"m": (1.0, 1.0)})
    h.events(events)
    assert build_card(h, WEB.id, ONSET, ONSET + 5)["neighbours"] == "90% behind batch-7, 10% held back by its CPU quota"


def test_a_binary_the_container_never_ran_is_in_its_card() -> None:
    h = history({"m": (1.0, 1.0)})
    run = lambda ts, path: h.events([Event(ts, WEB, "exec", {"pid": 7, "comm": path.rsplit("/", 1)[-1],  # noqa: E731
                                                              "filename": path})])
    run(100.0, "/bin/sh")                   # learnt while cgwatch got to know it
    run(ONSET - 50, "/tmp/.x/miner")        # new to it, after 10 minutes of watching
    run(ONSET - 40, "/bin/sh")              # it ran that before
    card = build_card(h, WEB.id, ONSET, ONSET + 5)
    assert [(e["kind"], e["fields"]["filename"]) for e in card["events"]] == [("exec", "/tmp/.x/miner")]


def test_a_container_made_again_from_another_image_has_it_in_its_card() -> None:
    from cgwatch.model import Sample

    h = History(interval_s=1.0)
    old = Container(id="a" * 64, name="web-1", runtime="docker", image="shop/web:1.4")
    new = Container(id="b" * 64, name="web-1", runtime="docker", image="shop/web:1.5")   # re-created
    h.add_many([Sample(float(t), old, "m", 1.0) for t in range(0, 100)])
    h.add_many([Sample(float(t), new, "m", 1.0) for t in range(100, 200)])
    card = build_card(h, new.id, 150.0, 160.0)
    assert [(e["kind"], e["fields"]) for e in card["events"]] == [
        ("image_change", {"from": "shop/web:1.4", "to": "shop/web:1.5"})]
    assert build_card(h, old.id, 50.0, 60.0)["events"] == []
