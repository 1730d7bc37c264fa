"""The daemon's config file (``/etc/cgwatch/config.yaml``), read into a typed :class:`Config`.

Every mistake is a :class:`ConfigError` whose text is one line,
``FILE:LINE:COL: key.path: message``, placed on the offending key or value.
The file is composed into YAML nodes first (aliases refused, duplicate keys
refused, via :mod:`cgwatch.rules.document`), then validated with pydantic
(unknown keys refused); a pydantic error's ``loc`` is walked back to its node.

Keys and defaults (no file at all means all defaults):

``interval`` (``1s``) · ``rules`` (files, directories or globs, relative to
the config file; default the shipped pack: ``rules/`` beside the package in a
source checkout, else ``/usr/share/cgwatch/rules``) · ``state_dir``
(``/var/lib/cgwatch``) · ``listen`` (``127.0.0.1:9477``) · ``host`` (this
host's name; ``${VAR}`` from the environment) · ``collectors`` (source name -> true/false, all on by default but io;
names: cpu, proc, mem, net, io, cgroupfs, and exit_codes) · ``notify`` (sink name
-> ``{type: ..., ...}``; default ``{journal: {type: journald}}``, since the
daemon runs under systemd; ``notify: {}`` sends nothing) · ``auth``
(``{token: ...}`` or ``{token_file: PATH}``; the dashboard and API then need
the token. Required when ``listen`` is not a loopback address) · ``profiles``
(``{enabled: true, hz: 49, max_concurrent: 2, max_bytes: 67108864, stack_map:
8192}``: the CPU profiles rules with ``profile:`` take) · ``external_url``
(how people reach the dashboard, for links in alerts; default ``http://LISTEN``) ·
``host_root`` (``/``; where runtime state is read, ``/host`` in a pod) ·
``reload_on_change`` (false; reload when the config or a rule file changes) ·
``kubernetes`` (``{kubelet_url: https://${NODE_IP}:10250, token_file, ca_file,
tls_verify, refresh: 30s}``: pod names and labels from the kubelet).

A sink's secret keys (webhook ``url``/``secret``, slack ``url``) may instead be
``KEY_file: PATH`` (read at load, trailing newline dropped) or
``KEY_env: VARIABLE``. No secret value ever appears in an error. A secret file
(``KEY_file``, ``auth.token_file``, ``kubernetes.token_file``/``ca_file``) must be a
regular file of at most 64 KiB: a device, a FIFO or a bigger file is refused
before it is read (:func:`read_small_file`).

>>> cfg = load_config(None)
>>> cfg.interval, cfg.listen, list(cfg.notify), cfg.notify["journal"].type
(1.0, '127.0.0.1:9477', ['journal'], 'journald')
"""

from __future__ import annotations

import difflib
import glob
import ipaddress
import os
import re
import socket
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .files import check_small_file, read_small_file
from .rules.document import RuleError, Source, compose, read_source
from .sinks.base import SINKS, Duration, SinkConfig, sink_class
from .sources import OPT_IN, SOURCES

DEFAULT_PATH = "/etc/cgwatch/config.yaml"
SYSTEM_RULES = "/usr/share/cgwatch/rules"
COLLECTORS = (*SOURCES, "exit_codes")
_TAG = "tag:yaml.org,2002:"
_CONSTRUCT = yaml.constructor.SafeConstructor()
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_LISTEN = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):(\d{1,5})\Z")
class ConfigError(Exception):
    """A mistake in the config file; ``str()`` is ``FILE:LINE:COL: message`` on one line.

    >>> str(ConfigError("c.yaml", 7, 5, "notify.ops.url: not an http(s) URL"))
    'c.yaml:7:5: notify.ops.url: not an http(s) URL'
    """

    def __init__(self, file: str, line: int, col: int, message: str) -> None:
        self.file, self.line, self.col, self.message = file, line, col, " ".join(message.split())
        super().__init__(f"{file}:{line}:{col}: {self.message}")


def default_rules() -> list[str]:
    """The shipped rule pack: ``rules/`` of a source checkout, else the system copy."""
    here = Path(__file__).resolve().parents[2] / "rules"
    return [str(here)] if (here / "default.yaml").is_file() else [SYSTEM_RULES]


def default_notify() -> dict[str, SinkConfig]:
    """Alerts go to the journal unless the file says otherwise."""
    return {"journal": sink_class("journald").Config(type="journald")}


