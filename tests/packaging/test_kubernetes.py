"""packaging/kubernetes/: valid manifests that grant what cgwatch needs, and no more.

The manifests are checked offline against the Kubernetes API schemas that
``kubernetes-validate`` bundles (strict: an unknown field fails), and against
:mod:`cgwatch.requirements`, the systemd unit and cgwatch's own config loader.
"""

from __future__ import annotations

import copy
import io
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cgwatch import requirements
from cgwatch.config import ConfigError, load_config
from cgwatch.rules.check import check

kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (the test extra)")

ROOT = Path(__file__).resolve().parents[2]
KDIR = ROOT / "packaging" / "kubernetes"
UNIT = ROOT / "packaging" / "systemd" / "cgwatch.service"
K8S_VERSION = "1.30"    # securityContext.appArmorProfile is there from 1.30 on
MANIFESTS = sorted(p.name for p in KDIR.glob("*.yaml") if p.name != "kustomization.yaml")


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((KDIR / name).read_text()) if d]


def resources() -> list[dict[str, Any]]:
    return [d for name in MANIFESTS for d in docs(name)]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in resources() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def daemonset() -> dict[str, Any]:
    return one("DaemonSet")


def container() -> dict[str, Any]:
    (c,) = daemonset()["spec"]["template"]["spec"]["containers"]
    return c


def config_text() -> str:
    return one("ConfigMap", "cgwatch-config")["data"]["config.yaml"]


def config_yaml() -> dict[str, Any]:
    return yaml.safe_load(config_text())


def validate(resource: dict[str, Any]) -> None:
    kv.validate(resource, K8S_VERSION, strict=True)


# --- 1. the API schemas -------------------------------------------------------------------------

@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_validates_against_the_api_schema(name: str) -> None:
    found = docs(name)
    assert found, f"{name} holds no resource"
    for d in found:
        validate(d)


