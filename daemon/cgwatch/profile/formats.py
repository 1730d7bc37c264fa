"""A profile as people and tools read it: folded stacks, speedscope JSON, the
tree a flame graph draws, and the few functions an alert can carry.

Examples
--------
>>> from ..model import Container
>>> from .model import Profile
>>> c = Container(id="ab" * 32, name="web-1", runtime="docker")
>>> p = Profile(id="p1", container=c, started=0.0, duration_s=1.0, requested_s=1.0, hz=49,
...             stacks={("app", "_start", "main", "hot"): 7, ("app", "_start", "main", "cold"): 3})
>>> print(folded(p), end="")
app;_start;main;cold 3
app;_start;main;hot 7
>>> [(f, round(s, 2)) for f, s in top_functions(p)]
[('main', 1.0), ('hot', 0.7), ('cold', 0.3)]
>>> flame_tree(p)["children"][0]["value"]
10
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .model import KERNEL_SUFFIX, LOST_FRAME, UNKNOWN, Profile

TOP = 5


def folded(p: Profile) -> str:
    """Brendan Gregg's folded format: ``frame;frame;frame count`` per line, sorted.

    Semicolons inside frame names (C++ templates can have them) become colons.
    """
    lines = [";".join(f.replace(";", ":") for f in s) + f" {n}" for s, n in p.stacks.items() if n > 0]
    lines.sort()
    return "\n".join(lines) + ("\n" if lines else "")


def speedscope(p: Profile) -> dict[str, Any]:
    """The profile in speedscope's file format (one "sampled" profile, weights in samples)."""
    index: dict[str, int] = {}
    frames: list[dict[str, str]] = []
    samples: list[list[int]] = []
    weights: list[int] = []
    for stack, n in sorted(p.stacks.items(), key=lambda kv: kv[0]):
        if n <= 0:
            continue
        ids = []
        for f in stack:
            i = index.get(f)
            if i is None:
                i = index[f] = len(frames)
                frames.append({"name": f})
            ids.append(i)
        samples.append(ids)
        weights.append(n)
    name = f"{p.container.name} ({p.id})"
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": frames},
        "profiles": [{
            "type": "sampled", "name": name, "unit": "none",
            "startValue": 0, "endValue": sum(weights), "samples": samples, "weights": weights,
        }],
        "name": name,
        "activeProfileIndex": 0,
        "exporter": "cgwatch",
    }


def flame_tree(p: Profile) -> dict[str, Any]:
    """The nested ``{name, value, children}`` tree flame graph renderers draw;
    the root is the container, values are samples (inclusive)."""
    root: dict[str, Any] = {"name": p.container.name, "value": 0, "children": []}
    kids: dict[int, dict[str, dict[str, Any]]] = {}
    for stack, n in p.stacks.items():
        if n <= 0:
            continue
        node = root
        node["value"] += n
        for f in stack:
            table = kids.setdefault(id(node), {})
            child = table.get(f)
            if child is None:
                child = table[f] = {"name": f, "value": 0, "children": []}
                node["children"].append(child)
            child["value"] += n
            node = child
    _sort(root)
    return root


def _sort(node: dict[str, Any]) -> None:
    todo = [node]
    while todo:
        n = todo.pop()
        n["children"].sort(key=lambda c: c["name"])
        todo += n["children"]


def top_functions(p: Profile, n: int = TOP) -> list[tuple[str, float]]:
    """The ``n`` functions with the largest inclusive share (of all samples, 0..1).

    The process name at each stack's root is not a function, and a frame that
    only passes through to one callee (``_start``, ``__libc_start_main``: the
    callee holds every one of its samples, and has a name) says nothing the callee
    does not: such frames are left out, and so are frames with neither a name nor
    a module (``[unknown]``, ``[lost stack]``).

    A frame named by its module alone (``[busybox]``: a stripped binary) is a
    place, not a function: it counts for the samples in which it is the innermost
    frame of its side (user or kernel), where the CPU was in that binary, once
    however many such frames the stack holds. So a container busy in one stripped
    binary is summarised as that binary, while a module that only called named
    code (``[libc.so.6]`` for Debian's symbol-less ``__libc_start_call_main``, at
    the root of every stack) is not credited with all of it. Ties go to the deeper frame.

    >>> from ..model import Container
    >>> c = Container(id="ab" * 32, name="box", runtime="docker")
    >>> p = Profile(id="p1", container=c, started=0.0, duration_s=1.0, requested_s=1.0, hz=49,
    ...             stacks={("sh", "[busybox]", "[busybox]"): 97, ("sh", "[busybox]", "vfs_read_[k]"): 1,
    ...                     ("sh", "[unknown]"): 2})
    >>> [(f, round(s, 2)) for f, s in top_functions(p)]
    [('[busybox]', 0.98), ('vfs_read_[k]', 0.01)]
    """
    total = p.samples
    if total == 0:
        return []
    share: dict[str, int] = {}
    depth: dict[str, int] = {}
    for stack, count in p.stacks.items():
        frames = stack[1:]
        inner = _innermost(frames)
        seen = set()
        for d, f in enumerate(frames, 1):
            if f in seen or (module_only(f) and d - 1 not in inner):
                continue
            seen.add(f)
            share[f] = share.get(f, 0) + count
            depth[f] = max(depth.get(f, 0), d)
    useful = _informative(flame_tree(p))
    best = sorted(((f, c) for f, c in share.items() if f in useful),
                  key=lambda kv: (-kv[1], -depth[kv[0]], kv[0]))[:n]
    return [(f, c / total) for f, c in best]