#: what ``auth.public`` may open: health and metrics, never the dashboard or its API
PUBLIC_PATHS = ("/healthz", "/metrics")


class AuthConfig(BaseModel):
    """``auth:``: the token (16 characters or more) every HTTP request must carry; ``token_file``
    is read at load instead, relative to the config file.

    >>> AuthConfig(token="correct-horse-battery").token
    'correct-horse-battery'
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    token: str | None = Field(None, min_length=16, repr=False)
    public: list[str] = []
    """Paths answered without the token (GET only): ``/healthz`` and ``/metrics`` are the
    ones that make sense (kubelet probes, Prometheus); the dashboard and API never."""

    @field_validator("public")
    @classmethod
    def _public(cls, v: list[str]) -> list[str]:
        for path in v:
            if path not in PUBLIC_PATHS:
                raise ValueError(f"'{path}' cannot be public (only {', '.join(PUBLIC_PATHS)})")
        return v


class ProfilesConfig(BaseModel):
    """``profiles:``: CPU profiles that rules with ``profile:`` take when they fire (docs/profiling.md).

    >>> ProfilesConfig().hz, ProfilesConfig().max_concurrent
    (49, 2)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    hz: int = Field(49, ge=1, le=1000)
    """Samples per second per CPU."""
    max_concurrent: int = Field(2, ge=1, le=32)
    """Profiles at a time (one per container); an alert beyond it goes out without a profile."""
    max_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024)
    """Stored profiles, in total; the oldest are removed first."""
    stack_map: int = Field(8192, ge=256, le=1_048_576)
    """Distinct stacks the kernel can hold per window (about 1 KiB of kernel memory each)."""


def expand_env(v: str) -> str:
    """``${VAR}`` replaced from the environment; ValueError naming a variable that is not set.

    >>> os.environ["CGW_DOCTEST_NODE"] = "node-7"
    >>> expand_env("https://${CGW_DOCTEST_NODE}:10250")
    'https://node-7:10250'
    """
    def var(m: re.Match[str]) -> str:
        if m.group(1) not in os.environ:
            raise ValueError(f"${{{m.group(1)}}} is not set in the environment")
        return os.environ[m.group(1)]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", var, v)


