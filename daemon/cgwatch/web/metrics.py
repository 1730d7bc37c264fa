"""``/metrics``: the View, read at scrape time, in Prometheus text exposition format.

:class:`ViewCollector` turns one :class:`~cgwatch.web.view.View` snapshot into
metric families when Prometheus scrapes, so keeping the numbers costs the
pipeline nothing per sample. :func:`make_registry` gives each app its own
:class:`~prometheus_client.CollectorRegistry` (never the process-global one)
holding that collector and the process collector (``process_*``).

Examples
--------
>>> collector = ViewCollector(_DemoView())
>>> [f.name for f in collector.collect()][:3]
['cgwatch_container_cpu_usage_cores', 'cgwatch_containers', 'cgwatch_alerts']
>>> print(render(make_registry(_DemoView(), process=False)).decode().splitlines()[2])
cgwatch_container_cpu_usage_cores{container="web-1",id="4f1c",runtime="docker"} 0.93
"""

from __future__ import annotations

import asyncio
import gzip
import re
from collections.abc import Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, ProcessCollector, exposition
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from .view import AlertInfo, ContainerInfo, Stats, View

#: What ``/metrics`` answers with: the classic text format, version 0.0.4
#: (prometheus-client >= 0.22 calls 1.0.0 "latest"; its text is the same for
#: the plain ``[a-zA-Z0-9_]`` names cgwatch writes).
CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)

#: gzip level for scrapes that accept it: level 1 takes most of the gain for a fraction
#: of the time of the default 6 on this repetitive text
GZIP_LEVEL = 1

#: The delivery outcomes exported as ``cgwatch_notifications_total{outcome}``.
OUTCOMES = ("sent", "retried", "failed", "dropped")

_CONTAINER_LABELS = ("container", "runtime", "id")
_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(metric: str) -> str:
    """The Prometheus name of a container metric: ``cgwatch_container_`` + the name with
    every character outside ``[a-zA-Z0-9_]`` made ``_``.

    >>> metric_name("cpu.usage_cores")
    'cgwatch_container_cpu_usage_cores'
    >>> metric_name("psi.io-some %")
    'cgwatch_container_psi_io_some__'
    """
    return "cgwatch_container_" + _BAD_CHARS.sub("_", metric)


