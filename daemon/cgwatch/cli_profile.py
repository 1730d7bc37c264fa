"""``cgwatch profile CONTAINER``: a CPU profile of one container, on demand.

The container is a name, a full id or a unique id prefix (as ``docker``
accepts 12 characters). The output format follows ``--output``'s extension:
``.folded`` (Brendan Gregg's folded stacks; also the default, to stdout),
``.json`` (speedscope), ``.svg`` (a static flame graph) or ``.html`` (one
self-contained interactive flame graph). The top functions go to stderr.
Ctrl-C ends the profile early; what was sampled is kept, marked partial.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .cli_notify import UsageError


def add_parser(sub: Any, duration: Any) -> None:
    """Add ``profile`` to the ``cgwatch`` sub-command parser."""
    p = sub.add_parser("profile", help="sample one container's CPU stacks for a while (root)")
    p.add_argument("container", help="container name, full id or unique id prefix")
    p.add_argument("--duration", "-d", type=duration, default=10.0, metavar="D", help="how long (default 10s)")
    p.add_argument("--output", "-o", default="-", metavar="FILE",
                   help="where to write: .folded, .json (speedscope), .svg or .html (default: folded to stdout)")
    p.add_argument("--hz", type=int, default=49, metavar="N", help="samples per second per CPU (default 49)")
    p.add_argument("--metadata-root", default="/", metavar="DIR", help="where runtimes keep their state (default /)")
    p.set_defaults(func=cmd_profile)


def output_format(path: str) -> str:
    """The format ``path`` asks for by its extension; UsageError for one we do not write.

    >>> output_format("web.svg"), output_format("-")
    ('svg', 'folded')
    >>> output_format("web.png")
    Traceback (most recent call last):
    ...
    cgwatch.cli_notify.UsageError: web.png: unknown profile format '.png' (use .folded, .json, .svg or .html)
    """
    from .profile.render import format_for

    if path == "-":
        return "folded"
    try:
        return format_for(path)
    except ValueError as e:
        raise UsageError(str(e)) from None


def cmd_profile(args: argparse.Namespace) -> int:
    from .identity import CgroupTree, Metadata, Resolver, find_cgroup2_root
    from .profile.formats import folded, top_functions, top_text
    from .profile.profiler import Profiler, find_container
    from .profile.sampler import run
    from .sources.bpf import SetupError, check_host

    fmt = output_format(args.output)
    if not 1 <= args.hz <= 1000:
        raise UsageError(f"--hz must be between 1 and 1000, not {args.hz}")
    check_host()
    root = find_cgroup2_root()
    if root is None:
        raise SetupError("no cgroup2 mount found: cgwatch needs cgroup v2 (unified or hybrid)")
    resolver = Resolver(CgroupTree(root), Metadata(Path(args.metadata_root)))
    resolver.refresh(time.time())
    try:
        container = find_container(resolver.containers(), args.container)
    except LookupError as e:
        raise UsageError(str(e)) from None
    profiler = Profiler(None, root, hz=args.hz)
    if not profiler.load():
        raise SetupError(f"cannot profile: {profiler.unavailable}")
    try:
        if not profiler.start(container, args.duration):
            raise UsageError(f"{container.name} has no cgroup left to profile (did it just stop?)")
        session = profiler.sessions[container.id][0]
        print(f"cgwatch: profiling {container.name} ({container.id[:12]}) for {args.duration:g}s at {args.hz} Hz",
              file=sys.stderr)
        stopped = _on_interrupt(session)
        try:
            profile = run(session)
        finally:
            signal.signal(signal.SIGINT, stopped)
        profiler.sessions.clear()
    finally:
        profiler.close()
    if fmt == "folded" and args.output == "-":
        sys.stdout.write(folded(profile))
        sys.stdout.flush()
    else:
        from .profile.render import write

        try:
            write(profile, args.output)
        except OSError as e:
            raise UsageError(f"{args.output}: cannot write: {e.strerror or e}") from None
    note = f", partial: {profile.partial}" if profile.partial else ""
    print(f"cgwatch: {profile.samples} samples in {profile.duration_s:g}s{note}", file=sys.stderr)
    if profile.lost:
        print(f"cgwatch: {profile.lost} samples lost their stack (the kernel's stack map had no slot for it)", file=sys.stderr)
    top = top_text(top_functions(profile))
    if top:
        print(top, file=sys.stderr)
    return 0


def _on_interrupt(session: Any) -> Any:
    """Ctrl-C ends the profile at the next poll, keeping what was sampled."""
    def handler(signum: int, frame: object) -> None:
        session.partial = "stopped by the user"
        session.duration_s = max(0.0, session.clock() - session.started)

    return signal.signal(signal.SIGINT, handler)