class KubernetesConfig(BaseModel):
    """``kubernetes:``: where the node's kubelet lists its pods (names, namespaces, labels
    for ``select:``); ``${VAR}`` in ``kubelet_url`` is read from the environment.

    >>> KubernetesConfig(kubelet_url="https://10.0.0.7:10250").refresh
    30.0
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kubelet_url: str
    token_file: str | None = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    ca_file: str | None = None
    tls_verify: bool = True
    refresh: Duration = Field(30.0, ge=1.0)

    @field_validator("kubelet_url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = expand_env(v)
        if not re.match(r"^(https?://[^\s/]+|file:///\S+)", v):
            raise ValueError("must be an http(s) URL (the kubelet, e.g. https://${NODE_IP}:10250) or file:///PATH")
        return v


def is_loopback(listen: str) -> bool:
    """Whether ``listen``'s host is loopback only (127.0.0.0/8, ::1, localhost).

    >>> is_loopback("127.0.0.1:9477"), is_loopback("[::1]:9477"), is_loopback("localhost:1")
    (True, True, True)
    >>> is_loopback("0.0.0.0:9477"), is_loopback(":9477"), is_loopback("[::]:9477"), is_loopback("10.0.0.1:80")
    (False, False, False, False)
    """
    host = listen.rpartition(":")[0].strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Config(BaseModel):
    """The whole config file, typed."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    interval: Duration = Field(1.0, gt=0)
    rules: list[str] = Field(default_factory=default_rules)
    state_dir: str = "/var/lib/cgwatch"
    listen: str = "127.0.0.1:9477"
    host: str = Field(default_factory=socket.gethostname, min_length=1)
    notify: dict[str, SinkConfig] = Field(default_factory=default_notify)
    collectors: dict[str, bool] = {}
    auth: AuthConfig = Field(default_factory=AuthConfig)
    profiles: ProfilesConfig = Field(default_factory=ProfilesConfig)
    kubernetes: KubernetesConfig | None = None
    host_root: str = "/"
    """Where the host's file system is, for runtime state (``/host`` in a pod)."""
    reload_on_change: bool = False
    """Reload when the config or a rule file changes (a Kubernetes ConfigMap), as on SIGHUP."""
    external_url: str | None = None
    """How people reach the dashboard (links in alerts); default ``http://LISTEN`` with this
    host's name in place of a wildcard address."""

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        v = expand_env(v)          # host: ${NODE_NAME} in a DaemonSet
        if not v:
            raise ValueError("must not be empty")
        return v

    @field_validator("external_url")
    @classmethod
    def _external_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http(s) URL, e.g. https://cgwatch.node-1.example:9477")
        return v.rstrip("/") if v else v

    def dashboard_url(self) -> str:
        """The dashboard's base URL as alerts link to it (no trailing slash).

        >>> Config(host="node-1").dashboard_url(), Config(host="node-1", listen="0.0.0.0:80").dashboard_url()
        ('http://127.0.0.1:9477', 'http://node-1:80')
        """
        if self.external_url:
            return self.external_url
        host, _, port = self.listen.rpartition(":")
        if host.strip("[]") in ("", "0.0.0.0", "::"):
            host = self.host
        return f"http://{host}:{port}"

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        m = _LISTEN.match(v)
        if not m or not 0 < int(m.group(1)) < 65536:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9477")
        return v

    @field_validator("collectors")
    @classmethod
    def _collectors(cls, v: dict[str, bool]) -> dict[str, bool]:
        for name in v:
            if name not in COLLECTORS:
                raise ValueError(f"unknown collector '{name}' ({_hint(name, COLLECTORS)})")
        return v

    @field_validator("rules")
    @classmethod
    def _rules(cls, v: list[str]) -> list[str]:
        if not v or not all(v):
            raise ValueError("must name at least one rule file, directory or glob")
        return v

    def sources(self) -> list[str]:
        """The sources to load (``collect.open_collector``'s names).

        >>> Config(collectors={"net": False}, host="h").sources()
        ['cpu', 'proc', 'mem', 'cgroupfs']
        """
        return [n for n in SOURCES if self.collectors.get(n, n not in OPT_IN)]

    @property
    def exit_codes(self) -> bool:
        """Whether exit codes are collected (``open_collector(exit_codes=...)``)."""
        return self.collectors.get("exit_codes", True)


def _kind_of(value: Any) -> str:
    """What a YAML value is, in words (never the value: it may be a secret).

    >>> _kind_of(["webhook"]), _kind_of({}), _kind_of(3), _kind_of(None)
    ('a list', 'a mapping', 'a number', 'null')
    """
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "null" if value is None else "a string"