class ViewCollector:
    """A prometheus-client collector that reads a :class:`View` on every ``collect()``.

    >>> families = {f.name: f for f in ViewCollector(_DemoView()).collect()}
    >>> [(s.labels, s.value) for s in families["cgwatch_alerts"].samples]
    [({'state': 'pending'}, 0), ({'state': 'firing'}, 1)]
    """

    def __init__(self, view: View) -> None:
        self._view = view
        self._names: dict[str, str] = {}  # dotted metric -> exported name (a small, fixed catalogue)

    def _name(self, metric: str) -> str:
        name = self._names.get(metric)
        if name is None:
            name = metric_name(metric)
            if len(self._names) < 4096:
                self._names[metric] = name
        return name

    def collect(self) -> Iterator[Metric]:
        """Yield every cgwatch metric family from one fresh snapshot of the View."""
        view = self._view
        yield from self._containers(view.containers())
        yield from self._alerts(view.alerts())
        yield from self._stats(view.stats())

    def _containers(self, containers: Sequence[ContainerInfo]) -> Iterator[Metric]:
        # The hot loop of a scrape (containers x metrics): one label dict per container, shared by
        # its samples, and Samples appended directly rather than through add_metric's zip.
        families: dict[str, GaugeMetricFamily] = {}
        names = self._names
        for c in containers:
            labels = {"container": c.name, "runtime": c.runtime, "id": c.id}
            for metric, value in c.metrics.items():
                name = names.get(metric) or self._name(metric)
                family = families.get(name)
                if family is None:
                    family = families[name] = GaugeMetricFamily(
                        name, f"Latest {metric} of each container.", labels=_CONTAINER_LABELS)
                elif family.samples[-1].labels is labels:
                    continue  # two spellings of one metric in one container ("a.b", "a_b"): keep the first
                family.samples.append(Sample(name, labels, value))
        yield from families.values()
        yield GaugeMetricFamily("cgwatch_containers", "Containers watched now.", value=len(containers))

    @staticmethod
    def _alerts(alerts: Sequence[AlertInfo]) -> Iterator[Metric]:
        by_state = {"pending": 0, "firing": 0}
        firing = GaugeMetricFamily("cgwatch_alert_firing", "1 for every firing alert.",
                                   labels=("rule", "container", "severity"))
        seen: set[tuple[str, str, str]] = set()
        for a in alerts:
            by_state[a.state] = by_state.get(a.state, 0) + 1
            key = (a.rule, a.container, a.severity)
            if a.state == "firing" and key not in seen:
                seen.add(key)
                firing.add_metric(key, 1)
        counts = GaugeMetricFamily("cgwatch_alerts", "Active alerts by state.", labels=("state",))
        for state, n in by_state.items():
            counts.add_metric((state,), n)
        yield counts
        yield firing

    @staticmethod
    def _stats(st: Stats) -> Iterator[Metric]:
        def labelled(kind: type[Metric], name: str, doc: str, label: str, values: Mapping[str, int]) -> Metric:
            family = kind(name, doc, labels=(label,))
            for key, value in sorted(values.items()):
                family.add_metric((key,), value)
            return family

        yield labelled(CounterMetricFamily, "cgwatch_events_dropped_total",
                       "Kernel events lost, by ring buffer or source.", "source", st.event_drops)
        yield labelled(CounterMetricFamily, "cgwatch_queue_dropped_total",
                       "Items dropped because a bounded queue was full, by stage.", "stage", st.queue_drops)
        yield labelled(GaugeMetricFamily, "cgwatch_bpf_map_entries", "Entries in each BPF map now.",
                       "map", st.bpf_maps)
        yield CounterMetricFamily("cgwatch_samples_total", "Samples produced.", value=st.samples_total)
        yield CounterMetricFamily("cgwatch_events_total", "Events produced.", value=st.events_total)
        yield CounterMetricFamily("cgwatch_ticks_total", "Collections finished.", value=st.ticks)
        yield GaugeMetricFamily("cgwatch_tick_duration_seconds", "How long the last collection took.",
                                value=st.last_tick_s)
        if st.last_tick_at is not None:
            yield GaugeMetricFamily("cgwatch_last_tick_timestamp_seconds",
                                    "Unix time when the last collection finished.", value=st.last_tick_at)
        yield GaugeMetricFamily("cgwatch_models", "Anomaly models in memory.", value=st.models)
        yield CounterMetricFamily("cgwatch_models_evicted_total", "Anomaly models evicted.",
                                  value=st.models_evicted)
        sent = CounterMetricFamily("cgwatch_notifications_total", "Notifications by sink and outcome.",
                                   labels=("sink", "outcome"))
        messages = CounterMetricFamily("cgwatch_notification_messages_total",
                                       "Messages (requests, journal entries, lines) sent by each sink.",
                                       labels=("sink",))
        for sink, counts in sorted(st.delivery.items()):
            for outcome in OUTCOMES:
                sent.add_metric((sink, outcome), counts.get(outcome, 0))
            messages.add_metric((sink,), counts.get("messages", 0))
        yield sent
        yield messages
        yield GaugeMetricFamily("cgwatch_outbox_pending", "Notifications waiting in the outbox.",
                                value=st.outbox_pending)
        if st.kubelet:
            yield CounterMetricFamily("cgwatch_kubelet_fetches_total", "Reads of the kubelet's pod list.",
                                      value=st.kubelet.get("fetches", 0))
            yield CounterMetricFamily("cgwatch_kubelet_errors_total",
                                      "Reads of the kubelet's pod list that failed (the last good list stayed).",
                                      value=st.kubelet.get("errors", 0))
            yield GaugeMetricFamily("cgwatch_kubelet_pods", "Pods the kubelet listed at the last good read.",
                                    value=st.kubelet.get("pods", 0))
        if st.profiles:
            yield labelled(CounterMetricFamily, "cgwatch_profiles_total",
                           "CPU profiles by outcome (started, finished, partial, skipped_busy, skipped_cap).",
                           "outcome", {k: v for k, v in st.profiles.items() if k != "lost_samples"})
            yield CounterMetricFamily("cgwatch_profile_lost_samples_total",
                                      "Profile samples whose stack the kernel's stack map could not hold.",
                                      value=st.profiles.get("lost_samples", 0))
        if st.cards:
            yield labelled(CounterMetricFamily, "cgwatch_cards_total",
                           "Root-cause cards of first firing notices by outcome (attached, late, gone, failed).",
                           "outcome", st.cards)
        yield GaugeMetricFamily("cgwatch_rules_loaded", "Rules running now.", value=st.rules_loaded)
        yield GaugeMetricFamily("cgwatch_config_reload_ok", "1 if the last config reload worked, else 0.",
                                value=1 if st.reload_ok else 0)
        yield CounterMetricFamily("cgwatch_reloads_total", "Successful config reloads.", value=st.reloads)
        yield GaugeMetricFamily("cgwatch_ready", "1 once the daemon is up, else 0.", value=1 if st.ready else 0)
        yield GaugeMetricFamily("cgwatch_start_time_seconds", "Unix time when the daemon started.",
                                value=st.started_at)


