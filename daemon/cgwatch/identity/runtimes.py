"""Cgroup path → container: which runtime made a cgroup, and for what.

A container, as cgwatch sees it, is a cgroup whose path a runtime chose.
:func:`identify` reads only the path (no file system, no runtime API), so it
is a pure function with a table test (``tests/identity/test_runtimes.py``).

How a path is read, in order:

1. **Runtime helpers are cut off.** Everything from the first component that
   holds a runtime's helper process rather than a container — CRI-O's and
   podman's ``conmon`` (``crio-conmon-<id>.scope``, ``libpod-conmon-<id>.scope``,
   podman's cgroupfs ``conmon``) and LXC's monitor (``lxc.monitor.<name>``,
   ``lxc.monitor``, ``lxc.pivot``) — is dropped, and the rest of the path is
   identified instead. So conmon is charged to whatever holds it: the host
   for ``machine.slice`` or a Kubernetes pod slice, the user manager
   (``user@1000.service``) for rootless podman, the node container in kind.
2. **The deepest container component wins** (docker, containerd, CRI-O,
   podman, LXC, nspawn). Container patterns beat unit patterns anywhere in
   the path, and a container nested in another (docker in LXC, kind's pods in
   a docker "node") is the inner one.
3. **Otherwise the deepest systemd unit** (``*.service``, ``*.scope``, and the
   rarer ``*.socket``, ``*.mount``, ``*.swap`` that own cgroups while their
   commands run) is a unit with runtime ``systemd``.
4. **Otherwise** the path belongs to the host (:data:`cgwatch.model.HOST`).

``cgroup`` of the result is the path up to and including the component that
identified it, so every sub-cgroup of a container (docker's ``init``,
podman's ``container``, nspawn's ``payload``) maps to the same Container.

A bare 64-hex component is docker's cgroupfs driver (``docker/<id>``, or any
``--cgroup-parent`` such as ``ecs/<task>/<id>``) unless its parent is a
Kubernetes pod; under a pod the runtime cannot be told from the path and is
``cri`` until :mod:`cgwatch.identity.metadata` finds its state.

Examples
--------
>>> c = identify("system.slice/docker-" + "ab" * 32 + ".scope/init")
>>> c.runtime, c.name, c.cgroup == "system.slice/docker-" + "ab" * 32 + ".scope"
('docker', 'abababababab', True)
>>> identify("system.slice/cron.service").id
'cron.service'
>>> identify("") is HOST
True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from ..model import HOST, Container

_HEX = r"([0-9a-f]{64})"

#: One component that is a container all by itself: (pattern, runtime).
#: The first group is the id.
_SCOPES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), runtime)
    for pattern, runtime in (
        (rf"docker-{_HEX}\.scope", "docker"),
        (rf"cri-containerd-{_HEX}\.scope", "containerd"),
        (rf"crio-{_HEX}(?:\.scope)?", "cri-o"),
        (rf"libpod-(?:payload-)?{_HEX}(?:\.scope)?", "podman"),
    )
)

#: containerd without ``SystemdCgroup = true`` under a systemd-driver kubelet
#: makes one literal directory named ``<slice>:<prefix>:<id>``.
_COLON = re.compile(rf"([^:/]+\.slice):([^:/]+):{_HEX}")
_COLON_PREFIXES = {"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker", "libpod": "podman"}

_LXC_PAYLOAD = re.compile(r"lxc\.payload\.(.+)")
_NSPAWN = re.compile(r"systemd-nspawn@(.+)\.service")
_MACHINE = re.compile(r"machine-(.+)\.scope")
_LIBVIRT_LXC = re.compile(r"lxc-\d+-(.+)")
_LXC_PARENTS = ("lxc", "lxc.payload")

#: Kubernetes pod components. systemd driver: ``[<root>-]kubepods[-<qos>]-pod<uid>.slice``
#: (uid with ``_`` for ``-``); cgroupfs driver: ``pod<uid>`` below ``kubepods``.
_POD_SLICE = re.compile(r"(?:.+-)?kubepods(?:-(burstable|besteffort))?-pod([0-9a-f_]+)\.slice")
_POD_DIR = re.compile(r"pod([0-9a-f-]+)")
_QOS_DIRS = ("burstable", "besteffort")

_HELPERS = re.compile(r"(?:crio|libpod)-conmon-[0-9a-f]{64}(?:\.scope)?|conmon|lxc\.monitor(?:\..+)?|lxc\.pivot")
_UNIT = re.compile(r".+\.(?:service|scope|socket|mount|swap)")
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")

#: A container found at one component: (runtime, id, name, pod uid, qos).
_Found = tuple[str, str, str, str, str]


def identify(path: str) -> Container:
    """Map a cgroup path (relative to the cgroup2 mount) to its Container.

    ``path`` has no leading slash; ``""`` is the root. The result is a fresh
    Container with the short id as its name; metadata may rename it later.

    Examples
    --------
    >>> uid = "5c3a-77"
    >>> c = identify("kubepods/besteffort/pod" + uid + "/" + "0f" * 32)
    >>> c.runtime, c.pod, c.qos
    ('cri', '5c3a-77', 'besteffort')
    >>> identify("lxc.payload.web/system.slice/nginx.service").id
    'web'
    >>> identify("user.slice/user-1000.slice/session-3.scope").cgroup
    'user.slice/user-1000.slice/session-3.scope'
    >>> identify("machine.slice/libpod-conmon-" + "1a" * 32 + ".scope") is HOST
    True
    """
    parts = _cut_helpers(path.strip("/").split("/") if path.strip("/") else [])
    for i in range(len(parts) - 1, -1, -1):
        found = _container_at(parts, i)
        if found is not None:
            runtime, cid, name, pod, qos = found
            cgroup = "/".join(parts[: i + 1])
            return Container(id=cid, name=name, runtime=runtime, cgroup=cgroup, pod=pod, qos=qos)
    return _unit(parts)


def unescape(name: str) -> str:
    r"""Undo systemd's ``\xHH`` escaping in a unit or machine name.

    Examples
    --------
    >>> unescape(r"my\x2dbox")
    'my-box'
    """
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), name)


def _cut_helpers(parts: list[str]) -> list[str]:
    """Drop the first runtime-helper component (conmon, LXC monitor) and all below."""
    for i, part in enumerate(parts):
        if _HELPERS.fullmatch(part):
            return parts[:i]
    return parts


def _container_at(parts: Sequence[str], i: int) -> _Found | None:
    """The container that component ``i`` names, given its ancestors, if any."""
    for matcher in _MATCHERS:
        found = matcher(parts, i)
        if found is not None:
            return found
    return None


def _match_scope(parts: Sequence[str], i: int) -> _Found | None:
    """docker / containerd / CRI-O / podman ids in their usual one-component form."""
    for pattern, runtime in _SCOPES:
        m = pattern.fullmatch(parts[i])
        if m:
            pod, qos = _pod_of(parts, i)
            return runtime, m.group(1), m.group(1)[:12], pod, qos
    return None


def _match_colon(parts: Sequence[str], i: int) -> _Found | None:
    """containerd's ``<pod slice>:<prefix>:<id>`` directory (cgroupfs under a systemd kubelet)."""
    m = _COLON.fullmatch(parts[i])
    if not m:
        return None
    runtime = _COLON_PREFIXES.get(m.group(2), "cri")
    pod, qos = _pod_from_slice(m.group(1))
    return runtime, m.group(3), m.group(3)[:12], pod, qos