def test_the_validator_rejects_a_misspelt_field() -> None:
    ds = copy.deepcopy(daemonset())
    validate(ds)
    pod = ds["spec"]["template"]["spec"]
    pod["hostPid"] = pod.pop("hostPID")
    with pytest.raises(kv.ValidationError):
        validate(ds)
    sc = copy.deepcopy(daemonset())["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    sc["capabilities"]["adds"] = sc["capabilities"].pop("add")
    broken = copy.deepcopy(daemonset())
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"] = sc
    with pytest.raises(kv.ValidationError):
        validate(broken)


def test_every_resource_is_in_the_cgwatch_namespace() -> None:
    cluster_wide = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for d in resources():
        if d["kind"] not in cluster_wide:
            assert d["metadata"].get("namespace") == "cgwatch", (d["kind"], d["metadata"]["name"])
    assert one("Namespace")["metadata"]["name"] == "cgwatch"


def test_rbac_grants_only_get_on_nodes_proxy() -> None:
    role = one("ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]}]
    binding = one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    sa = one("ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "cgwatch"}]
    assert daemonset()["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


# --- 2. kustomization.yaml ----------------------------------------------------------------------

def test_kustomization_lists_every_manifest() -> None:
    k = yaml.safe_load((KDIR / "kustomization.yaml").read_text())
    assert k["kind"] == "Kustomization"
    listed = k["resources"]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert sorted(listed) == MANIFESTS
    assert set(p.name for p in KDIR.iterdir()) == {*MANIFESTS, "kustomization.yaml", "Dockerfile", "README.md"}


# --- 3. capabilities ----------------------------------------------------------------------------

def unit_capabilities() -> tuple[str, ...]:
    for line in UNIT.read_text().splitlines():
        if line.startswith("CapabilityBoundingSet="):
            return tuple(line.partition("=")[2].split())
    raise AssertionError("the unit has no CapabilityBoundingSet=")


def test_capabilities_match_the_requirements_and_the_unit() -> None:
    sc = container()["securityContext"]
    assert sorted(sc["capabilities"]["add"]) == sorted(requirements.bare(requirements.CAPABILITIES))
    assert sorted(requirements.CAPABILITIES) == sorted(unit_capabilities())
    assert set(requirements.WHY) == set(requirements.CAPABILITIES)
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsUser"] == 0
    assert sc["seccompProfile"] == {"type": "Unconfined"}
    assert sc["appArmorProfile"] == {"type": "Unconfined"}
    notes = daemonset()["spec"]["template"]["metadata"]["annotations"]
    assert notes["container.apparmor.security.beta.kubernetes.io/" + container()["name"]] == "unconfined"


def test_pod_shares_the_host_pids_but_not_its_network() -> None:
    pod = daemonset()["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert not pod.get("hostNetwork")
    assert {"operator": "Exists"} in pod["tolerations"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container()["env"]}
    assert env == {"NODE_IP": "status.hostIP", "NODE_NAME": "spec.nodeName"}
    assert "${NODE_IP}" in config_yaml()["kubernetes"]["kubelet_url"]


# --- 4. host paths and the config ---------------------------------------------------------------

def mounts() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """mountPath -> (volumeMount, volume)."""
    volumes = {v["name"]: v for v in daemonset()["spec"]["template"]["spec"]["volumes"]}
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in container()["volumeMounts"]}


@pytest.mark.parametrize("need", requirements.HOST_PATHS, ids=lambda p: p.path)
def test_daemonset_mounts_what_cgwatch_reads(need: requirements.HostPath) -> None:
    root = config_yaml()["host_root"]
    where = root.rstrip("/") + need.path if need.host_root else need.path
    found = mounts().get(where)
    assert found is not None, f"{need.path} ({need.why}) is not mounted at {where}"
    mount, volume = found
    assert volume["hostPath"]["path"] == need.path
    assert bool(mount.get("readOnly")) is need.read_only


def test_only_the_state_dir_and_tmp_are_writable() -> None:
    writable = {path for path, (m, _) in mounts().items() if not m.get("readOnly")}
    assert writable == {"/var/lib/cgwatch", "/tmp"}
    assert mounts()["/var/lib/cgwatch"][1]["hostPath"]["type"] == "DirectoryOrCreate"
    assert config_yaml()["state_dir"] == "/var/lib/cgwatch"
    assert mounts()["/tmp"][1]["emptyDir"]["medium"] == "Memory"
    assert mounts()["/sys/fs/cgroup"][0]["mountPropagation"] == "HostToContainer"


def test_config_files_are_mounted_where_the_config_names_them() -> None:
    cfg = config_yaml()
    m = mounts()
    assert m["/etc/cgwatch"][1]["configMap"]["name"] == "cgwatch-config"
    assert m["/etc/cgwatch/rules.d"][1]["configMap"]["name"] == "cgwatch-rules"
    assert m["/etc/cgwatch/auth"][1]["secret"]["secretName"] == "cgwatch-auth"
    assert "/etc/cgwatch/rules.d" in cfg["rules"]
    assert cfg["auth"]["token_file"] == "/etc/cgwatch/auth/" + next(iter(one("Secret")["stringData"]))
    assert "/etc/cgwatch/config.yaml" in (KDIR / "Dockerfile").read_text()


def test_the_token_placeholder_cannot_be_deployed_unchanged() -> None:
    token = one("Secret", "cgwatch-auth")["stringData"]["token"]
    assert "REPLACE" in token and len(token) < 16      # AuthConfig wants 16 characters: cgwatch refuses it


def test_the_example_rules_pass_rules_check(tmp_path: Path) -> None:
    data = one("ConfigMap", "cgwatch-rules")["data"]
    assert list(data) == ["local.yaml"]
    (tmp_path / "local.yaml").write_text(data["local.yaml"])
    out, err = io.StringIO(), io.StringIO()
    assert check([tmp_path / "local.yaml"], out, err) == 0, err.getvalue()


def test_the_config_loads_with_cgwatchs_own_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_IP", "10.0.0.7")
    monkeypatch.setenv("NODE_NAME", "node-7")
    token = tmp_path / "token"
    token.write_text("an-example-token-0123456789\n")
    text = config_text().replace("/etc/cgwatch/auth/token", str(token))
    path = tmp_path / "config.yaml"
    path.write_text(text)
    try:
        cfg = load_config(path)
    except ConfigError as e:
        pytest.fail(str(e))
    assert cfg.listen == "0.0.0.0:9477"
    assert cfg.kubernetes.kubelet_url == "https://10.0.0.7:10250"
    assert cfg.host_root == "/host" and cfg.reload_on_change is True
    assert cfg.host == "node-7"                      # alerts name the node, not the pod
    assert cfg.auth.token == "an-example-token-0123456789"
    assert [n.type for n in cfg.notify.values()] == ["stdout"]


# --- 5. probes, auth and the Service ------------------------------------------------------------

def test_probes_ask_healthz_on_the_named_port() -> None:
    c = container()
    (port,) = c["ports"]
    assert port == {"name": "http", "containerPort": 9477, "protocol": "TCP"}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    start = c["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 60, "BCC compiles for ~30 s at start"
    assert "/healthz" in config_yaml()["auth"]["public"]
    assert "/metrics" in config_yaml()["auth"]["public"]


def test_service_port_is_the_listen_port() -> None:
    svc = one("Service", "cgwatch")
    assert svc["spec"]["clusterIP"] == "None"
    (port,) = svc["spec"]["ports"]
    listen_port = int(config_yaml()["listen"].rpartition(":")[2])
    assert port["port"] == listen_port and port["name"] == "http" and port["targetPort"] == "http"
    assert container()["ports"][0]["containerPort"] == listen_port
    assert svc["spec"]["selector"].items() <= daemonset()["spec"]["template"]["metadata"]["labels"].items()


def test_daemonset_resources_and_rollout() -> None:
    ds = daemonset()
    r = container()["resources"]
    assert r["requests"] == {"cpu": "50m", "memory": "160Mi"}
    assert r["limits"] == {"memory": "400Mi"}
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}
    assert ds["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 15
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()


# --- 6. the image -------------------------------------------------------------------------------

def test_dockerfile_puts_the_rule_pack_where_the_config_reads_it() -> None:
    text = (KDIR / "Dockerfile").read_text()
    copies = re.findall(r"^COPY\s+rules/\S*\s+(\S+)", text, re.M)
    assert copies, "the Dockerfile does not copy rules/"
    pack = config_yaml()["rules"][0]
    assert [c.rstrip("/") for c in copies] == [pack]
    assert pack not in mounts(), "a mount would hide the shipped pack"
    assert re.search(r"^FROM debian:bookworm-slim$", text, re.M)
    assert "--system-site-packages /opt/cgwatch" in text
    entry = re.search(r"^ENTRYPOINT (.+)$", text, re.M)
    assert entry and yaml.safe_load(entry.group(1)) == [
        "/opt/cgwatch/bin/cgwatch", "run", "--config", "/etc/cgwatch/config.yaml"]
