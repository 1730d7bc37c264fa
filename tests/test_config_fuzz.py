"""The config loader fuzzed: any YAML document at any key ends in a Config or one ConfigError line.

Documents are built from every key the loader knows (top level, ``notify`` sinks and their
``KEY_file``/``KEY_env`` secrets, ``auth``, ``profiles``, ``kubernetes``, ``collectors``),
each given a value that is right, nearly right or of a wrong type or shape, and a few keys
nobody knows. The only outcomes allowed: a Config whose sinks build, or a :class:`ConfigError`
that is one line, begins with the file's name and never shows a secret read from a file.

The normal suite runs a short, derandomized budget; set ``CGWATCH_FUZZ_EXAMPLES`` (e.g.
``10000``) for a long run (docs/troubleshooting.md).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cgwatch.config import COLLECTORS, AuthConfig, Config, ConfigError, KubernetesConfig, ProfilesConfig, load_config
from cgwatch.sinks.base import SINKS, build_sinks, sink_class

EXAMPLES = int(os.environ.get("CGWATCH_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

INLINE_URL = "http://127.0.0.1:9/fuzz-url"
INLINE_TOKEN = "fuzz-token-0123456789abcdef"
#: what the secret files and variables hold: written nowhere in a document, so never in an error
FILE_URL, FILE_TOKEN, ENV_URL = "http://127.0.0.1:9/from-a-file", "from-a-file-0123456789", "http://127.0.0.1:9/from-env"

#: a directory made once for the whole module: secret files good and bad, and the config itself
DIR = Path(tempfile.mkdtemp(prefix="cgwatch-fuzz-"))


def _files() -> None:
    (DIR / "url").write_text(FILE_URL + "\n")
    (DIR / "token").write_text(FILE_TOKEN + "\n")
    (DIR / "empty").write_text("")
    (DIR / "binary").write_bytes(b"\xff\xfe\x00garbage")
    with open(DIR / "big", "wb") as f:          # sparse: a big file that costs nothing on disk
        f.truncate(1 << 30)
    (DIR / "rules").mkdir()
    (DIR / "rules" / "a.yaml").write_text("rules: []\n")
    (DIR / "state").mkdir()
    os.mkfifo(DIR / "fifo")


_files()

PATHS = [f"{DIR}/url", f"{DIR}/token", f"{DIR}/empty", f"{DIR}/binary", f"{DIR}/big", f"{DIR}/fifo", str(DIR),
         f"{DIR}/", f"{DIR}/gone", "/dev/zero", "/dev/null", "/proc/self/status", "url", "token", "fifo",
         "rules", "rules/*.yaml", "rules/*.nothing", "~", "~nobody/x", "", " "]
STRINGS = st.one_of(
    st.sampled_from([
        "x", "1s", "500ms", "0s", "-1s", "1e999s", "inf", "-inf", "nan", ".nan", "5 parsecs", "30", "0x10",
        INLINE_URL, "http://127.0.0.1:9/x", "https://example.com/hook", "ftp://x/", "http://", "https://[::1",
        "http://x:99999/", "http://a b/", "file:///tmp/x", "127.0.0.1:9477", "0.0.0.0:1", "[::1]:0",
        "[::1]:9477", "localhost:70000", ":9477", "${HOME}", "${CGW_FUZZ_UNSET}", "${", "$", "webhook", "slack",
        "journald", "stdout", "file", "alertmanager", "info", "warning", "critical", "/healthz", "/metrics",
        "/", "HOME", "PATH", "CGW_FUZZ_UNSET", "a" * 16, "a" * 4000, "é\u2028x", "\x00", "\t", "\n", "yes",
        "on", "~", "null", "true", "2024-01-01", "1_000", "-", "*", "*.yaml", "[", "{", "'", '"',
    ]),
    st.sampled_from(PATHS),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=24),
)
SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(10**30), 10**30), st.sampled_from([0, 1, -1, 49, 256, 1024, 1 << 20, 1 << 63, 65536]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.5, 1e308, -0.0, 1e-300]),
    STRINGS,
)
def _rarely(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], one_in: int) -> st.SearchStrategy[Any]:
    """``rare`` about once in ``one_in`` draws, else ``common`` (a mistake that stops the loader
    early, made often, would hide the keys behind it)."""
    return st.sampled_from([True] + [False] * (one_in - 1)).flatmap(lambda r: rare if r else common)


#: keys nobody knows, and (rarely) keys that are not strings at all (YAML writes them as ints, bools, null)
ODD_KEYS = _rarely(st.sampled_from(["intervl", "typ", "urll", "", "0", "token_fil", "x_file", "url_envv"]),
                   st.one_of(st.integers(-3, 3), st.booleans(), st.none()), 4)


def _values(leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Any YAML value: scalars, and lists and mappings of them, a few levels deep."""
    return st.recursive(leaf, lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(_rarely(STRINGS, ODD_KEYS, 8), inner, max_size=4)), max_leaves=12)


