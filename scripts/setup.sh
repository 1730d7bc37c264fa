#!/usr/bin/env bash
# Bring this host to where cgwatch runs: Debian's BCC and journald bindings,
# kernel headers BCC can compile against, tracefs mounted, and .venv with
# cgwatch installed editable. Idempotent: a second run only checks.
#
#   scripts/setup.sh            what `make run` needs
#   scripts/setup.sh --test     plus what `make test` needs (pytest, bpftrace, chromium, playwright)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: %s\n' "$*" >&2; exit 2; }

[[ $(id -u) -eq 0 ]] || die "needs root (BPF, packages, tracefs): run it with sudo"

# --- Debian packages --------------------------------------------------------
pkgs=(python3-bpfcc python3-systemd python3-venv)
# The running kernel's own headers when Debian packages them, else the
# distribution's default flavour (see docs/install.md for why that is safe).
kver=$(uname -r)
[[ -d /lib/modules/$kver/build/include ]] || pkgs+=(linux-headers-amd64)
# bpftrace: the probe benchmark's peer; chromium: the browser tests drive it (Playwright,
# launched from /usr/bin/chromium: no browser downloads); gcc, libc6-dev, binutils: the
# profiler tests build C programs with known hot functions and strip them; prometheus
# (with promtool) and prometheus-alertmanager: the fleet tests run a real Prometheus
# and a three-node Alertmanager cluster; iproute2: their network namespaces; docker.io
# (containerd, runc), podman and busybox-static: the runtime tests run real containers of
# an image made on the spot from busybox (tests/engines.py; no registry needed); mmdebstrap:
# the Kubernetes image test builds its Debian base from the archive (no registry to pull one)
((want_test)) && pkgs+=(bpftrace chromium fonts-dejavu-core gcc libc6-dev binutils prometheus
                        prometheus-alertmanager iproute2 docker.io containerd runc podman
                        busybox-static mmdebstrap)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install BCC (python3-bpfcc) and kernel headers by hand"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # the exact headers of the running kernel, if the archive has them
    if apt-cache show "linux-headers-$kver" >/dev/null 2>&1; then
        missing+=("linux-headers-$kver")
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- kernel headers for BCC -------------------------------------------------
if [[ ! -d /lib/modules/$kver/build/include ]]; then
    hdr=$(ls -d /usr/src/linux-headers-*-amd64 /usr/src/linux-headers-*-arm64 2>/dev/null | sort -V | tail -1 || true)
    [[ -n "$hdr" ]] || die "no kernel headers under /usr/src: install linux-headers for $kver"
    say "kernel $kver has no packaged headers; using $hdr (safe: cgwatch reads only tracepoint arguments and helper results)"
    mkdir -p "/lib/modules/$kver"
    ln -sfn "$hdr" "/lib/modules/$kver/build"
    ln -sfn "${hdr%-*}-common" "/lib/modules/$kver/source"
fi

# --- tracefs ----------------------------------------------------------------
if [[ ! -e /sys/kernel/tracing/events ]]; then
    mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null \
        || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null \
        || say "warning: could not mount tracefs; BPF tracepoints will not attach"
fi

# --- venv ---------------------------------------------------------------------
py=/usr/bin/python3   # Debian's python: the one python3-bpfcc installs into
stamp=.venv/.cgwatch-installed
if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c 'import bcc' 2>/dev/null; then
    rm -rf .venv
    say "creating .venv from $py (with system site packages, for bcc)"
    "$py" -m venv --system-site-packages .venv
fi
extra=""
((want_test)) && extra="[test]"
have=$(cat "$stamp" 2>/dev/null || echo none)
[[ $have == "[test]" ]] && extra="[test]"   # keep what is there: run and test share .venv
if [[ $have == none || pyproject.toml -nt $stamp || ( -n $extra && $have != "$extra" ) ]]; then
    say "installing cgwatch$extra into .venv"
    .venv/bin/pip install -q --disable-pip-version-check -e ".$extra"
    printf '%s' "$extra" > "$stamp"
fi
