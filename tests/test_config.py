"""The config file: a good one, the defaults, and each kind of mistake as one FILE:LINE:COL line."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cgwatch.alerts.notification import SinkPolicy
from cgwatch.config import Config, ConfigError, load_config
from cgwatch.sinks import build_sinks

SECRET = "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX"


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(p)


def error(path: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "\n" not in str(e.value)
    return e.value


def test_good_file(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text("rules: []\n")
    (tmp_path / "rules" / "b.yaml").write_text("rules: []\n")
    path = write(tmp_path, f"""
        interval: 500ms
        rules: [rules/*.yaml, /etc/cgwatch/rules.d]
        state_dir: /tmp/state
        listen: "[::1]:9999"
        host: node-7
        collectors: {{net: false, exit_codes: false}}
        notify:
          ops:
            type: slack
            url: {SECRET}
            min_severity: warning
            group_wait: 5s
            max_group: 10
            rate_limit: 6
            repeat: 1h
            max_age: 1d
          hook: {{type: webhook, url: "http://127.0.0.1:8080/x", secret: k, timeout: 3s, tls_verify: false,
                 headers: {{X-Team: web}}}}
          am: {{type: alertmanager, url: "http://am:9093"}}
          j: {{type: journald}}
          out: {{type: stdout}}
          f: {{type: file, path: {tmp_path}/alerts.jsonl}}
    """)
    cfg = load_config(path)
    assert cfg.interval == 0.5 and cfg.state_dir == "/tmp/state" and cfg.listen == "[::1]:9999" and cfg.host == "node-7"
    assert cfg.rules == [str(tmp_path / "rules" / "a.yaml"), str(tmp_path / "rules" / "b.yaml"), "/etc/cgwatch/rules.d"]
    assert cfg.sources() == ["cpu", "proc", "mem", "cgroupfs"] and cfg.exit_codes is False
    assert list(cfg.notify) == ["ops", "hook", "am", "j", "out", "f"]
    assert cfg.notify["ops"].policy() == SinkPolicy("warning", 5.0, 10, 6.0, 3600.0, 86400.0)
    assert cfg.notify["hook"].timeout == 3.0 and cfg.notify["hook"].tls_verify is False  # type: ignore[attr-defined]
    sinks = build_sinks(cfg.notify)
    assert sinks["ops"].policy.min_severity == "warning" and type(sinks["f"]).__name__ == "FileSink"
    assert SECRET not in repr(cfg) and SECRET not in repr(sinks["ops"])


def test_no_file_gives_the_defaults() -> None:
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.interval == 1.0 and cfg.state_dir == "/var/lib/cgwatch" and cfg.listen == "127.0.0.1:9477"
    assert cfg.host == socket.gethostname() and cfg.collectors == {} and cfg.exit_codes
    assert cfg.sources() == ["cpu", "proc", "mem", "net", "cgroupfs"]
    assert [c.type for c in cfg.notify.values()] == ["journald"]
    assert len(cfg.rules) == 1 and Path(cfg.rules[0], "default.yaml").is_file()


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file_gives_the_defaults(tmp_path: Path, text: str) -> None:
    assert load_config(write(tmp_path, text)) == Config()


def test_notify_can_be_empty(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "notify: {}\n")).notify == {}
    assert load_config(write(tmp_path, "notify:\n")).notify == {}


# (file text, line, col, message); the message is matched as a substring
MISTAKES = [
    ("intervl: 1s\n", 1, 1, "unknown key 'intervl' (did you mean 'interval'?)"),
    ("interval: 5 parsecs\n", 1, 11, "interval: '5 parsecs' is not a duration"),
    ("interval: 0s\n", 1, 11, "interval: Input should be greater than 0"),
    ("listen: localhost\n", 1, 9, "listen: must be HOST:PORT"),
    ("collectors: {cpu: true, gpu: false}\n", 1, 13, "unknown collector 'gpu'"),
    ("collectors: {cpu: maybe}\n", 1, 19, "collectors.cpu: Input should be a valid boolean"),
    ("rules: nope.yaml\n", 1, 8, "rules: Input should be a valid list"),
    ("rules: [/nonexistent/*.yaml]\n", 1, 9, "rules[0]: '/nonexistent/*.yaml' matches no file"),
    ("notify:\n  ops:\n    type: webhook\n    urll: http://x/\n", 4, 5,
     "notify.ops: unknown key 'urll' (did you mean 'url'?)"),
    ("notify:\n  ops:\n    type: webhook\n    timeout: 3s\n", 2, 3, "notify.ops: missing key 'url'"),
    ("notify:\n  ops:\n    type: webhook\n\n    url: ftp://example.com/x\n", 5, 10,
     "notify.ops.url: not an http(s) URL"),
    ("notify:\n  ops: {type: slak, url: 'http://x/'}\n", 2, 15, "notify.ops.type: unknown sink type 'slak' (did you mean 'slack'?)"),
    ("notify:\n  ops: {url: 'http://x/'}\n", 2, 3, "notify.ops: missing key 'type'"),
    # issue 15: a list or mapping as the type was a TypeError (a traceback, and SIGHUP killed the daemon)
    ("notify: {hook: {type: [webhook], url: 'http://127.0.0.1:9/x'}}\n", 1, 23,
     "notify.hook.type: must be one of journald, webhook, slack, alertmanager, stdout, file, not a list"),
    ("notify:\n  hook:\n    type: {webhook: 1}\n", 3, 11, "notify.hook.type: must be one of journald"),
    ("notify:\n  ops: webhook\n", 2, 8, "notify.ops: must be a mapping"),
    ("notify:\n  ops: {type: stdout, min_severity: warn}\n", 2, 37, "notify.ops.min_severity: Input should be 'info'"),
    ("notify:\n  ops: {type: stdout, group_wait: soon}\n", 2, 35, "notify.ops.group_wait: 'soon' is not a duration"),
    ("notify:\n  ops: {type: stdout, max_group: 0}\n", 2, 34, "notify.ops.max_group: Input should be greater than or equal to 1"),
    ("notify:\n  f: {type: file, path: /nonexistent/dir/a.jsonl}\n", 2, 25,
     "notify.f.path: directory /nonexistent/dir does not exist"),
    ("interval: 1s\ninterval: 2s\n", 2, 1, "interval: duplicate key (first at line 1)"),
    ("a: &x 1\nb: *x\n", 2, 4, "YAML aliases (*name) are not allowed in config files"),
    ("interval: [1s\n", 2, 1, "expected ',' or ']'"),
    ("- 1\n- 2\n", 1, 1, "the config file must be a mapping"),
    ("host: !!binary aGVsbG8=\n", 1, 7, "host: values tagged !!binary are not allowed"),
    ("notify:\n  ops:\n    type: webhook\n    url: http://x/\n    url_env: HOOK\n", 5, 5,
     "notify.ops: give only one of url, url_env"),
]


@pytest.mark.parametrize("text,line,col,message", MISTAKES, ids=[m[3][:40] for m in MISTAKES])
def test_each_mistake_is_one_line_at_the_right_place(tmp_path: Path, text: str, line: int, col: int,
                                                      message: str) -> None:
    path = write(tmp_path, text)
    e = error(path)
    assert str(e).startswith(f"{path}:{line}:{col}: "), str(e)
    assert message in str(e), str(e)


def test_missing_file(tmp_path: Path) -> None:
    e = error(str(tmp_path / "gone.yaml"))
    assert str(e) == f"{tmp_path}/gone.yaml:1:1: cannot read {tmp_path}/gone.yaml: No such file or directory"


def test_secrets_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "url").write_text(SECRET + "\n")
    monkeypatch.setenv("CGWATCH_TEST_HMAC", "hmac-from-env")
    monkeypatch.setenv("CGWATCH_TEST_HOOK", "https://example.com/hook/env-token")
    cfg = load_config(write(tmp_path, f"""
        notify:
          ops: {{type: slack, url_file: {tmp_path}/url}}
          hook: {{type: webhook, url_env: CGWATCH_TEST_HOOK, secret_env: CGWATCH_TEST_HMAC}}
    """))
    assert cfg.notify["ops"].url.get_secret_value() == SECRET  # type: ignore[attr-defined]
    assert cfg.notify["hook"].url.get_secret_value() == "https://example.com/hook/env-token"  # type: ignore[attr-defined]
    assert cfg.notify["hook"].secret.get_secret_value() == "hmac-from-env"  # type: ignore[attr-defined]
    for secret in (SECRET, "hmac-from-env", "env-token"):
        assert secret not in repr(cfg) and secret not in str(cfg)


def test_missing_secret_sources_name_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CGWATCH_TEST_NOPE", raising=False)
    e = error(write(tmp_path, "notify:\n  ops: {type: slack, url_file: /nonexistent/url}\n"))
    assert str(e).endswith(":2:32: notify.ops.url_file: cannot read /nonexistent/url: No such file or directory")
    e = error(write(tmp_path, "notify:\n  ops:\n    type: webhook\n    url: http://x/\n    secret_env: CGWATCH_TEST_NOPE\n"))
    assert str(e).endswith(":5:17: notify.ops.secret_env: environment variable CGWATCH_TEST_NOPE is not set (or empty)")


def test_a_bad_secret_is_never_quoted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = "ftp://user:hunter2@example.com/very-secret-token"
    (tmp_path / "url").write_text(bad)
    monkeypatch.setenv("CGWATCH_TEST_BAD_URL", bad)
    for how in (f"url_file: {tmp_path}/url", "url_env: CGWATCH_TEST_BAD_URL", f"url: '{bad}'"):
        for kind in ("slack", "webhook"):
            e = error(write(tmp_path, f"notify:\n  ops:\n    type: {kind}\n    {how}\n"))
            col = 5 + how.index(":") + 2         # the value of url / url_file / url_env
            assert str(e).endswith(f":4:{col}: notify.ops.url: not an http(s) URL"), str(e)
            assert "hunter2" not in str(e) and "very-secret-token" not in str(e)
    e = error(write(tmp_path, "notify:\n  ops:\n    type: webhook\n    url: http://x/\n    secret: [1, 2]\n"))
    assert "notify.ops.secret" in str(e)


# -- auth: the dashboard's token ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "line", "col", "message"), [
    ("listen: 0.0.0.0:9477\n", 1, 9, "listen: 0.0.0.0:9477 is not a loopback address, so the dashboard and API need"),
    ("interval: 1s\nlisten: '[::]:9477'\n", 2, 9, "set auth.token or auth.token_file"),
    ("listen: 10.1.2.3:80\nauth: {}\n", 1, 9, "is not a loopback address"),
    ("auth: {token: short}\n", 1, 15, "auth.token: String should have at least 16 characters"),
    ("auth: {tokn: abcdefghijklmnopqrstuvwxyz}\n", 1, 8, "auth: unknown key 'tokn' (did you mean 'token'?)"),
    ("auth:\n  token: abcdefghijklmnopqrstuvwxyz\n  token_file: t\n", 3, 3, "auth: give only one of token, token_file"),
    ("auth: {token_file: /nonexistent/token}\n", 1, 20, "auth.token_file: cannot read /nonexistent/token"),
])
def test_auth_mistakes(tmp_path: Path, text: str, line: int, col: int, message: str) -> None:
    e = error(write(tmp_path, text))
    assert (e.line, e.col) == (line, col), str(e)
    assert message in e.message
    assert "abcdefghijklmnopqrstuvwxyz" not in str(e)


def test_auth_token_file_and_loopback(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("abcdefghijklmnopqrstuvwxyz\n")
    cfg = load_config(write(tmp_path, "listen: 0.0.0.0:9477\nauth: {token_file: token}\n"))
    assert cfg.auth.token == "abcdefghijklmnopqrstuvwxyz" and "abcdefghij" not in repr(cfg)
    for listen in ("127.0.0.1:9477", "127.9.9.9:1", "'[::1]:9477'", "localhost:9477"):
        assert load_config(write(tmp_path, f"listen: {listen}\n")).auth.token is None
    (tmp_path / "empty").write_text("\n")
    assert "is empty" in error(write(tmp_path, "auth: {token_file: empty}\n")).message


# -- secret files: small regular files only (issue 15, part 5) -------------------------------------

LOAD_EACH = """
import sys
from cgwatch.config import ConfigError, load_config
for path in sys.argv[1:]:
    try:
        load_config(path)
        print("ok")
    except ConfigError as e:
        print(e)
"""


def load_each(paths: list[str]) -> list[str]:
    """load_config on each file in a child with 2 GiB of address space and a minute at most:
    the bug these guard against read /dev/zero until the machine ran out of memory, or waited
    for a FIFO's writer for ever."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    p = subprocess.run([sys.executable, "-c", LOAD_EACH, *paths], capture_output=True, text=True, timeout=60,
                       preexec_fn=limit)
    assert (p.returncode, p.stderr) == (0, ""), p.stderr[-2000:]
    return p.stdout.splitlines()


def test_secret_files_must_be_small_regular_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_text("x" * (64 * 1024 + 1))
    (tmp_path / "limit").write_text("h" * (64 * 1024 - 1) + "\n")
    cases = [      # (config text, the one line it must give, after FILE:)
        ("notify:\n  ops: {type: slack, url_file: /dev/zero}\n",
         "2:32: notify.ops.url_file: /dev/zero is a character device, not a regular file"),
        (f"notify:\n  ops: {{type: slack, url_file: {tmp_path}/fifo}}\n",
         f"2:32: notify.ops.url_file: {tmp_path}/fifo is a FIFO, not a regular file"),
        (f"notify:\n  ops: {{type: slack, url_file: {tmp_path}/big}}\n",
         f"2:32: notify.ops.url_file: {tmp_path}/big is too large (65537 bytes, limit 64 KiB)"),
        (f"notify:\n  ops: {{type: slack, url_file: {tmp_path}}}\n",
         f"2:32: notify.ops.url_file: {tmp_path} is a directory, not a regular file"),
        ("notify:\n  hook:\n    type: webhook\n    url: http://127.0.0.1:9/x\n    secret_file: /dev/zero\n",
         "5:18: notify.hook.secret_file: /dev/zero is a character device, not a regular file"),
        ("auth: {token_file: /dev/zero}\n", "1:20: auth.token_file: /dev/zero is a character device, not a regular file"),
        ("auth: {token_file: fifo}\n", "1:20: auth.token_file: fifo is a FIFO, not a regular file"),
        ("auth: {token_file: big}\n", "1:20: auth.token_file: big is too large (65537 bytes, limit 64 KiB)"),
        ("kubernetes:\n  kubelet_url: https://127.0.0.1:10250\n  token_file: /dev/zero\n",
         "3:15: kubernetes.token_file: /dev/zero is a character device, not a regular file"),
        (f"kubernetes:\n  kubelet_url: https://127.0.0.1:10250\n  ca_file: {tmp_path}/fifo\n",
         f"3:12: kubernetes.ca_file: {tmp_path}/fifo is a FIFO, not a regular file"),
        (f"kubernetes:\n  kubelet_url: https://127.0.0.1:10250\n  ca_file: {tmp_path}/big\n",
         f"3:12: kubernetes.ca_file: {tmp_path}/big is too large (65537 bytes, limit 64 KiB)"),
        ("listen: 0.0.0.0:9477\nauth: {token_file: limit}\n", "ok"),        # 64 KiB exactly is fine
        ("kubernetes:\n  kubelet_url: https://127.0.0.1:10250\n  token_file: /nonexistent/token\n", "ok"),
    ]
    paths = [write(tmp_path, text, f"c{i}.yaml") for i, (text, _) in enumerate(cases)]
    got = load_each(paths)
    assert got == [want if want == "ok" else f"{path}:{want}" for path, (_, want) in zip(paths, cases)]


def test_read_small_file_refuses_what_changed_after_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The type is checked again on what was opened, and the read stops one byte past the limit."""
    from cgwatch import files

    (tmp_path / "grows").write_text("y" * 100)
    monkeypatch.setattr(files, "check_small_file", lambda path, limit=0: None)   # as if it grew since
    with pytest.raises(ValueError, match=r"grows is too large \(more than 10 bytes\)"):
        files.read_small_file(tmp_path / "grows", limit=10)
    with pytest.raises(ValueError, match="/dev/zero is a character device"):
        files.read_small_file("/dev/zero")
