"""A CPU profile of one container: folded stacks and what is known about how they were taken.

Stacks are tuples of frame names, root first: the process name, then user
frames outermost first, then kernel frames (suffixed ``_[k]``), the frame that
was on the CPU last. Each maps to the number of samples that caught it.

Examples
--------
>>> c = Container(id="ab" * 32, name="web-1", runtime="docker")
>>> p = Profile(id="p1", container=c, started=100.0, duration_s=10.0, requested_s=10.0, hz=49,
...             stacks={("app", "main", "hot"): 7, ("app", "main", "cold"): 3})
>>> p.samples, p.partial
(10, '')
>>> Profile.from_json(p.to_json()) == p
True
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..model import Container

#: a stack the kernel could not record (its slot in the stack map was taken, or the unwind failed)
LOST_FRAME = "[lost stack]"
#: a frame nothing could name, not even the file it is in
UNKNOWN = "[unknown]"
KERNEL_SUFFIX = "_[k]"


def unknown(module: str = "") -> str:
    """The name of a frame that could not be symbolised: its module in brackets, else ``[unknown]``.

    One name per module, not per address, so that the samples in a stripped binary add up
    (in the top functions and in a flame graph's boxes). Pseudo-modules that already wear
    brackets (``[vdso]``, ``[anon]``) keep theirs.

    >>> unknown("busybox"), unknown("[vdso]"), unknown("kernel"), unknown()
    ('[busybox]', '[vdso]', '[kernel]', '[unknown]')
    """
    if not module:
        return UNKNOWN
    return module if module.startswith("[") and module.endswith("]") else f"[{module}]"


def profile_id(container_id: str, started: float) -> str:
    """A sortable, unique-enough, file-name-safe id.

    >>> profile_id("ab" * 32, 1732492800.5)
    '20241125T000000.500Z-abababababab'
    """
    t = time.gmtime(started)
    return time.strftime("%Y%m%dT%H%M%S", t) + f".{int(started * 1000) % 1000:03d}Z-{container_id[:12]}"


@dataclass(slots=True)
class Profile:
    """One container's sampled stacks over one window."""

    id: str
    container: Container
    started: float
    """Unix seconds when sampling began."""
    duration_s: float
    """How long it sampled (shorter than requested when the container went away)."""
    requested_s: float
    hz: int
    """Samples per second per CPU."""
    stacks: dict[tuple[str, ...], int] = field(default_factory=dict)
    partial: str = ""
    """Why the profile is incomplete ("" when it is complete)."""
    lost: int = 0
    """Samples whose stack the kernel could not store (its slot in the stack map was taken by
    another stack, or the map was full): counted, not named."""
    rule: str = ""
    """The rule whose alert asked for it ("" for an on-demand profile)."""

    @property
    def samples(self) -> int:
        return sum(self.stacks.values())

    def to_json(self) -> dict[str, Any]:
        c = self.container
        return {
            "version": 1,
            "id": self.id,
            "container": {"id": c.id, "name": c.name, "runtime": c.runtime, "image": c.image,
                          "cgroup": c.cgroup, "labels": dict(c.labels)},
            "started": self.started,
            "duration_s": self.duration_s,
            "requested_s": self.requested_s,
            "hz": self.hz,
            "samples": self.samples,
            "partial": self.partial,
            "lost": self.lost,
            "rule": self.rule,
            "stacks": [[list(s), n] for s, n in self.stacks.items()],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Profile:
        """The inverse of :meth:`to_json`; raises ValueError on a document that is not one."""
        try:
            if d.get("version") != 1:
                raise ValueError(f"unknown profile version {d.get('version')!r}")
            c = d["container"]
            container = Container(id=str(c["id"]), name=str(c["name"]), runtime=str(c["runtime"]),
                                  image=str(c.get("image", "")), cgroup=str(c.get("cgroup", "")),
                                  labels={str(k): str(v) for k, v in dict(c.get("labels", {})).items()})
            stacks: dict[tuple[str, ...], int] = {}
            for frames, n in d["stacks"]:
                key = tuple(str(f) for f in frames)
                stacks[key] = stacks.get(key, 0) + int(n)
            return cls(id=str(d["id"]), container=container, started=float(d["started"]),
                       duration_s=float(d["duration_s"]), requested_s=float(d["requested_s"]),
                       hz=int(d["hz"]), stacks=stacks, partial=str(d.get("partial", "")),
                       lost=int(d.get("lost", 0)), rule=str(d.get("rule", "")))
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a cgwatch profile: {type(e).__name__} {e}") from None