ANY = _values(SCALARS)


@st.composite
def _mutated(draw: st.DrawFn, valid: st.SearchStrategy[dict[Any, Any]], near: dict[str, st.SearchStrategy[Any]]) -> Any:
    """A valid mapping with up to two mistakes: a known key given a nearly right value, that
    value in a list or a mapping (the wrong shape), or any value at all; a key dropped; a key
    nobody knows (or one that is not a string) added."""
    d = dict(draw(valid))
    keys = _rarely(st.sampled_from(sorted(near)), ODD_KEYS, 6)
    for _ in range(draw(st.integers(0, 2))):
        key = draw(keys)
        how = draw(st.sampled_from(["near", "near", "wrap", "any", "drop"]))
        if how == "drop":
            d.pop(key, None)
        elif how in ("near", "wrap") and isinstance(key, str) and key in near:
            v = draw(near[key])
            d[key] = v if how == "near" else draw(st.sampled_from([[v], {str(v): v}, {key: v}, [v, v]]))
        else:
            d[key] = draw(ANY)
    return d


def _some(valid: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=valid)


PATHS_NEAR = st.one_of(st.sampled_from(PATHS), STRINGS)
DURATIONS_NEAR = st.one_of(st.sampled_from(["1s", "500ms", "0s", "-5s", "1e999s", "5m", "1d", "inf"]), SCALARS)

# -- notify: each sink type, valid, then mutated -----------------------------------------------
POLICY = {"min_severity": st.sampled_from(["info", "warning", "critical"]), "group_wait": st.sampled_from(["5s", 0]),
          "max_group": st.integers(1, 1000), "rate_limit": st.sampled_from([1, 0.5, 60]),
          "repeat": st.sampled_from(["1h", 60]), "max_age": st.sampled_from(["1d", 3600])}
HTTP = {**POLICY, "timeout": st.sampled_from(["3s", 10]), "tls_verify": st.booleans(),
        "headers": st.dictionaries(st.sampled_from(["X-Team", "X-A"]), st.sampled_from(["web", "x"]), max_size=2)}
URL = st.one_of(st.just(INLINE_URL), st.just({"url_file": f"{DIR}/url"}), st.just({"url_env": "CGW_FUZZ_URL"}))


def _sink(kind: str, required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]) -> Any:
    def merge(base: dict[str, Any], opt: dict[str, Any]) -> dict[str, Any]:
        out = {"type": kind, **opt}
        for k, v in base.items():
            if isinstance(v, dict):           # url given as url_file / url_env instead
                out.update(v)
            else:
                out[k] = v
        return out
    return st.builds(merge, st.fixed_dictionaries(required), _some(optional))


VALID_SINKS = {
    "journald": _sink("journald", {}, POLICY),
    "stdout": _sink("stdout", {}, POLICY),
    "file": _sink("file", {"path": st.sampled_from([f"{DIR}/alerts.jsonl", "alerts.jsonl"])}, POLICY),
    "webhook": _sink("webhook", {"url": URL}, {**HTTP, "secret": st.just("k"),
                                               "secret_file": st.just(f"{DIR}/token")}),
    "slack": _sink("slack", {"url": URL}, {**HTTP, "channel": st.just("#ops"), "username": st.just("cgwatch"),
                                           "icon_emoji": st.just(":fire:"), "max_lines": st.integers(1, 50)}),
    "alertmanager": _sink("alertmanager", {"url": st.one_of(st.just("http://am:9093"), st.lists(
        st.sampled_from(["http://am-0:9093", "http://am-1:9093"]), min_size=1, max_size=2, unique=True))}, HTTP),
}
assert set(VALID_SINKS) == set(SINKS), "a sink type the fuzzer does not know"
SINK_NEAR: dict[str, st.SearchStrategy[Any]] = {}
for _kind in SINKS:
    _cls = sink_class(_kind).Config
    for _name in _cls.model_fields:
        SINK_NEAR[_name] = SCALARS
    for _key in _cls.SECRETS:
        SINK_NEAR[f"{_key}_file"] = PATHS_NEAR
        SINK_NEAR[f"{_key}_env"] = st.sampled_from(["HOME", "CGW_FUZZ_UNSET", "CGW_FUZZ_URL", "", "PATH", "1"])
