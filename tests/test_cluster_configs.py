"""The cluster configs in cluster/ checked against what consumes them (fast, no cloud access).

Launcher YAMLs (cluster/launcher/*.yaml, for `ray up`) are validated twice against the JSON
schema shipped inside the installed Ray (`ray/autoscaler/ray-schema.json`):

* raw, with jsonschema: the file on its own must be schema-valid, so a key the file
  introduces that Ray does not know fails here, with the file's own line of blame;
* merged, exactly as `ray up` does it (`prepare_config` fills in the provider's
  `defaults.yaml` by a shallow top-level update, then `validate_config` runs the same schema
  plus Ray's own cross-checks). Raw validation alone would miss what the defaults bring in: a
  file that left out `head_start_ray_commands` would inherit Ray's
  `--dashboard-host=0.0.0.0`, and Ray's `validate_config` rejects the raw file outright
  (it requires `cluster_synced_files`, which only the defaults supply).

The schema leaves `provider` and each `node_config` open (they pass through to the cloud
APIs), so only keys outside those are caught as unknown.

KubeRay manifests (cluster/kuberay/*.yaml) get structural checks of the fields KubeRay needs,
and the RayJob's entrypoint is parsed by the real `raydistill` CLI parser.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from raydistill.cli import _parser

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
LAUNCHER_FILES = sorted((CLUSTER / "launcher").glob("*.yaml"))
KUBERAY = CLUSTER / "kuberay"
# Every place a launcher config holds shell commands (top level and per node type).
COMMAND_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
WORLD_CIDRS = {"0.0.0.0/0", "::/0"}
# Ports that must never face the internet: dashboard / job API, GCS.
PRIVATE_PORTS = (8265, 6379)


def _ray_schema() -> dict[str, Any]:
    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    return json.loads(path.read_text())


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _merged(config: dict[str, Any]) -> dict[str, Any]:
    """The config as `ray up` validates it: provider defaults merged in, then checked."""
    merged = prepare_config(copy.deepcopy(config))
    validate_config(merged)
    return merged


def _commands(config: dict[str, Any]) -> list[str]:
    cmds = [c for key in COMMAND_KEYS for c in config.get(key) or []]
    for node_type in config.get("available_node_types", {}).values():
        cmds += [c for key in COMMAND_KEYS for c in node_type.get(key) or []]
    return cmds


def _public_exposures(config: dict[str, Any]) -> list[str]:
    """Commands or firewall rules that open the dashboard (or GCS) beyond the loopback."""
    bad = []
    for cmd in _commands(config):
        hosts = re.findall(r"--dashboard-host[= ]+['\"]?([^\s'\"]+)", cmd)
        if "0.0.0.0" in cmd or any(h not in LOOPBACK for h in hosts):
            bad.append(cmd)
    rules = config.get("provider", {}).get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        cidrs = {r.get("CidrIp") for r in rule.get("IpRanges", [])}
        cidrs |= {r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])}
        lo, hi = rule.get("FromPort", -1), rule.get("ToPort", -1)
        covers = lo == -1 or any(lo <= p <= hi for p in PRIVATE_PORTS)
        if cidrs & WORLD_CIDRS and covers:
            bad.append(f"IpPermissions {rule}")
    return bad


# ---------------------------------------------------------------- launcher configs
def test_launcher_configs_cover_aws_and_gcp():
    providers = {_load(p)["provider"]["type"] for p in LAUNCHER_FILES}
    assert {"aws", "gcp"} <= providers, f"launcher configs found: {LAUNCHER_FILES}"


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
def test_launcher_raw_config_matches_ray_schema(path):
    validator_cls = jsonschema.validators.validator_for(_ray_schema())
    errors = sorted(validator_cls(_ray_schema()).iter_errors(_load(path)), key=str)
    assert not errors, f"{path.name}: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
def test_launcher_merged_config_passes_ray_validation(path):
    merged = _merged(_load(path))
    gpu_types = [
        name
        for name, nt in merged["available_node_types"].items()
        if name != merged["head_node_type"] and nt["max_workers"] > nt["min_workers"]
    ]
    assert gpu_types, f"{path.name}: no autoscaling worker node type (max_workers > min_workers)"


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
@pytest.mark.parametrize("where", ["top", "node_type"])
def test_unknown_keys_are_rejected(path, where):
    config = _load(path)
    if where == "top":
        config["max_wrokers"] = 4  # a typo Ray must not ignore
    else:
        config["available_node_types"][config["head_node_type"]]["min_wrokers"] = 1
    with pytest.raises(jsonschema.ValidationError, match="wrokers"):
        jsonschema.validate(config, _ray_schema())
    with pytest.raises(jsonschema.ValidationError, match="wrokers"):
        _merged(config)


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
def test_dashboard_is_never_public(path):
    merged = _merged(_load(path))
    assert _public_exposures(merged) == []
    head_starts = [c for c in merged["head_start_ray_commands"] if "ray start" in c]
    assert head_starts and all("--dashboard-host=127.0.0.1" in c for c in head_starts)


def test_exposure_check_flags_rays_own_defaults():
    """Ray's defaults bind the dashboard to 0.0.0.0: the check above must see that."""
    defaults = Path(ray.autoscaler.__file__).parent / "aws" / "defaults.yaml"
    assert _public_exposures(_load(defaults))
    opened = {"security_group": {"IpPermissions": [_world_rule(8265)]}}
    assert _public_exposures({"provider": opened})
    assert not _public_exposures({"provider": {"security_group": {"IpPermissions": []}}})


