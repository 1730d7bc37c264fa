"""The data types that travel between cgwatch's stages.

Everything downstream of the sources sees only :class:`Sample` and
:class:`Event`; both point at a shared, immutable :class:`Container`, so a
sample costs one small object and no copies of identity strings.

Examples
--------
>>> web = Container(id="4f1c" * 16, name="web-1", runtime="docker")
>>> s = Sample(1732492800.0, web, "cpu.usage_cores", 0.93)
>>> s.to_json()
{'ts': 1732492800.0, 'container': 'web-1', 'metric': 'cpu.usage_cores', 'value': 0.93, 'id': '4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c', 'runtime': 'docker'}
>>> Event(1732492801.5, web, "oom_kill", {"pid": 4242, "comm": "java"}).to_json()["fields"]
{'pid': 4242, 'comm': 'java'}
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, overload

_NAN = float("nan")

#: The runtimes identity can name. ``systemd`` is a plain unit, ``host`` is
#: everything that belongs to no container and no unit.
RUNTIMES = (
    "docker",
    "containerd",
    "cri-o",
    "cri",
    "podman",
    "lxc",
    "nspawn",
    "systemd",
    "host",
)


#: the label runtimes give a Kubernetes container's name in its pod
K8S_CONTAINER_LABEL = "io.kubernetes.container.name"


@dataclass(slots=True, frozen=True)
class Container:
    """One watched thing: a container, a systemd unit, or the host.

    ``id`` is stable for the container's life (the runtime's full id, the
    unit name, or ``"host"``); ``name`` is what people read (the short id
    until the runtime's metadata names it). ``cgroup`` is the container's
    top cgroup, relative to the cgroup2 mount (``""`` for the root).
    """

    id: str
    name: str
    runtime: str
    image: str = ""
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    cgroup: str = ""
    pod: str = ""
    """Kubernetes pod uid, where the container belongs to a pod."""
    qos: str = ""
    """Kubernetes QoS class (``guaranteed``, ``burstable``, ``besteffort``)."""

    @property
    def workload(self) -> str:
        """What stays the same when the container restarts: the key its series,
        windows, baselines and alerts are kept under.

        A docker or podman container keeps its id across restarts, and so does a
        systemd unit its name; a Kubernetes container restarted in its pod gets a
        new id but keeps its pod and its container name.

        >>> Container(id="4f1c", name="web-1", runtime="docker").workload
        '4f1c'
        >>> Container(id="9a0b", name="shop/web-7d9/nginx", runtime="containerd", pod="0a1b-2c",
        ...           labels={"io.kubernetes.container.name": "nginx"}).workload
        'pod:0a1b-2c/nginx'
        """
        if self.pod:
            ctr = self.labels.get(K8S_CONTAINER_LABEL)
            if ctr:
                return f"pod:{self.pod}/{ctr}"
        return self.id

    def identity_json(self) -> dict[str, Any]:
        """The optional identity keys of a recording line (DESIGN.md), plus
        ``pod`` and ``qos`` for Kubernetes containers.

        >>> Container(id="host", name="host", runtime="host").identity_json()
        {'id': 'host', 'runtime': 'host'}
        >>> Container(id="c1", name="c1", runtime="cri-o", pod="0e5a-1c2d", qos="burstable").identity_json()
        {'id': 'c1', 'runtime': 'cri-o', 'pod': '0e5a-1c2d', 'qos': 'burstable'}
        """
        out: dict[str, Any] = {"id": self.id, "runtime": self.runtime}
        if self.image:
            out["image"] = self.image
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.pod:
            out["pod"] = self.pod
        if self.qos:
            out["qos"] = self.qos
        return out


HOST = Container(id="host", name="host", runtime="host")


@dataclass(slots=True, frozen=True)
class Sample:
    """One value of one metric for one container at one time."""

    ts: float
    container: Container
    metric: str
    value: float

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ts": self.ts,
            "container": self.container.name,
            "metric": self.metric,
            "value": self.value,
        }
        out.update(self.container.identity_json())
        return out


class _SampleBuilder:
    """A plain object with the very slots of :class:`Sample`, filled by an ordinary
    ``__init__`` and then made a Sample (see :func:`new_sample`)."""

    __slots__ = ("ts", "container", "metric", "value")

    def __init__(self, ts: float, container: Container, metric: str, value: float) -> None:
        self.ts = ts
        self.container = container
        self.metric = metric
        self.value = value


# a Sample field added or moved must be added or moved here too: the layouts must be the same
assert _SampleBuilder.__slots__ == Sample.__slots__ == tuple(f.name for f in fields(Sample))


def new_sample(ts: float, container: Container, metric: str, value: float) -> Sample:
    """``Sample(ts, container, metric, value)``, made in under half the time.

    A frozen dataclass sets each field through ``object.__setattr__``; the sources
    make thousands of samples an interval. This fills a plain object of the same
    layout and makes it a Sample: the very same type, fields, equality, hash and
    immutability.

    >>> web = Container(id="4f1c", name="web-1", runtime="docker")
    >>> s = new_sample(1.0, web, "cpu.usage_cores", 0.5)
    >>> type(s) is Sample, s == Sample(1.0, web, "cpu.usage_cores", 0.5), s.value
    (True, True, 0.5)
    >>> s.value = 1.0
    Traceback (most recent call last):
    ...
    dataclasses.FrozenInstanceError: cannot assign to field 'value'
    """
    s = _SampleBuilder(ts, container, metric, value)
    s.__class__ = Sample
    return s  # type: ignore[no-any-return]


#: one container's values at one time: (container, ts, {metric: value})
Row = tuple[Container, float, dict[str, float]]


class Frame(Sequence[Sample]):
    """One interval's Samples, kept as rows: each container's values at one time, as a dict.

    It *is* a sequence of :class:`Sample` (made when read one by one: the recorder, ``top``,
    tests), and the stages that take a whole interval read its :attr:`rows` instead
    (:func:`rows_of`): a source hands on one dict per container, not one object per value,
    and a stage that wants a few metrics looks them up rather than walking every sample.
    Iterating gives the rows in order, each row's metrics in the order they were added.

    >>> web, db = Container(id="w", name="web", runtime="docker"), Container(id="d", name="db", runtime="docker")
    >>> f = Frame()
    >>> f.add(web, 5.0, {"cpu.usage_cores": 0.5}); f.add(db, 5.0, {"cpu.usage_cores": 0.1})
    >>> f.add(web, 5.0, {"mem.usage_bytes": 4096.0})          # web's row takes it
    >>> len(f), [(s.container.name, s.metric) for s in f]
    (3, [('web', 'cpu.usage_cores'), ('web', 'mem.usage_bytes'), ('db', 'cpu.usage_cores')])
    >>> f[1] == Sample(5.0, web, "mem.usage_bytes", 4096.0)
    True
    """

    __slots__ = ("rows", "_n", "_at")

    def __init__(self, rows: Iterable[Row] = ()) -> None:
        """``rows``, if given, are of distinct containers (or times); empty ones are left out."""
        self.rows: list[Row] = [r for r in rows if r[2]]
        #: how many values, counted when asked (-1: not since the rows changed)
        self._n = -1
        #: (container id, time) -> that row's values, made when a row may have to take more
        self._at: dict[tuple[str, float], dict[str, float]] | None = None

    def add(self, c: Container, ts: float, values: dict[str, float]) -> None:
        """Add ``values`` (a dict this Frame may keep and change) to ``c``'s row at ``ts``; the
        first Container given for an id stays the row's. A metric already in the row is replaced."""
        if values:
            self._merge(((c, ts, values),))

    def extend(self, other: Frame) -> None:
        """Add every row of ``other`` (whose dicts this Frame takes over)."""
        if not self.rows:
            self.rows, self._n, self._at = list(other.rows), other._n, None
        else:
            self._merge(other.rows)

    def _merge(self, rows: Iterable[Row]) -> None:
        """Each row to its container's row at its time (a new row when there is none): the
        collector merges every source's rows this way every interval."""
        at = self._at
        if at is None:
            at = self._at = {(r[0].id, r[1]): r[2] for r in self.rows}
        mine = self.rows
        for r in rows:
            key = (r[0].id, r[1])
            row = at.get(key)
            if row is None:
                if r[2]:
                    at[key] = r[2]
                    mine.append(r)
            else:
                row.update(r[2])
        self._n = -1

    def __len__(self) -> int:
        if self._n < 0:
            self._n = sum(map(len, [r[2] for r in self.rows]))
        return self._n

    def __eq__(self, other: object) -> bool:
        """Equal to a sequence of the same Samples in the same order (``frame == []`` when empty)."""
        if isinstance(other, (Frame, list, tuple)):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Frame({list(self)!r})"

    def __iter__(self) -> Iterator[Sample]:
        for c, ts, values in self.rows:
            for m, v in values.items():
                yield new_sample(ts, c, m, v)

    @overload
    def __getitem__(self, i: int) -> Sample: ...
    @overload
    def __getitem__(self, i: slice) -> list[Sample]: ...
    def __getitem__(self, i: int | slice) -> Sample | list[Sample]:
        return list(self)[i]


def rows_of(samples: Iterable[Sample]) -> list[Row]:
    """A batch of samples as rows: a :class:`Frame`'s own, or a list's runs of one container at
    one time (a metric that comes twice in a run starts a new row, so nothing is lost).

    >>> web = Container(id="w", name="web", runtime="docker")
    >>> [(c.name, ts, v) for c, ts, v in rows_of([Sample(1.0, web, "a", 1.0), Sample(1.0, web, "b", 2.0),
    ...                                            Sample(2.0, web, "a", 3.0), Sample(2.0, web, "a", 4.0)])]
    [('web', 1.0, {'a': 1.0, 'b': 2.0}), ('web', 2.0, {'a': 3.0}), ('web', 2.0, {'a': 4.0})]
    """
    if isinstance(samples, Frame):
        return samples.rows
    rows: list[Row] = []
    last: Container | None = None
    at = _NAN
    cur: dict[str, float] = {}
    for s in samples:
        if s.container is not last or s.ts != at or s.metric in cur:
            last, at, cur = s.container, s.ts, {}
            rows.append((last, at, cur))
        cur[s.metric] = s.value
    return rows


@dataclass(slots=True, frozen=True)
class Event:
    """Something that happened once: ``exec``, ``exit``, ``oom_kill``, ..."""

    ts: float
    container: Container
    kind: str
    fields: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ts": self.ts,
            "container": self.container.name,
            "event": self.kind,
            "fields": dict(self.fields),
        }
        out.update(self.container.identity_json())
        return out


