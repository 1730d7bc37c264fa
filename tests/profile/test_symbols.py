"""Symbolizer against real processes: C programs built here, run, and named frame by frame."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cgwatch.profile import symbols
from cgwatch.profile.model import unknown
from cgwatch.profile.symbols import Symbolizer

pytestmark = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("nm")) and os.environ.get("CI") != "true",
                                reason="needs gcc and nm (make setup-test installs them)")

PROG = r"""
#include <time.h>
#include <unistd.h>
volatile unsigned long sink;
__attribute__((noinline)) void hot_alpha(void) { for (int i = 0; i < 1000; i++) sink += i; }
__attribute__((noinline)) void hot_beta(void) { for (int i = 0; i < 1000; i++) sink ^= i; }
int main(void) {
    struct timespec ts = {0, 1000000};
    write(1, "ready\n", 6);
    for (;;) { hot_alpha(); hot_beta(); nanosleep(&ts, 0); }
}
"""
FUNCS = ("hot_alpha", "hot_beta", "main")
NO_PID = 2**22 + 1  # above the largest pid_max


@pytest.fixture(scope="module")
def progs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """prog-pie, prog-nopie and prog-stripped (the PIE one, stripped)."""
    d = tmp_path_factory.mktemp("progs")
    (d / "prog.c").write_text(PROG)
    out = {"pie": d / "prog-pie", "nopie": d / "prog-nopie", "stripped": d / "prog-stripped"}
    cc = ["gcc", "-O1", "-fno-omit-frame-pointer", str(d / "prog.c")]
    subprocess.run([*cc, "-o", str(out["pie"])], check=True)
    subprocess.run([*cc, "-no-pie", "-o", str(out["nopie"])], check=True)
    subprocess.run(["strip", "--strip-all", "-o", str(out["stripped"]), str(out["pie"])], check=True)
    return out


@pytest.fixture
def run() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """run(argv) -> a started process that has printed its first line; killed afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str]) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE)
        procs.append(p)
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line, f"{argv} exited before it was ready"
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)


def nm(path: Path, dynamic: bool = False) -> dict[str, int]:
    out = subprocess.run(["nm", "--defined-only", *(["-D"] if dynamic else []), str(path)],
                         capture_output=True, text=True, check=True).stdout
    syms = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 3 and f[1] in "TtWwi":
            syms[f[2].split("@")[0]] = int(f[0], 16)
    return syms


def mappings(pid: int, name: str) -> list[tuple[int, int, str]]:
    """(start, offset, path) of pid's mappings of a file whose basename is name."""
    out = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        f = line.split(None, 5)
        path = f[5].removesuffix(" (deleted)") if len(f) == 6 else ""
        if os.path.basename(path) == name:
            out.append((int(f[0].split("-")[0], 16), int(f[2], 16), path))
    return out


def func_addrs(pid: int, prog: Path, pie: bool = True, syms_of: Path | None = None) -> dict[str, int]:
    """Run-time address of a point inside each of FUNCS (4 bytes past its start)."""
    base = next(start for start, off, _ in mappings(pid, prog.name) if off == 0) if pie else 0
    syms = nm(syms_of or prog)
    return {f: base + syms[f] + 4 for f in FUNCS}


def libc_addr(pid: int) -> tuple[int, set[str]]:
    """An address inside nanosleep in pid's libc, and the names at that address."""
    start, _, path = next(m for m in mappings(pid, "libc.so.6") if m[1] == 0)
    syms = nm(Path(path), dynamic=True)
    at = syms["nanosleep"]
    return start + at + 4, {n for n, v in syms.items() if v == at}


def assert_named(s: Symbolizer, pid: int, addrs: dict[str, int]) -> None:
    assert s.user(pid, list(addrs.values())) == list(addrs)


@pytest.mark.parametrize("kind", ["pie", "nopie"])
def test_executable_and_libc(progs: dict[str, Path], run: Callable[..., subprocess.Popen[bytes]], kind: str) -> None:
    p = run([str(progs[kind])])
    s = Symbolizer()
    assert s.watch(p.pid)
    assert_named(s, p.pid, func_addrs(p.pid, progs[kind], pie=kind == "pie"))
    addr, names = libc_addr(p.pid)
    assert s.user(p.pid, [addr])[0] in names
    assert s.stats["elf_loaded"] >= 2
    # a second Symbolizer-wide watch of the same files hits the build-id cache
    s.forget(p.pid)
    loaded = s.stats["elf_loaded"]
    s.watch(p.pid)
    assert s.stats["elf_loaded"] == loaded and s.stats["elf_cached"] >= 2