def _world_rule(port: int) -> dict[str, Any]:
    return {
        "FromPort": port,
        "ToPort": port,
        "IpProtocol": "tcp",
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
    }


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
def test_token_auth_on_every_node(path):
    merged = _merged(_load(path))
    starts = [
        c
        for key in ("head_start_ray_commands", "worker_start_ray_commands")
        for c in merged[key]
        if "ray start" in c
    ]
    assert len(starts) == 2
    assert all(re.search(r"RAY_AUTH_MODE=token \S*ray start", c) for c in starts), starts
    # The laptop's token (ray get-auth-token --generate) is mounted at Ray's default path.
    assert merged["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    assert any("export RAY_AUTH_MODE=token" in c for c in merged["setup_commands"])


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
def test_nodes_install_raydistill_and_the_local_ray_version(path):
    setup = " ".join(_load(path)["setup_commands"])
    pins = re.findall(r"ray\[default\]==([0-9][\w.]*)", setup)
    assert pins == [ray.__version__], f"{path.name}: ray pins {pins}, laptop has {ray.__version__}"
    assert re.search(r'"raydistill\[cluster\] @ git\+https://\S+"', setup)


def test_placeholders_are_documented():
    readme = (CLUSTER / "README.md").read_text()
    files = [*CLUSTER.glob("launcher/*.yaml"), *CLUSTER.glob("kuberay/*.yaml")]
    tokens = {t for f in files for t in re.findall(r"YOUR_[A-Z0-9_]*[A-Z0-9]", f.read_text())}
    assert tokens, "expected YOUR_* placeholders in the cluster configs"
    assert sorted(t for t in tokens if t not in readme) == []


# ---------------------------------------------------------------- KubeRay manifests
def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _one(path: Path, kind: str) -> dict[str, Any]:
    docs = [d for d in _docs(path) if d.get("kind") == kind]
    assert len(docs) == 1, f"{path.name}: expected one {kind}, found {len(docs)}"
    doc = docs[0]
    assert doc["apiVersion"] == "ray.io/v1", f"{path.name}: apiVersion {doc['apiVersion']}"
    assert doc["metadata"]["name"], f"{path.name}: no metadata.name"
    return doc


def _containers(template: dict[str, Any], where: str) -> list[dict[str, Any]]:
    containers = template["spec"]["containers"]
    assert containers, f"{where}: no containers"
    for c in containers:
        assert c.get("name"), f"{where}: container without a name"
        assert f"rayproject/ray:{ray.__version__}-" in c.get("image", ""), (
            f"{where}: image {c.get('image')!r} is not Ray {ray.__version__}"
        )
    return containers


def _start_params(params: Any, where: str) -> None:
    assert isinstance(params, dict), f"{where}: rayStartParams must be a mapping"
    bad = {k: v for k, v in params.items() if not isinstance(v, str)}
    assert not bad, f"{where}: rayStartParams values must be strings, got {bad}"


def _gpus(container: dict[str, Any]) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def _check_cluster_spec(spec: dict[str, Any], where: str) -> None:
    """The RayCluster fields KubeRay needs, token auth, and at least one GPU worker group."""
    assert spec.get("rayVersion") == ray.__version__, (
        f"{where}: rayVersion {spec.get('rayVersion')}"
    )
    assert spec.get("authOptions", {}).get("mode") == "token", f"{where}: token auth is off"
    head = spec["headGroupSpec"]
    _start_params(head["rayStartParams"], f"{where}.headGroupSpec")
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{where}: head Service is exposed"
    _containers(head["template"], f"{where}.headGroupSpec")
    groups = spec["workerGroupSpecs"]
    assert groups, f"{where}: no workerGroupSpecs"
    gpu_groups = 0
    for g in groups:
        w = f"{where}.workerGroupSpecs[{g.get('groupName')}]"
        assert g.get("groupName"), f"{w}: no groupName"
        lo, n, hi = (g[k] for k in ("minReplicas", "replicas", "maxReplicas"))
        assert all(isinstance(x, int) for x in (lo, n, hi)), f"{w}: replica counts must be ints"
        assert 0 <= lo <= n <= hi and hi >= 1, (
            f"{w}: need 0 <= min {lo} <= replicas {n} <= max {hi}"
        )
        _start_params(g["rayStartParams"], w)
        for c in _containers(g["template"], w):
            if _gpus(c):
                requested = int(c["resources"].get("requests", {}).get("nvidia.com/gpu", _gpus(c)))
                assert requested == _gpus(c), f"{w}: GPU request {requested} != limit {_gpus(c)}"
                gpu_groups += 1
    assert gpu_groups >= 1, f"{where}: no worker group with an nvidia.com/gpu limit"


def test_raycluster_manifest():
    cluster = _one(KUBERAY / "raycluster.yaml", "RayCluster")
    _check_cluster_spec(cluster["spec"], "raycluster.yaml")


def test_rayjob_manifest():
    job = _one(KUBERAY / "rayjob.yaml", "RayJob")
    assert isinstance(job["spec"].get("entrypoint"), str)
    yaml.safe_load(job["spec"]["runtimeEnvYAML"])  # a string of YAML, parsed by KubeRay
    _check_cluster_spec(job["spec"]["rayClusterSpec"], "rayjob.yaml")


@pytest.mark.parametrize(
    "breakage",
    ["no_gpu_limit", "min_above_max", "int_start_param", "auth_off", "no_head", "old_image"],
)
def test_cluster_spec_check_rejects_broken_specs(breakage):
    spec = copy.deepcopy(_one(KUBERAY / "raycluster.yaml", "RayCluster")["spec"])
    group = spec["workerGroupSpecs"][0]
    container = group["template"]["spec"]["containers"][0]
    if breakage == "no_gpu_limit":
        container["resources"]["limits"].pop("nvidia.com/gpu")
        container["resources"]["requests"].pop("nvidia.com/gpu")
    elif breakage == "min_above_max":
        group["minReplicas"] = group["maxReplicas"] + 1
    elif breakage == "int_start_param":
        group["rayStartParams"]["num-gpus"] = 1
    elif breakage == "auth_off":
        spec.pop("authOptions")
    elif breakage == "no_head":
        spec.pop("headGroupSpec")
    else:
        container["image"] = "rayproject/ray:2.9.0-py311-gpu"
    with pytest.raises((AssertionError, KeyError)):
        _check_cluster_spec(spec, "broken")


def test_kuberay_prereqs_match_what_the_pods_reference():
    kinds = {(d["kind"], d["metadata"]["name"]) for d in _docs(KUBERAY / "prereqs.yaml")}
    for name, kind in (("raycluster.yaml", "RayCluster"), ("rayjob.yaml", "RayJob")):
        doc = _one(KUBERAY / name, kind)
        spec = doc["spec"].get("rayClusterSpec", doc["spec"])
        templates = [spec["headGroupSpec"]["template"]] + [
            g["template"] for g in spec["workerGroupSpecs"]
        ]
        for t in templates:
            assert ("ServiceAccount", t["spec"]["serviceAccountName"]) in kinds
            for vol in t["spec"].get("volumes", []):
                if "persistentVolumeClaim" in vol:
                    claim = vol["persistentVolumeClaim"]["claimName"]
                    assert ("PersistentVolumeClaim", claim) in kinds


def _parse_search(argv: list[str]):
    """Parse with the real CLI parser; argparse's exit becomes a readable test failure."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            return _parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"raydistill {shlex.join(argv)} does not parse:\n{err.getvalue()}")


def test_rayjob_entrypoint_is_a_valid_search():
    """Needs the `search` command in raydistill.cli (and search_spaces/ in the repo)."""
    argv = shlex.split(_one(KUBERAY / "rayjob.yaml", "RayJob")["spec"]["entrypoint"])
    assert argv[0] == "raydistill", argv
    args = _parse_search(argv[1:])
    assert args.command == "search"
    spaces = [a for a in argv[2:] if a.endswith(".yaml") and not a.startswith("-")]
    assert spaces and all((REPO / s).is_file() for s in spaces), f"missing spaces: {spaces}"
    opts = dict(itertools.pairwise(argv[2:]))
    assert opts["--address"] == "auto"  # attach to the RayJob's cluster
    assert re.match(r"(s3|gs)://", opts["--storage"]), "Tune storage must be shared cloud storage"
