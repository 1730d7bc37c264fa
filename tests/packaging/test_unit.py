"""The service unit, the default config and ``make install`` (issue 6, item 4)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "systemd" / "cgwatch.service"
CONFIG = ROOT / "packaging" / "config.yaml"
CGWATCH = Path(sys.executable).parent / "cgwatch"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def unit_settings() -> dict[str, list[str]]:
    """``[Service]`` key -> every value it is given (comments skipped)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def runnable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart naming an executable that exists here (verify checks it)."""
    text = UNIT.read_text().replace("/opt/cgwatch/bin/cgwatch", str(CGWATCH))
    copy = tmp_path / "cgwatch.service"
    copy.write_text(text)
    return copy


def test_unit_has_the_required_settings() -> None:
    s = unit_settings()
    want = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30s", "Restart": "on-failure",
        "TimeoutStopSec": "15s", "StateDirectory": "cgwatch", "ConfigurationDirectory": "cgwatch",
        "RuntimeDirectory": "cgwatch", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ExecStart": "/opt/cgwatch/bin/cgwatch run --config /etc/cgwatch/config.yaml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        # not systemd's default soft limit of 1,024 descriptors, which idle HTTP connections exhausted (issue 15)
        "LimitNOFILE": "65536:65536",
    }
    for key, value in want.items():
        assert s.get(key) == [value], key
    caps = set(s["CapabilityBoundingSet"][0].split())
    assert {"CAP_BPF", "CAP_PERFMON"} <= caps
    assert "CAP_SYS_ADMIN" not in caps
    assert "ProtectProc" not in s, "cgwatch reads /proc/<pid>/cgroup of every process"


@needs_analyze
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    r = subprocess.run([ANALYZE, "verify", str(runnable_copy(tmp_path))], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "cgwatch.service" not in r.stderr, r.stderr


@needs_analyze
def test_security_exposure_is_at_most_3_3(tmp_path: Path) -> None:
    r = subprocess.run([ANALYZE, "security", "--offline=yes", str(runnable_copy(tmp_path))],
                       capture_output=True, text=True)
    m = re.search(r"Overall exposure level for cgwatch\.service: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 3.3, r.stdout


def cgwatch_check(cgwatch: Path | str, config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(cgwatch), "rules", "check", "--config", str(config)],
                          capture_output=True, text=True, env={**os.environ, **env})


def test_default_config_loads() -> None:
    r = cgwatch_check(CGWATCH, CONFIG)
    assert r.returncode == 0, r.stderr


def test_every_commented_key_is_a_real_key(tmp_path: Path) -> None:
    """Uncomment every example key and sink: the result still loads."""
    (tmp_path / "slack-url").write_text("https://hooks.slack.com/services/x\n")
    (tmp_path / "pager-hmac").write_text("s3cret\n")
    (tmp_path / "rules.d").mkdir()
    (tmp_path / "rules.d" / "local.yaml").write_text("rules: []\n")
    out, block = [], False
    for line in CONFIG.read_text().splitlines():
        if re.match(r"#[a-z_]+:", line):
            line, block = line[1:], True
        elif block and line.startswith("#  "):
            line = line[1:]
        else:
            block = False
        line = line.replace("/etc/cgwatch/", f"{tmp_path}/").replace("/var/lib/cgwatch/", f"{tmp_path}/")
        line = line.replace("  - ../rules", f"  - {ROOT / 'rules'}").replace("  #- rules.d", "  - rules.d")
        out.append(re.sub(r"^    #(channel|max_lines):", r"    \1:", line))
    config = tmp_path / "config.yaml"
    config.write_text("\n".join(out) + "\n")
    assert "ops-slack:" in config.read_text() and "\n  - rules.d" in config.read_text()
    r = cgwatch_check(CGWATCH, config, PAGER_URL="https://example.com/hook")
    assert r.returncode == 0, r.stderr
    assert "ok (6 sink(s))" in r.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="make install runs scripts/setup.sh, which needs root")
def test_make_install_reinstall_uninstall(tmp_path: Path) -> None:
    dirs = [f"PREFIX={tmp_path}/opt/cgwatch", f"SYSCONFDIR={tmp_path}/etc", f"UNITDIR={tmp_path}/systemd"]

    def make(target: str) -> None:
        r = subprocess.run(["make", "-C", str(ROOT), target, *dirs], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    make("install")
    prefix, conf = tmp_path / "opt" / "cgwatch", tmp_path / "etc" / "cgwatch" / "config.yaml"
    assert (prefix / "rules" / "default.yaml").is_file()
    assert (tmp_path / "etc" / "cgwatch" / "rules.d").is_dir()
    r = cgwatch_check(prefix / "bin" / "cgwatch", conf)
    assert r.returncode == 0, r.stderr
    assert f"{prefix}/rules/default.yaml: " in r.stdout
    unit = (tmp_path / "systemd" / "cgwatch.service").read_text()
    assert f"ExecStart={prefix}/bin/cgwatch run --config {conf}\n" in unit
    # the installed program is a copy, not the checkout
    r = subprocess.run([str(prefix / "bin" / "cgwatch"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    site = subprocess.run([str(prefix / "venv" / "bin" / "python"), "-c", "import cgwatch; print(cgwatch.__file__)"],
                          capture_output=True, text=True, check=True).stdout
    assert site.startswith(str(prefix))

    edited = conf.read_text().replace("#interval: 1s", "interval: 5s")
    conf.write_text(edited)
    make("install")
    assert conf.read_text() == edited, "a second install must keep the operator's config"
    assert cgwatch_check(prefix / "bin" / "cgwatch", conf).returncode == 0

    make("uninstall")
    assert not prefix.exists()
    assert not (tmp_path / "systemd" / "cgwatch.service").exists()
    assert conf.read_text() == edited, "uninstall keeps the config, as packages do"