SINK_NEAR.update({
    "type": st.one_of(st.sampled_from(list(SINKS)), st.lists(st.sampled_from(list(SINKS)), max_size=2),
                      st.dictionaries(st.sampled_from(list(SINKS)), SCALARS, max_size=1)),
    "url": st.one_of(st.sampled_from([INLINE_URL, "http://am:9093", "ftp://x/"]), STRINGS,
                     st.lists(st.sampled_from([INLINE_URL, "http://am:9093", "ftp://x/", ""]), max_size=3)),
    "headers": st.one_of(st.dictionaries(STRINGS, SCALARS, max_size=2), ANY),
    "path": st.one_of(st.sampled_from([f"{DIR}/alerts.jsonl", "/nonexistent/dir/a.jsonl"]), PATHS_NEAR),
    "min_severity": st.one_of(st.sampled_from(["info", "warn", "INFO"]), SCALARS),
    "group_wait": DURATIONS_NEAR, "repeat": DURATIONS_NEAR, "max_age": DURATIONS_NEAR, "timeout": DURATIONS_NEAR,
})


def _sink_near(kind: str) -> dict[str, st.SearchStrategy[Any]]:
    """The keys a sink of ``kind`` knows (its secrets' _file/_env too), each with its near values."""
    cls = sink_class(kind).Config
    keys = {*cls.model_fields, *(f"{k}_{s}" for k in cls.SECRETS for s in ("file", "env"))}
    return {k: v for k, v in SINK_NEAR.items() if k in keys}


SINK = _rarely(st.one_of(*[_rarely(_mutated(v, _sink_near(k)), _mutated(v, SINK_NEAR), 4)
                           for k, v in VALID_SINKS.items()]), ANY, 8)
SINK_NAMES = _rarely(st.sampled_from(["ops", "hook", "a.b-c_d", "j"]),
                     st.one_of(st.sampled_from(["-bad", "bad name", "é"]), STRINGS), 6)

# -- the other sections ------------------------------------------------------------------------
AUTH = _mutated(st.one_of(st.just({"token": INLINE_TOKEN}), st.just({"token_file": "token"}),
                          st.just({"token": INLINE_TOKEN, "public": ["/healthz", "/metrics"]}), st.just({})),
                {"token": st.one_of(st.sampled_from([INLINE_TOKEN, "short"]), SCALARS),
                 "public": st.one_of(st.lists(st.sampled_from(["/healthz", "/metrics", "/", "/api"]), max_size=3),
                                     SCALARS),
                 "token_file": PATHS_NEAR})
PROFILES = _mutated(_some({"enabled": st.booleans(), "hz": st.integers(1, 1000), "max_concurrent": st.integers(1, 32),
                           "max_bytes": st.integers(1 << 20, 1 << 40), "stack_map": st.integers(256, 1 << 20)}),
                    dict.fromkeys(ProfilesConfig.model_fields, SCALARS))
KUBERNETES = _mutated(st.builds(lambda a, b: {**a, **b}, st.fixed_dictionaries(
    {"kubelet_url": st.sampled_from(["https://127.0.0.1:10250", "https://${CGW_FUZZ_NODE}:10250", "file:///x"])}),
    _some({"token_file": st.sampled_from([f"{DIR}/token", None, "/nonexistent/token"]),
           "ca_file": st.sampled_from([f"{DIR}/token", None]), "tls_verify": st.booleans(),
           "refresh": st.sampled_from(["30s", 5])})),
    {"kubelet_url": st.one_of(st.sampled_from(["https://${CGW_FUZZ_UNSET}:1", "http://", "ftp://x"]), STRINGS),
     "token_file": st.one_of(PATHS_NEAR, st.none()), "ca_file": st.one_of(PATHS_NEAR, st.none()),
     "tls_verify": SCALARS, "refresh": DURATIONS_NEAR})
COLLECTORS_MAP = _mutated(st.dictionaries(st.sampled_from(COLLECTORS), st.booleans(), max_size=3),
                          dict.fromkeys(COLLECTORS, SCALARS))

