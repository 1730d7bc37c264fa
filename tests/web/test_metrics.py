"""``/metrics`` over real HTTP, parsed back with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import math

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from cgwatch.web import build_app
from cgwatch.web.app import REGISTRY_KEY
from tests.web.conftest import MemoryView, Served, alert, container, stats


def scrape(view: MemoryView, served: Served) -> tuple[int, str, str]:
    async def body() -> tuple[int, str, str]:
        async with served(view) as http, http.get("/metrics") as r:
            return r.status, r.headers["Content-Type"], await r.text()

    return asyncio.run(body())


def samples(text: str) -> dict[str, list[Sample]]:
    """Every sample by sample name (``x_total``, not the family ``x``)."""
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def by_label(found: list[Sample], *names: str) -> dict[tuple[str, ...], float]:
    return {tuple(s.labels[n] for n in names): s.value for s in found}


def test_every_cgwatch_metric_with_its_labels(view: MemoryView, served: Served) -> None:
    web = container("web-1", id="4f1c" * 16, metrics={"cpu.usage_cores": 0.93, "mem.usage_bytes": 2**30})
    db = container("db", id="ab12" * 16, runtime="podman", metrics={"cpu.usage_cores": 0.1, "psi.io-some": 2.5})
    view.containers_ = [web, db]
    view.alerts_ = [alert("cpu-hog", "web-1"), alert("oom-kill", "db", severity="critical", value=None),
                    alert("mem-high", "web-1", state="pending")]
    view.stats_ = stats(
        started_at=1732492000.0, ticks=600, last_tick_at=1e18, last_tick_s=0.25, rules_loaded=7, reload_ok=False,
        reload_error="bad", reloads=2, samples_total=123456, events_total=789,
        queue_drops={"rules": 5, "alerts": 0}, event_drops={"proc_events": 17}, bpf_maps={"cpu_stats": 212},
        models=40, models_evicted=3, outbox_pending=4,
        delivery={"slack": {"sent": 10, "messages": 4, "retried": 2, "failed": 1, "dropped": 0},
                  "journal": {"sent": 3, "messages": 3}})

    status, ctype, text = scrape(view, served)
    assert status == 200
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    got = samples(text)

    cpu = got["cgwatch_container_cpu_usage_cores"]
    assert by_label(cpu, "container", "runtime", "id") == {("web-1", "docker", "4f1c" * 16): 0.93,
                                                            ("db", "podman", "ab12" * 16): 0.1}
    assert set(cpu[0].labels) == {"container", "runtime", "id"}
    assert by_label(got["cgwatch_container_mem_usage_bytes"], "container") == {("web-1",): 2**30}
    assert by_label(got["cgwatch_container_psi_io_some"], "container") == {("db",): 2.5}   # '-' sanitized
    assert got["cgwatch_containers"][0].value == 2

    assert by_label(got["cgwatch_alerts"], "state") == {("pending",): 1, ("firing",): 2}
    assert by_label(got["cgwatch_alert_firing"], "rule", "container", "severity") == {
        ("cpu-hog", "web-1", "warning"): 1, ("oom-kill", "db", "critical"): 1}

    assert by_label(got["cgwatch_events_dropped_total"], "source") == {("proc_events",): 17}
    assert by_label(got["cgwatch_queue_dropped_total"], "stage") == {("rules",): 5, ("alerts",): 0}
    assert by_label(got["cgwatch_bpf_map_entries"], "map") == {("cpu_stats",): 212}
    assert by_label(got["cgwatch_notifications_total"], "sink", "outcome") == {
        ("slack", "sent"): 10, ("slack", "retried"): 2, ("slack", "failed"): 1, ("slack", "dropped"): 0,
        ("journal", "sent"): 3, ("journal", "retried"): 0, ("journal", "failed"): 0, ("journal", "dropped"): 0}
    assert by_label(got["cgwatch_notification_messages_total"], "sink") == {("slack",): 4, ("journal",): 3}

    single = {name: got[name][0].value for name in [
        "cgwatch_samples_total", "cgwatch_events_total", "cgwatch_ticks_total", "cgwatch_tick_duration_seconds",
        "cgwatch_models", "cgwatch_models_evicted_total", "cgwatch_outbox_pending", "cgwatch_rules_loaded",
        "cgwatch_config_reload_ok", "cgwatch_reloads_total", "cgwatch_ready", "cgwatch_start_time_seconds",
        "cgwatch_last_tick_timestamp_seconds"]}
    assert single == {
        "cgwatch_samples_total": 123456, "cgwatch_events_total": 789, "cgwatch_ticks_total": 600,
        "cgwatch_tick_duration_seconds": 0.25, "cgwatch_models": 40, "cgwatch_models_evicted_total": 3,
        "cgwatch_outbox_pending": 4, "cgwatch_rules_loaded": 7, "cgwatch_config_reload_ok": 0,
        "cgwatch_reloads_total": 2, "cgwatch_ready": 1, "cgwatch_start_time_seconds": 1732492000.0,
        "cgwatch_last_tick_timestamp_seconds": 1e18}

    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["cgwatch_events_dropped"] == types["cgwatch_notifications"] == types["cgwatch_ticks"] == "counter"
    assert types["cgwatch_container_cpu_usage_cores"] == types["cgwatch_bpf_map_entries"] == "gauge"

    # the process collector rides along on the app's own registry
    assert got["process_cpu_seconds_total"][0].value >= 0
    assert got["process_resident_memory_bytes"][0].value > 0
    assert got["process_start_time_seconds"][0].value > 0


def test_awkward_label_values_are_escaped(view: MemoryView, served: Served) -> None:
    nasty = 'we"b\n1\\x {}=,'
    view.containers_ = [container(nasty, id="id\"\n", runtime="dock\\er", metrics={"cpu.usage_cores": 1.0})]
    view.alerts_ = [alert('rule "q"', nasty)]

    _, _, text = scrape(view, served)
    assert 'container="we\\"b\\n1\\\\x {}=,"' in text            # escaped in the wire format
    assert 'id="id\\"\\n"' in text and 'runtime="dock\\\\er"' in text
    got = samples(text)
    assert by_label(got["cgwatch_container_cpu_usage_cores"], "container", "runtime", "id") == {
        (nasty, "dock\\er", "id\"\n"): 1.0}
    assert by_label(got["cgwatch_alert_firing"], "rule", "container") == {('rule "q"', nasty): 1}


def test_no_alerts_non_finite_values_and_colliding_names(view: MemoryView, served: Served) -> None:
    view.containers_ = [container("a", metrics={"psi.cpu_some": math.nan, "cpu.limit_cores": math.inf,
                                                 "cpu.usage_cores": 0.5, "cpu_usage_cores": 9.0}),
                        container("b", metrics={"cpu_usage_cores": 0.25})]
    _, _, text = scrape(view, served)
    got = samples(text)
    assert math.isnan(got["cgwatch_container_psi_cpu_some"][0].value)
    assert got["cgwatch_container_cpu_limit_cores"][0].value == math.inf
    # two spellings of one name in one container: the first wins, no duplicate series
    assert by_label(got["cgwatch_container_cpu_usage_cores"], "container") == {("a",): 0.5, ("b",): 0.25}
    assert by_label(got["cgwatch_alerts"], "state") == {("pending",): 0, ("firing",): 0}
    assert "cgwatch_alert_firing" not in got and "cgwatch_events_dropped_total" not in got


def test_a_thousand_containers_of_sixteen_metrics(view: MemoryView, served: Served) -> None:
    names = [f"m{j}.value_{j}" for j in range(16)]
    view.containers_ = [container(f"c{i:04d}", id=f"{i:064x}", metrics={m: i + j / 16 for j, m in enumerate(names)})
                        for i in range(1000)]
    status, _, text = scrape(view, served)
    assert status == 200
    got = samples(text)
    container_samples = [s for name, found in got.items() if name.startswith("cgwatch_container_") for s in found]
    assert len(container_samples) == 16_000
    assert len({(s.name, s.labels["id"]) for s in container_samples}) == 16_000
    assert got["cgwatch_container_m3_value_3"][7].value == 7 + 3 / 16
    assert got["cgwatch_containers"][0].value == 1000


def test_each_app_has_its_own_registry(view: MemoryView) -> None:
    a, b = build_app(view), build_app(MemoryView(containers_=[container("x", metrics={"cpu.usage_cores": 1})]))
    assert a[REGISTRY_KEY] is not b[REGISTRY_KEY] and a[REGISTRY_KEY] is not REGISTRY
    assert a[REGISTRY_KEY].get_sample_value("cgwatch_containers") == 0
    assert b[REGISTRY_KEY].get_sample_value("cgwatch_containers") == 1
    assert REGISTRY.get_sample_value("cgwatch_containers") is None


def test_the_view_is_read_at_scrape_time(view: MemoryView, served: Served) -> None:
    async def body() -> list[float]:
        values = []
        async with served(view) as http:
            for n in (1, 3):
                view.containers_ = [container(f"c{i}", metrics={"cpu.usage_cores": 0.5}) for i in range(n)]
                async with http.get("/metrics") as r:
                    values.append(samples(await r.text())["cgwatch_containers"][0].value)
        return values

    assert asyncio.run(body()) == [1, 3]