def _innermost(frames: tuple[str, ...]) -> tuple[int, int]:
    """Indices of the innermost user and kernel frames that are not nameless (-1: none)."""
    user = kernel = -1
    for i, f in enumerate(frames):
        if not nameless(f):
            if f.endswith(KERNEL_SUFFIX):
                kernel = i
            else:
                user = i
    return user, kernel


def _informative(root: dict[str, Any]) -> set[str]:
    """Names of the frames (below the process names) that are somewhere more than a pass-through.

    A frame whose one callee is nameless (``read`` above a ``[lost stack]_[k]``) is no pass-through:
    it is the last thing known about those samples."""
    out: set[str] = set()
    todo = [(c, 1) for c in root["children"]]
    while todo:
        node, d = todo.pop()
        kids = node["children"]
        through = len(kids) == 1 and kids[0]["value"] == node["value"] and not nameless(kids[0]["name"])
        if d >= 2 and not through and not nameless(node["name"]):
            out.add(node["name"])
        todo += [(c, d + 1) for c in kids]
    return out


def module_only(frame: str) -> bool:
    """True for a frame named by its module alone (``[busybox]``, ``[vdso]``, ``[kernel]_[k]``, and
    the ``[unknown] (busybox)`` of profiles stored by earlier versions).

    >>> [module_only(f) for f in ("[busybox]", "[kernel]_[k]", "[unknown] (libc.so.6)", "[unknown]", "main")]
    [True, True, True, False, False]
    """
    if not frame.startswith("[") or nameless(frame):
        return False
    bare = frame.removesuffix(KERNEL_SUFFIX)
    return bare.endswith("]") or bare.startswith(UNKNOWN + " (")


def nameless(frame: str) -> bool:
    """True for a frame with neither a name nor a module: ``[unknown]``, a lost stack (user or kernel).

    >>> [nameless(f) for f in ("[unknown]", "[lost stack]_[k]", "[busybox]", "[kernel]_[k]", "main")]
    [True, True, False, False, False]
    """
    return frame in (UNKNOWN, UNKNOWN + KERNEL_SUFFIX) or frame.startswith(LOST_FRAME)


#: a function is in a profile diff when its share moved by at least this much (of all samples)
DIFF_MIN = 0.05


def profile_diff(before: Profile, now: Profile, n: int = 3) -> dict[str, Any]:
    """What grew and what shrank in ``now`` against the earlier ``before`` of the same
    container: up to ``n`` functions each way whose inclusive share (:func:`top_functions`,
    every function) moved by :data:`DIFF_MIN` or more, largest move first.

    >>> from ..model import Container
    >>> c = Container(id="ab" * 32, name="box", runtime="docker")
    >>> def prof(stacks): return Profile(id="p", container=c, started=0.0, duration_s=1.0, requested_s=1.0,
    ...                                   hz=49, stacks=stacks)
    >>> old = prof({("app", "main", "serve"): 80, ("app", "main", "gc"): 20})
    >>> new = prof({("app", "main", "serve"): 30, ("app", "main", "gc"): 60, ("app", "main", "parse"): 10})
    >>> d = profile_diff(old, new)
    >>> d["grew"], d["shrank"]
    ([{'function': 'gc', 'before': 0.2, 'now': 0.6}, {'function': 'parse', 'before': 0.0, 'now': 0.1}], [{'function': 'serve', 'before': 0.8, 'now': 0.3}])
    """
    was = dict(top_functions(before, n=10**6))
    is_ = dict(top_functions(now, n=10**6))
    moves = [(is_.get(f, 0.0) - was.get(f, 0.0), f) for f in set(was) | set(is_)]
    moves = [m for m in moves if abs(m[0]) >= DIFF_MIN]

    def side(grew: bool) -> list[dict[str, Any]]:
        picked = sorted((m for m in moves if (m[0] > 0) == grew), key=lambda m: (-abs(m[0]), m[1]))[:n]
        return [{"function": f, "before": round(was.get(f, 0.0), 4), "now": round(is_.get(f, 0.0), 4)}
                for _, f in picked]
    return {"grew": side(True), "shrank": side(False)}


def top_json(top: Iterable[tuple[str, float]]) -> list[dict[str, Any]]:
    """The top functions as alerts, the store and the API carry them.

    >>> top_json([("hot", 0.70004)])
    [{'function': 'hot', 'share': 0.7}]
    """
    return [{"function": f, "share": round(s, 4)} for f, s in top]


def top_text(top: Iterable[tuple[str, float]]) -> str:
    """The top functions as a few aligned lines (Slack code block, annotations).

    >>> print(top_text([("hot", 0.7), ("cold", 0.25)]))
     70%  hot
     25%  cold
    """
    return "\n".join(f"{round(s * 100):3d}%  {f}" for f, s in top)