VALID_TOP: dict[str, st.SearchStrategy[Any]] = {
    "interval": st.sampled_from(["1s", "500ms", 2, 0.5]),
    "rules": st.lists(st.sampled_from([f"{DIR}/rules", "rules/*.yaml", "rules/a.yaml"]), min_size=1, max_size=2),
    "state_dir": st.sampled_from([f"{DIR}/state", "state"]),
    "listen": st.sampled_from(["127.0.0.1:9477", "[::1]:9999", "localhost:1"]),
    "host": st.sampled_from(["node-1", "${CGW_FUZZ_NODE}"]),
    "notify": st.one_of(st.dictionaries(SINK_NAMES, SINK, max_size=3), st.none(), st.just({})),
    "collectors": COLLECTORS_MAP,
    "auth": AUTH,
    "profiles": PROFILES,
    "kubernetes": st.one_of(KUBERNETES, st.none()),
    "host_root": st.sampled_from(["/", str(DIR)]),
    "reload_on_change": st.booleans(),
    "external_url": st.sampled_from(["https://cgwatch.node-1.example:9477", "http://x/"]),
}
NEAR_TOP: dict[str, st.SearchStrategy[Any]] = {
    "interval": DURATIONS_NEAR,
    "rules": st.one_of(st.lists(PATHS_NEAR, max_size=3), SCALARS),
    "state_dir": PATHS_NEAR, "host_root": PATHS_NEAR,
    "listen": STRINGS, "host": STRINGS, "external_url": STRINGS,
    "notify": st.one_of(st.dictionaries(_rarely(SINK_NAMES, ODD_KEYS, 4), st.one_of(SINK, ANY), max_size=3), ANY),
    "collectors": st.one_of(st.dictionaries(STRINGS, SCALARS, max_size=3), ANY),
    "auth": st.one_of(AUTH, ANY), "profiles": st.one_of(PROFILES, ANY), "kubernetes": st.one_of(KUBERNETES, ANY),
    "reload_on_change": SCALARS,
}
assert set(VALID_TOP) == set(NEAR_TOP) == set(Config.model_fields), "a config key the fuzzer does not know"
assert {"token", "public"} <= set(AuthConfig.model_fields) and "kubelet_url" in KubernetesConfig.model_fields
#: whole files; one in three is about one section only, so that each is often the first mistake
DOCUMENTS = _rarely(st.one_of(
    _mutated(_some(VALID_TOP), NEAR_TOP), _mutated(_some(VALID_TOP), NEAR_TOP),
    st.fixed_dictionaries({"notify": st.dictionaries(SINK_NAMES, SINK, min_size=1, max_size=3)}),
    st.fixed_dictionaries({"auth": AUTH, "listen": st.sampled_from(["0.0.0.0:9477", "127.0.0.1:1"])}),
    st.fixed_dictionaries({"kubernetes": KUBERNETES}, optional={"profiles": PROFILES}),
    st.fixed_dictionaries({"collectors": COLLECTORS_MAP},
                          optional={"rules": st.one_of(VALID_TOP["rules"], NEAR_TOP["rules"])})), ANY, 8)


@pytest.fixture(scope="module", autouse=True)
def _in_dir() -> Iterator[None]:
    here = os.getcwd()
    os.chdir(DIR)                 # relative paths (the file sink's among them) land in the fuzz directory
    os.environ.pop("CGW_FUZZ_UNSET", None)
    os.environ["CGW_FUZZ_URL"], os.environ["CGW_FUZZ_NODE"] = ENV_URL, "node-9"
    try:
        yield
    finally:
        os.chdir(here)
        for var in ("CGW_FUZZ_URL", "CGW_FUZZ_NODE"):
            os.environ.pop(var, None)
        shutil.rmtree(DIR, ignore_errors=True)


def check(text: str) -> None:
    path = str(DIR / "config.yaml")
    Path(path).write_text(text, encoding="utf-8")
    try:
        cfg = load_config(path)
    except ConfigError as e:
        line = str(e)
        assert "\n" not in line and "\r" not in line, line
        assert line.startswith(f"{path}:"), line
        assert e.line >= 1 and e.col >= 1, line
        assert not any(secret in line for secret in (FILE_URL, FILE_TOKEN, ENV_URL)), line
        return
    build_sinks(cfg.notify)       # what start and reload do next with it


@FUZZ
@given(doc=DOCUMENTS)
def test_any_document_loads_or_is_one_config_error(doc: Any) -> None:
    check(yaml.safe_dump(doc, allow_unicode=True, width=1 << 16))


@FUZZ
@given(doc=DOCUMENTS, style=st.sampled_from([True, False]))
def test_flow_style_too(doc: Any, style: bool) -> None:
    check(yaml.safe_dump(doc, default_flow_style=style, allow_unicode=False))