@dataclass(slots=True, frozen=True)
class Verdict:
    """What an anomaly rule's model said of one value of one container: the anomaly stage
    hands these to the rules engine, which fires the rule while ``active``.

    ``metric`` is the model's metric (``a+b`` for a joint model), ``value`` the value it
    judged (a joint model's: its score), ``score`` in [0, 1] (None in warm-up),
    ``threshold`` the score that fires now, ``low``..``high`` where 98 % of the recent
    values lay over ``span_s`` seconds (None where the model cannot say), ``channels``
    the views that broke.

    >>> web = Container(id="4f1c", name="web-1", runtime="docker")
    >>> Verdict(1.0, web, "baseline", "cpu.usage_cores", 5.0, 1.0, True).active
    True
    """

    ts: float
    container: Container
    rule: str
    metric: str
    value: float | None
    score: float | None
    active: bool
    threshold: float | None = None
    low: float | None = None
    high: float | None = None
    span_s: float = 0.0
    channels: tuple[str, ...] = ()


@dataclass(slots=True, frozen=True)
class Alert:
    """A change of a rule's state for one container (DESIGN.md, "Alerts output")."""

    ts: float
    rule: str
    container: Container
    state: str
    severity: str
    value: float | None
    summary: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """One line of alerts JSONL: DESIGN.md's keys, then ``id`` and ``labels``.

        >>> web = Container(id="4f1c", name="web-1", runtime="docker")
        >>> Alert(1732492830.0, "cpu-hog", web, "firing", "warning", 0.97, "web-1 hot").to_json()
        {'ts': 1732492830.0, 'rule': 'cpu-hog', 'container': 'web-1', 'state': 'firing', 'severity': 'warning', 'value': 0.97, 'summary': 'web-1 hot', 'id': '4f1c'}
        """
        out: dict[str, Any] = {
            "ts": self.ts,
            "rule": self.rule,
            "container": self.container.name,
            "state": self.state,
            "severity": self.severity,
            "value": self.value,
            "summary": self.summary,
            "id": self.container.id,
        }
        if self.labels:
            out["labels"] = dict(self.labels)
        return out