def _hint(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean '{close[0]}'?" if close else f"expected one of {', '.join(known)}"


class _Reader:
    """One file's nodes turned into plain values, remembering where each came from."""

    def __init__(self, src: Source) -> None:
        self.src = src
        #: path tuple -> (key node or None, value node)
        self.marks: dict[tuple[Any, ...], tuple[Node | None, Node]] = {}

    def fail(self, node: Node, message: str) -> ConfigError:
        e: RuleError = self.src.at(node, message)
        return ConfigError(e.file, e.line, e.col, message)

    def at(self, loc: tuple[Any, ...], message: str, key: bool = False) -> ConfigError:
        """An error at the deepest node ``loc`` reaches (its key node if ``key``)."""
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.marks:
                k, v = self.marks[loc[:n]]
                return self.fail(k if (key or n < len(loc)) and k is not None else v, message)
        return ConfigError(self.src.name, 1, 1, message)

    def plain(self, node: Node, path: tuple[Any, ...] = (), key: Node | None = None) -> Any:
        self.marks[path] = (key, node)
        where = _dotted(path)
        if isinstance(node, MappingNode):
            out: dict[str, Any] = {}
            first: dict[str, Node] = {}
            for k, v in node.value:
                if not isinstance(k, ScalarNode) or k.tag != _TAG + "str":
                    raise self.fail(k, f"{where + ': ' if where else ''}keys must be strings")
                if k.value in first:
                    line = first[k.value].start_mark.line + 1
                    raise self.fail(k, f"{_dotted((*path, k.value))}: duplicate key (first at line {line})")
                first[k.value] = k
                out[k.value] = self.plain(v, (*path, k.value), k)
            return out
        if isinstance(node, SequenceNode):
            return [self.plain(v, (*path, i)) for i, v in enumerate(node.value)]
        if node.tag in (_TAG + "str", _TAG + "timestamp"):
            return node.value
        if node.tag in (_TAG + "int", _TAG + "float", _TAG + "bool", _TAG + "null"):
            return _CONSTRUCT.construct_object(node)
        raise self.fail(node, f"{where}: values tagged {node.tag.replace(_TAG, '!!')} are not allowed")


def _dotted(loc: tuple[Any, ...]) -> str:
    """``notify.ops.url``; list positions as ``rules[1]``.

    >>> _dotted(("notify", "ops", "url")), _dotted(("rules", 1))
    ('notify.ops.url', 'rules[1]')
    """
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _from_pydantic(r: _Reader, e: ValidationError, prefix: tuple[Any, ...], fields: list[str],
                   nested: dict[str, list[str]] | None = None) -> ConfigError:
    """The first pydantic error, placed on its node; ``fields`` (``nested[key]`` inside ``key``)
    feed "did you mean"."""
    errors = e.errors(include_input=False, include_url=False)
    err = min(errors, key=lambda x: x["type"] != "extra_forbidden")    # a typo explains a missing key
    loc = (*prefix, *err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        if nested and len(loc) > 1 and loc[0] in nested:
            fields = nested[loc[0]]
        return r.at(loc, f"{_dotted(loc[:-1]) + ': ' if loc[:-1] else ''}unknown key '{loc[-1]}' "
                         f"({_hint(str(loc[-1]), fields)})", key=True)
    if err["type"] == "missing":
        return r.at(loc[:-1], f"{_dotted(loc[:-1]) + ': ' if loc[:-1] else ''}missing key '{loc[-1]}'", key=True)
    return r.at(loc, f"{_dotted(loc)}: {msg}")


def _read_secret(r: _Reader, loc: tuple[Any, ...], path: str | os.PathLike[str], shown: str) -> str:
    """A secret file's text, trailing newline dropped, or a ConfigError at ``loc`` naming ``shown``."""
    try:
        value = read_small_file(path).rstrip("\r\n")
    except OSError as ex:
        raise r.at(loc, f"{_dotted(loc)}: cannot read {shown}: {ex.strerror or type(ex).__name__}") from None
    except ValueError as ex:
        raise r.at(loc, f"{_dotted(loc)}: {str(ex).replace(os.fspath(path), shown, 1)}") from None
    if not value.strip():
        raise r.at(loc, f"{_dotted(loc)}: {shown} is empty")
    return value


def _secrets(r: _Reader, name: str, entry: dict[str, Any], cls: type[SinkConfig]) -> None:
    """Replace ``KEY_file`` / ``KEY_env`` by ``KEY`` in one sink's entry, in place."""
    for key in cls.SECRETS:
        given = [k for k in (key, f"{key}_file", f"{key}_env") if k in entry]
        if len(given) > 1:
            raise r.at(("notify", name, given[1]), f"notify.{name}: give only one of {', '.join(given)}", key=True)
        if not given or given[0] == key:
            continue
        how, loc = given[0], ("notify", name, given[0])
        ref = entry.pop(how)
        if not isinstance(ref, str) or not ref:
            raise r.at(loc, f"{_dotted(loc)}: must be a {'file name' if how.endswith('_file') else 'variable name'}")
        if how.endswith("_file"):
            value = _read_secret(r, loc, ref, ref)
        else:
            value = os.environ.get(ref, "")
            if not value:
                raise r.at(loc, f"{_dotted(loc)}: environment variable {ref} is not set (or empty)")
        entry[key] = value
        r.marks[("notify", name, key)] = r.marks[loc]


def _notify(r: _Reader, raw: Any) -> dict[str, SinkConfig]:
    if not isinstance(raw, dict):
        raise r.at(("notify",), "notify: must be a mapping of sink name to {type: ...}")
    out: dict[str, SinkConfig] = {}
    for name, entry in raw.items():
        loc = ("notify", name)
        if not _NAME.match(name):
            raise r.at(loc, f"notify: sink name '{name}' must be letters, digits, '_', '.' or '-'", key=True)
        if not isinstance(entry, dict):
            raise r.at(loc, f"notify.{name}: must be a mapping with a 'type' key")
        kind = entry.get("type")
        if kind is None:
            raise r.at(loc, f"notify.{name}: missing key 'type' (one of {', '.join(SINKS)})", key=True)
        if not isinstance(kind, str):
            raise r.at((*loc, "type"), f"notify.{name}.type: must be one of {', '.join(SINKS)}, "
                                       f"not {_kind_of(kind)}")
        if kind not in SINKS:
            raise r.at((*loc, "type"), f"notify.{name}.type: unknown sink type '{kind}' ({_hint(str(kind), SINKS)})")
        cls = sink_class(kind).Config
        _secrets(r, name, entry, cls)
        try:
            out[name] = cls.model_validate(entry)
        except ValidationError as e:
            known = [*cls.model_fields, *(f"{k}_{s}" for k in cls.SECRETS for s in ("file", "env"))]
            raise _from_pydantic(r, e, loc, known) from None
    return out


def _resolve_rules(r: _Reader, rules: Any, base: Path) -> Any:
    """Rule paths relative to the config file; globs expanded (one matching nothing is an error)."""
    if not isinstance(rules, list):
        return rules
    out: list[Any] = []
    for i, p in enumerate(rules):
        if not isinstance(p, str) or not p:
            out.append(p)
            continue
        full = os.path.join(base, os.path.expanduser(p))
        if glob.has_magic(full):
            found = sorted(glob.glob(full))
            if not found:
                raise r.at(("rules", i), f"rules[{i}]: '{p}' matches no file")
            out += found
        else:
            out.append(full)
    return out


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """The config in ``path`` (None: every default), or :class:`ConfigError`."""
    if path is None:
        return Config()
    src = read_source(os.fspath(path))
    if isinstance(src, RuleError):
        raise ConfigError(src.file, src.line, src.col, src.message)
    node = compose(src)
    if isinstance(node, RuleError):
        raise ConfigError(node.file, node.line, node.col, node.message.replace("rule file", "config file"))
    r = _Reader(src)
    raw = {} if node is None else r.plain(node)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise r.fail(node, "the config file must be a mapping of keys (interval, rules, notify, ...)")
    if "notify" in raw:
        raw["notify"] = {} if raw["notify"] is None else raw["notify"]
        raw["notify"] = _notify(r, raw["notify"])
    if "rules" in raw:
        raw["rules"] = _resolve_rules(r, raw["rules"], Path(os.fspath(path)).resolve().parent)
    if isinstance(raw.get("auth"), dict):
        _token_file(r, raw["auth"], Path(os.fspath(path)).resolve().parent)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise _from_pydantic(r, e, (), list(Config.model_fields),
                             {"auth": [*AuthConfig.model_fields, "token_file"],
                              "profiles": list(ProfilesConfig.model_fields),
                              "kubernetes": list(KubernetesConfig.model_fields)}) from None
    if cfg.kubernetes is not None:
        _kubernetes_files(r, cfg.kubernetes)
    if cfg.auth.token is None and not is_loopback(cfg.listen):
        raise r.at(("listen",), f"listen: {cfg.listen} is not a loopback address, so the dashboard and API "
                                "need a token: set auth.token or auth.token_file")
    return cfg


def _token_file(r: _Reader, auth: dict[str, Any], base: Path) -> None:
    """Replace ``auth.token_file`` by ``auth.token``, read from the file (relative to the config)."""
    if "token_file" not in auth:
        return
    loc = ("auth", "token_file")
    if "token" in auth:
        raise r.at(loc, "auth: give only one of token, token_file", key=True)
    ref = auth.pop("token_file")
    if not isinstance(ref, str) or not ref:
        raise r.at(loc, "auth.token_file: must be a file name")
    auth["token"] = _read_secret(r, loc, base / os.path.expanduser(ref), ref)
    r.marks[("auth", "token")] = r.marks[loc]


def _kubernetes_files(r: _Reader, k: KubernetesConfig) -> None:
    """``kubernetes.token_file``/``ca_file`` are read later (the token at every refresh: it
    rotates), so a missing one is not an error here; one that is there must be a small regular file."""
    for key in ("token_file", "ca_file"):
        path = getattr(k, key)
        if not path or not os.path.exists(path):
            continue
        try:
            check_small_file(path)
        except OSError as ex:
            raise r.at(("kubernetes", key), f"kubernetes.{key}: cannot read {path}: "
                                            f"{ex.strerror or type(ex).__name__}") from None
        except ValueError as ex:
            raise r.at(("kubernetes", key), f"kubernetes.{key}: {ex}") from None