def make_registry(view: View, *, process: bool = True) -> CollectorRegistry:
    """A fresh registry holding a :class:`ViewCollector` for ``view`` and, unless
    ``process=False``, the ``process_*`` collector.

    >>> reg = make_registry(_DemoView())
    >>> reg.get_sample_value("cgwatch_containers"), reg.get_sample_value("process_cpu_seconds_total") is not None
    (1, True)
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ViewCollector(view))
    if process:
        ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry in text exposition format (see :data:`CONTENT_TYPE`).

    >>> render(make_registry(_DemoView(), process=False)).startswith(b"# HELP cgwatch_container_cpu_usage_cores")
    True
    """
    return exposition.generate_latest(registry)


class _Collected:
    """Families already collected, for rendering away from the event loop."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


async def scrape(registry: CollectorRegistry, compress: bool = False) -> bytes:
    """:func:`render`, with the View read in the calling (event loop) thread and the
    text built (and with ``compress``, gzipped) in a worker thread, so a large host's
    scrape does not stall the loop.

    >>> import asyncio, gzip
    >>> registry = make_registry(_DemoView(), process=False)
    >>> asyncio.run(scrape(registry)) == render(registry)
    True
    >>> gzip.decompress(asyncio.run(scrape(registry, compress=True))) == render(registry)
    True
    """
    families = list(registry.collect())

    def build() -> bytes:
        text = exposition.generate_latest(_Collected(families))
        return gzip.compress(text, compresslevel=GZIP_LEVEL) if compress else text

    return await asyncio.to_thread(build)


class _DemoView:
    """One container, one firing alert: the doctests' View."""

    def containers(self) -> list[ContainerInfo]:
        return [ContainerInfo(id="4f1c", name="web-1", runtime="docker", image="nginx", labels={}, pod="",
                              qos="", cgroup="/docker/4f1c", first_seen=1.0, last_seen=2.0,
                              metrics={"cpu.usage_cores": 0.93})]

    def alerts(self) -> list[AlertInfo]:
        return [AlertInfo(rule="cpu-hog", container="web-1", container_id="4f1c", runtime="docker",
                          state="firing", severity="warning", since=2.0, value=0.97, summary="hot")]

    def stats(self) -> Stats:
        return Stats(started_at=0.0, ready=True, interval_s=1.0, ticks=2, last_tick_at=2.0, last_tick_s=0.01,
                     rules_loaded=1, reload_ok=True, reload_error="", reloads=0, samples_total=10,
                     events_total=0, queue_drops={}, event_drops={}, bpf_maps={}, models=0, models_evicted=0,
                     delivery={}, outbox_pending=0)

    def profiles(self) -> None:
        return None     # the demo does not profile