def test_stripped(progs: dict[str, Path], run: Callable[..., subprocess.Popen[bytes]]) -> None:
    prog = progs["stripped"]
    p = run([str(prog)])
    s = Symbolizer()
    addrs = func_addrs(p.pid, prog, syms_of=progs["pie"])
    # no symbol holds them: named by the module alone, one name for all, so their samples add up
    assert s.user(p.pid, list(addrs.values())) == ["[prog-stripped]"] * len(addrs)
    assert unknown("prog-stripped") == "[prog-stripped]"
    addr, names = libc_addr(p.pid)
    assert s.user(p.pid, [addr])[0] in names


@pytest.mark.skipif(not Path("/bin/busybox").exists() and os.environ.get("CI") != "true",
                    reason="needs /bin/busybox (Debian's busybox-static)")
def test_static_stripped_busybox(run: Callable[..., subprocess.Popen[bytes]]) -> None:
    """A static, stripped binary (what a busybox container runs): every address in its code is [busybox]."""
    p = run(["/bin/busybox", "sh", "-c", "echo ready; while :; do :; done"])
    text = [line.split() for line in Path(f"/proc/{p.pid}/maps").read_text().splitlines()
            if line.rstrip().endswith("/busybox") and "x" in line.split()[1]]
    assert text, Path(f"/proc/{p.pid}/maps").read_text()
    lo, hi = (int(x, 16) for x in text[0][0].split("-"))
    s = Symbolizer()
    assert s.watch(p.pid)
    assert s.user(p.pid, [lo, (lo + hi) // 2, hi - 1, 0x10]) == ["[busybox]"] * 3 + ["[unknown]"]


def test_debug_file(progs: dict[str, Path], run: Callable[..., subprocess.Popen[bytes]], tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A stripped file borrows the .symtab of its dbgsym file, found by build id."""
    if not shutil.which("objcopy"):
        pytest.skip("needs objcopy")
    note = subprocess.run(["readelf", "-n", str(progs["stripped"])], capture_output=True, text=True).stdout
    build_id = next(ln.split()[-1] for ln in note.splitlines() if "Build ID" in ln)
    debug = tmp_path / build_id[:2] / f"{build_id[2:]}.debug"
    debug.parent.mkdir()
    subprocess.run(["objcopy", "--only-keep-debug", str(progs["pie"]), str(debug)], check=True)
    monkeypatch.setattr(symbols, "DEBUG_DIR", tmp_path)
    p = run([str(progs["stripped"])])
    assert_named(Symbolizer(), p.pid, func_addrs(p.pid, progs["stripped"], syms_of=progs["pie"]))


@pytest.mark.bpf
def test_deleted_binary(progs: dict[str, Path], run: Callable[..., subprocess.Popen[bytes]], tmp_path: Path) -> None:
    prog = tmp_path / "prog-gone"
    shutil.copy(progs["pie"], prog)
    p = run([str(prog)])
    addrs = func_addrs(p.pid, prog)
    prog.unlink()
    assert_named(Symbolizer(), p.pid, addrs)  # through map_files
    s = Symbolizer(use_map_files=False)  # the path is gone: the module, no name
    assert s.user(p.pid, list(addrs.values())) == [unknown("prog-gone")] * len(addrs)


def test_exited_process(progs: dict[str, Path], run: Callable[..., subprocess.Popen[bytes]]) -> None:
    p = run([str(progs["pie"])])
    addrs = func_addrs(p.pid, progs["pie"])
    s = Symbolizer()
    assert s.watch(p.pid)
    p.kill()
    p.wait(timeout=10)
    assert not s.watch(p.pid)
    assert_named(s, p.pid, addrs)
    s.forget(p.pid)
    assert s.user(p.pid, [addrs["main"]]) == [unknown()]


@pytest.mark.bpf
def test_other_mount_namespace(progs: dict[str, Path], run: Callable[..., subprocess.Popen[bytes]],
                               tmp_path: Path) -> None:
    if not shutil.which("unshare"):
        pytest.skip("needs unshare")
    mnt = tmp_path / "ns-mnt"
    mnt.mkdir()
    script = f"mount -t tmpfs none {mnt} && cp {progs['pie']} {mnt}/prog-ns && exec {mnt}/prog-ns"
    p = run(["unshare", "-m", "--propagation", "private", "sh", "-c", script])
    assert os.readlink(f"/proc/{p.pid}/exe") == f"{mnt}/prog-ns"
    assert not (mnt / "prog-ns").exists()  # invisible from here
    addrs = func_addrs(p.pid, Path("prog-ns"), syms_of=progs["pie"])
    assert_named(Symbolizer(), p.pid, addrs)
    assert_named(Symbolizer(use_map_files=False), p.pid, addrs)  # through /proc/PID/root


def test_fake_perf_map(progs: dict[str, Path], run: Callable[..., subprocess.Popen[bytes]]) -> None:
    p = run([str(progs["pie"])])
    perf_map = Path(f"/proc/{p.pid}/root/tmp/perf-{p.pid}.map")  # same pid namespace as this test
    try:
        perf_map.write_text("10000 100 cgw_fake jit fn\n")  # below mmap_min_addr: never a file mapping
        s = Symbolizer()
        addr = func_addrs(p.pid, progs["pie"])["hot_alpha"]
        assert s.user(p.pid, [0x10010, 0x10100, addr]) == ["cgw_fake jit fn", unknown(), "hot_alpha"]
        with perf_map.open("a") as f:
            f.write("20000 10 cgw_later\n")
        assert s.watch(p.pid)
        assert s.user(p.pid, [0x20001]) == ["cgw_later"]
        assert s.stats["perf_map_read"] == 2
    finally:
        perf_map.unlink(missing_ok=True)


def python_with_perf() -> str | None:
    """The real executable of a Python >= 3.12 (``-X perf``), or None."""
    try:
        pyenv = sorted(Path(os.environ.get("PYENV_ROOT", "~/.pyenv")).expanduser().glob("versions/3.1*/bin/python3"))
    except OSError:
        pyenv = []
    for cand in ("python3.13", "python3.12", sys.executable, *map(str, pyenv)):
        if not shutil.which(cand) and not os.path.exists(cand):
            continue
        try:
            r = subprocess.run([cand, "-c", "import sys; assert sys.version_info >= (3, 12); print(sys.executable)"],
                               capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return r.stdout.strip()
    return None


BUSY = """
def cgw_busy_fn():
    n = 0
    for i in range(10_000):
        n += i
    return n
cgw_busy_fn()
print("ready", flush=True)
while True:
    cgw_busy_fn()
"""


def test_python_perf_map(run: Callable[..., subprocess.Popen[bytes]]) -> None:
    py = python_with_perf()
    if py is None:
        pytest.skip("needs Python >= 3.12 for -X perf")
    p = run([py, "-X", "perf", "-c", BUSY])
    perf_map = Path(f"/tmp/perf-{p.pid}.map")
    try:
        entry = None
        for _ in range(100):
            text = perf_map.read_text() if perf_map.exists() else ""
            entry = next((ln for ln in text.splitlines() if "cgw_busy_fn" in ln), None)
            if entry:
                break
            time.sleep(0.05)
        assert entry, "python -X perf wrote no entry for cgw_busy_fn"
        start, _, name = entry.split(" ", 2)
        assert Symbolizer().user(p.pid, [int(start, 16) + 1]) == [name]
    finally:
        perf_map.unlink(missing_ok=True)


def kallsyms_text() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path("/proc/kallsyms").read_text().splitlines():
        f = line.split()
        if f[1] in "tTwW":
            out.setdefault(f[2], int(f[0], 16))
    return out


@pytest.mark.bpf
def test_kernel() -> None:
    syms = kallsyms_text()
    if not any(syms.values()):
        pytest.skip("kallsyms shows no addresses")
    by_addr: dict[int, set[str]] = {}
    for n, a in syms.items():
        by_addr.setdefault(a, set()).add(n)
    wanted = [n for n in ("schedule", "do_sys_openat2", "vfs_read") if n in syms]
    assert wanted
    s = Symbolizer()
    names = s.kernel([syms[n] + 1 for n in wanted] + [1])
    for n, got in zip(wanted, names):
        assert got in by_addr[syms[n]]
    assert names[-1] == unknown("kernel")


def test_kernel_from_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ks = tmp_path / "kallsyms"
    ks.write_text("ffffffff81000100 t __alpha\nffffffff81000100 T alpha\nffffffff81000000 T _text\nffffffff81000200 d some_data\n"
                  "ffffffffc0000000 t mod_fn\t[mymod]\n")
    s = Symbolizer(kallsyms=ks)
    assert s.kernel([0xFFFFFFFF81000105, 0xFFFFFFFF81000205, 0xFFFFFFFFC0000010, 0x10]) == [
        "alpha", "alpha", "mod_fn", unknown("kernel")]
    zero = tmp_path / "kallsyms0"
    zero.write_text("0000000000000000 T alpha\n0000000000000000 T beta\n")
    s = Symbolizer(kallsyms=zero)
    with caplog.at_level(logging.WARNING, logger="cgwatch.profile"):
        assert s.kernel([0xFFFFFFFF81000105]) == ["[kernel]"]
        assert s.kernel([0xFFFFFFFF81000106, 1]) == [unknown("kernel")] * 2
    assert len([r for r in caplog.records if "kallsyms" in r.getMessage()]) == 1


def test_no_such_pid() -> None:
    s = Symbolizer()
    assert not s.watch(NO_PID)
    assert s.user(NO_PID, [0x401000, 0x7F0000001000]) == [unknown(), unknown()]


def test_module_names_from_maps(tmp_path: Path) -> None:
    """Modules named from a maps file alone, when no file can be opened."""
    d = tmp_path / "proc" / "42"
    d.mkdir(parents=True)
    (d / "stat").write_text("42 (x y) S " + "0 " * 30)
    (d / "status").write_text("Name:\tx\nNSpid:\t42\t7\n")
    (d / "maps").write_text(
        "1000-2000 r-xp 00000000 fe:00 11 /usr/lib/libc.so.6\n"
        "3000-4000 r-xp 00000000 fe:00 12 /opt/app/bin/srv (deleted)\n"
        "5000-6000 rwxp 00000000 00:00 0 \n"
        "7000-8000 rw-p 00000000 00:00 0 [heap]\n"
        "9000-a000 r-xp 00000000 00:00 0 [vdso]\n"
        "c000-d000 rw-p 00001000 fe:00 11 /usr/lib/libc.so.6\n")
    s = Symbolizer(proc=tmp_path / "proc")
    assert s.watch(42)
    # by module alone; pseudo-modules keep their brackets; no executable mapping (the heap: a broken
    # frame-pointer walk) or no mapping at all: [unknown]
    assert s.user(42, [0x1500, 0x3500, 0x5500, 0x7500, 0x9500, 0xB000, 0xC500]) == [
        "[libc.so.6]", "[srv]", "[anon]", "[unknown]", "[vdso]", "[unknown]", "[unknown]"]
    assert s.stats["elf_failed"] == 2


if __name__ == "__main__":
    # cost, not asserted: watch this process, then name 20,000 libc addresses twice
    pid = os.getpid()
    t = time.perf_counter()
    sym = Symbolizer()
    sym.watch(pid)
    t_watch = time.perf_counter() - t
    libc = next(m for m in mappings(pid, "libc.so.6") if m[1] == 0)
    starts = [libc[0] + v + 1 for v in nm(Path(libc[2]), dynamic=True).values()]
    sample = (starts * (20_000 // len(starts) + 1))[:20_000]
    t = time.perf_counter()
    sym.user(pid, sample)
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    sym.user(pid, sample)
    t_again = time.perf_counter() - t
    t = time.perf_counter()
    sym.kernel([0xFFFFFFFF81000000 + i for i in range(20_000)])
    t_kernel = time.perf_counter() - t
    print(f"watch {t_watch * 1e3:.1f} ms ({sym.stats['elf_loaded']} files), 20k user addresses "
          f"{t_first * 1e3:.1f} ms first, {t_again * 1e3:.1f} ms cached; kallsyms + 20k kernel {t_kernel * 1e3:.1f} ms")