def _match_bare_hex(parts: Sequence[str], i: int) -> _Found | None:
    """A bare 64-hex id: a CRI container under a pod, else docker's cgroupfs driver."""
    m = re.fullmatch(_HEX, parts[i])
    if not m:
        return None
    pod, qos = _pod_of(parts, i)
    runtime = "cri" if pod else "docker"
    return runtime, m.group(1), m.group(1)[:12], pod, qos


def _match_lxc(parts: Sequence[str], i: int) -> _Found | None:
    """LXC: ``lxc.payload.<name>`` (LXC 4+), ``lxc.payload/<name>``, ``lxc/<name>``."""
    m = _LXC_PAYLOAD.fullmatch(parts[i])
    if m:
        return "lxc", m.group(1), m.group(1), "", ""
    if i > 0 and parts[i - 1] in _LXC_PARENTS:
        return "lxc", parts[i], parts[i], "", ""
    return None


def _match_machine(parts: Sequence[str], i: int) -> _Found | None:
    """systemd-nspawn (``systemd-nspawn@<name>.service``, ``machine-<name>.scope``).

    machined also registers libvirt guests: ``machine-lxc\\x2d<pid>\\x2d<name>``
    is a libvirt LXC container (runtime ``lxc``); ``machine-qemu…`` is a VM,
    not a container, and is left to the unit rule.
    """
    m = _NSPAWN.fullmatch(parts[i]) or _MACHINE.fullmatch(parts[i])
    if not m:
        return None
    name = unescape(m.group(1))
    if name.startswith("qemu-"):
        return None
    libvirt = _LIBVIRT_LXC.fullmatch(name)
    if libvirt and m.re is _MACHINE:
        return "lxc", libvirt.group(1), libvirt.group(1), "", ""
    return "nspawn", name, name, "", ""


_MATCHERS: tuple[Callable[[Sequence[str], int], _Found | None], ...] = (
    _match_scope,
    _match_colon,
    _match_bare_hex,
    _match_lxc,
    _match_machine,
)


def _pod_of(parts: Sequence[str], i: int) -> tuple[str, str]:
    """(pod uid, QoS class) when component ``i``'s parent is a Kubernetes pod."""
    if i == 0:
        return "", ""
    parent = parts[i - 1]
    pod, qos = _pod_from_slice(parent)
    if pod:
        return pod, qos
    m = _POD_DIR.fullmatch(parent)
    if m and any("kubepods" in p for p in parts[: i - 1]):
        qos = parts[i - 2] if parts[i - 2] in _QOS_DIRS else "guaranteed"
        return m.group(1), qos
    return "", ""


def _pod_from_slice(component: str) -> tuple[str, str]:
    """(pod uid with dashes, QoS class) from a systemd-driver pod slice name."""
    m = _POD_SLICE.fullmatch(component)
    if not m:
        return "", ""
    return m.group(2).replace("_", "-"), m.group(1) or "guaranteed"


def _unit(parts: Sequence[str]) -> Container:
    """The deepest systemd unit in ``parts``, or HOST.

    A unit inside another unit's tree (a user manager's services) is named
    with the units above it, ``user@1000.service/dbus.service``: a bare
    ``dbus.service`` or ``init.scope`` would collide with the system's own.
    """
    units = [i for i, part in enumerate(parts) if _UNIT.fullmatch(part)]
    if not units:
        return HOST
    uid = "/".join(parts[i] for i in units)
    return Container(id=uid, name=uid, runtime="systemd", cgroup="/".join(parts[: units[-1] + 1]))
