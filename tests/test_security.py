"""Static security checks: the KubeRay RayJob manifest, cluster.yaml's open ports, and unsafe calls in the source.

Fast and Ray-free: YAML is parsed with `yaml.safe_load_all`, Python source with `ast` (calls are matched by their
resolved dotted name, so `import numpy as np; np.load(...)` and `from torch import load` are both caught).
Every check also runs against a small bad input, so a check that silently stops detecting anything fails too.
"""

from __future__ import annotations

import ast
import copy
import importlib.metadata
import re
import shlex
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lead_ray.config import LeadConfig

ROOT = Path(__file__).resolve().parents[1]
RAYJOB_YAML = ROOT / "deploy" / "kuberay" / "rayjob.yaml"
CLUSTER_YAML = ROOT / "cluster.yaml"
SOURCE_GLOBS = ("lead_ray/**/*.py", "jobs/*.py", "tune/*.py", "bench/*.py", "scripts/*.py")
DASHBOARD_PORT = 8265
PUBLIC_SERVICE_TYPES = {"LoadBalancer", "NodePort"}
GPU = "nvidia.com/gpu"

Violation = tuple[int, str]  # (line, message)
Check = Callable[[ast.AST], list[Violation]]


# --------------------------------------------------------------------------------------------------------------
# KubeRay RayJob manifest
# --------------------------------------------------------------------------------------------------------------


def _rayjob_docs() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(RAYJOB_YAML.read_text()) if d is not None]
    assert all(isinstance(d, dict) for d in docs), "every YAML document must be a mapping"
    return docs


def _rayjob(docs: list[dict[str, Any]]) -> dict[str, Any]:
    jobs = [d for d in docs if d.get("kind") == "RayJob"]
    assert len(jobs) == 1, [d.get("kind") for d in docs]
    return jobs[0]


def _head_group(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["rayClusterSpec"]["headGroupSpec"]


def _worker_groups(job: dict[str, Any]) -> list[dict[str, Any]]:
    return job["spec"]["rayClusterSpec"].get("workerGroupSpecs") or []


def _pod_templates(job: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "head", _head_group(job)["template"]
    for group in _worker_groups(job):
        yield f"worker:{group['groupName']}", group["template"]
    if "submitterPodTemplate" in job["spec"]:
        yield "submitter", job["spec"]["submitterPodTemplate"]


def _requests_gpu(template: dict[str, Any]) -> bool:
    for container in template["spec"]["containers"]:
        resources = container.get("resources") or {}
        if any(int((resources.get(kind) or {}).get(GPU, 0)) > 0 for kind in ("limits", "requests")):
            return True
    return False


def _labels_match(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels only; matchExpressions are not used here) selects these labels."""
    if not selector or selector.get("matchExpressions"):
        return False
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _rule_covers_port(rule: dict[str, Any], port: int) -> bool:
    ports = rule.get("ports")
    if not ports:  # no ports: the rule admits every port
        return True
    for p in ports:
        if p.get("port") is None:
            return True
        start, end = p["port"], p.get("endPort", p["port"])
        if isinstance(start, int) and start <= port <= end:
            return True
    return False


def _network_policy_problems(policy: dict[str, Any]) -> list[str]:
    """Why a NetworkPolicy would let arbitrary sources reach the pods it selects (empty when it does not)."""
    spec = policy.get("spec") or {}
    problems: list[str] = []
    if not (spec.get("podSelector") or {}).get("matchLabels"):
        problems.append("podSelector selects every pod in the namespace")
    if "Ingress" not in (spec.get("policyTypes") or ["Ingress"]):
        problems.append("policyTypes lacks Ingress: ingress is not restricted")
    for i, rule in enumerate(spec.get("ingress") or []):
        peers = rule.get("from")
        if not peers:
            problems.append(f"ingress[{i}] has an empty `from`: every source is admitted")
            continue
        for j, peer in enumerate(peers):
            where = f"ingress[{i}].from[{j}]"
            if "ipBlock" in peer:
                problems.append(f"{where} admits an ipBlock ({peer['ipBlock'].get('cidr')})")
            pod_selector = peer.get("podSelector")
            if not pod_selector or not (pod_selector.get("matchLabels") or pod_selector.get("matchExpressions")):
                problems.append(f"{where} has no podSelector labels: every pod of a namespace is admitted")
            namespace_selector = peer.get("namespaceSelector")
            if namespace_selector is not None and not (
                namespace_selector.get("matchLabels") or namespace_selector.get("matchExpressions")
            ):
                problems.append(f"{where} has an empty namespaceSelector: every namespace is admitted")
    return problems


def _policies_selecting(docs: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        d for d in docs if d.get("kind") == "NetworkPolicy" and _labels_match(d["spec"].get("podSelector"), labels)
    ]


def _peers_admitted_to_port(policies: list[dict[str, Any]], port: int) -> list[dict[str, Any]]:
    return [
        peer
        for policy in policies
        for rule in policy["spec"].get("ingress") or []
        if _rule_covers_port(rule, port)
        for peer in rule.get("from") or []
    ]


def _head_pod_labels(job: dict[str, Any]) -> dict[str, str]:
    # KubeRay adds ray.io/node-type (and ray.io/cluster etc.) to the labels of the pod template.
    return {**(_head_group(job)["template"].get("metadata", {}).get("labels") or {}), "ray.io/node-type": "head"}


def test_rayjob_parses_as_kuberay_v1_rayjob() -> None:
    docs = _rayjob_docs()
    job = _rayjob(docs)
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    assert isinstance(spec["backoffLimit"], int) and spec["backoffLimit"] >= 0
    # KubeRay turns runtimeEnvYAML into --runtime-env-json: it must be a mapping (a comment alone is `null`).
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)
    cluster = spec["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    ray_version = cluster["rayVersion"]
    assert ray_version == "2.60.0"
    installed = importlib.metadata.version("ray")
    assert ray_version.split(".")[:2] == installed.split(".")[:2], (ray_version, installed)


def test_rayjob_entrypoint_runs_the_lead_job_on_gpus() -> None:
    entrypoint = shlex.split(_rayjob(_rayjob_docs())["spec"]["entrypoint"])
    assert entrypoint[:4] == ["python", "jobs/lead.py", "--config", "configs/demo.yaml"], entrypoint
    assert "use_gpu=true" in entrypoint
    assert (ROOT / "jobs" / "lead.py").exists() and (ROOT / "configs" / "demo.yaml").exists()


def test_rayjob_outputs_are_on_storage_every_ray_pod_mounts() -> None:
    """The driver (head) writes pool.arrow and the GPU Train workers open it by path: output_dir must be shared."""
    job = _rayjob(_rayjob_docs())
    entrypoint = shlex.split(job["spec"]["entrypoint"])
    output_dir = entrypoint[entrypoint.index("--output-dir") + 1]
    overrides = dict(arg.split("=", 1) for arg in entrypoint if "=" in arg and not arg.startswith("-"))
    paths_needed = [output_dir, overrides.get("cache_dir", "")]

    def claim_mounts(template: dict[str, Any]) -> dict[str, str]:
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in template["spec"].get("volumes") or []
            if "persistentVolumeClaim" in v
        }
        return {
            m["mountPath"]: claims[m["name"]]
            for c in template["spec"]["containers"]
            for m in c.get("volumeMounts") or []
            if m["name"] in claims
        }

    ray_pods = [(name, t) for name, t in _pod_templates(job) if name != "submitter"]
    mounts = [claim_mounts(t) for _, t in ray_pods]
    shared = set.intersection(*(set(m.items()) for m in mounts))
    assert shared, f"no PersistentVolumeClaim mounted at the same path on every Ray pod: {mounts}"
    for path in paths_needed:
        assert any(path.startswith(mount_path.rstrip("/") + "/") for mount_path, _ in shared), (path, shared)


def test_rayjob_has_cpu_head_and_gpu_workers_from_zero() -> None:
    job = _rayjob(_rayjob_docs())
    head = _head_group(job)
    assert head["rayStartParams"]["num-gpus"] == "0"
    assert not _requests_gpu(head["template"])
    for container in head["template"]["spec"]["containers"]:
        assert container["resources"]["requests"] and container["resources"]["limits"], container["name"]
    gpu_groups = [g for g in _worker_groups(job) if _requests_gpu(g["template"])]
    assert gpu_groups, "no worker group requests nvidia.com/gpu"
    for group in gpu_groups:
        assert group["minReplicas"] == 0, group["groupName"]
        assert group.get("replicas", 0) == 0, group["groupName"]
        assert group["maxReplicas"] == 8, group["groupName"]
        for container in group["template"]["spec"]["containers"]:
            assert int(container["resources"]["limits"][GPU]) == 1, group["groupName"]


def test_rayjob_pods_share_one_image() -> None:
    job = _rayjob(_rayjob_docs())
    images = {name: [c["image"] for c in t["spec"]["containers"]] for name, t in _pod_templates(job)}
    assert len({image for names in images.values() for image in names}) == 1, images
    assert images["head"][0].startswith("rayproject/ray:2.60.0-"), images["head"]


def test_rayjob_creates_no_public_endpoint() -> None:
    docs = _rayjob_docs()
    job = _rayjob(docs)
    head = _head_group(job)
    assert head.get("serviceType", "ClusterIP") not in PUBLIC_SERVICE_TYPES
    assert head.get("enableIngress", False) is False
    for doc in docs:
        assert doc.get("kind") not in {"Ingress", "Route", "Gateway", "HTTPRoute"}, doc.get("kind")
        if doc.get("kind") == "Service":
            assert (doc.get("spec") or {}).get("type", "ClusterIP") not in PUBLIC_SERVICE_TYPES, doc["metadata"]
    for name, template in _pod_templates(job):
        assert not template["spec"].get("hostNetwork", False), name
        for container in template["spec"]["containers"]:
            assert all("hostPort" not in p for p in container.get("ports") or []), (name, container["name"])


def test_rayjob_pods_are_unprivileged() -> None:
    job = _rayjob(_rayjob_docs())
    for name, template in _pod_templates(job):
        spec = template["spec"]
        for container in spec["containers"]:
            ctx = container.get("securityContext") or {}
            assert ctx.get("privileged", False) is False, (name, container["name"])
            assert ctx.get("allowPrivilegeEscalation") is False, (name, container["name"])
            assert "ALL" in (ctx.get("capabilities") or {}).get("drop", []), (name, container["name"])
            assert not (ctx.get("capabilities") or {}).get("add"), (name, container["name"])
        if name != "head":  # the head keeps its token for the autoscaler sidecar
            assert spec.get("automountServiceAccountToken") is False, name


def test_rayjob_network_policies_are_restrictive() -> None:
    policies = [d for d in _rayjob_docs() if d.get("kind") == "NetworkPolicy"]
    for policy in policies:
        assert _network_policy_problems(policy) == [], policy["metadata"]["name"]


def _dashboard_problems(docs: list[dict[str, Any]]) -> list[str]:
    """A dashboard-host other than 127.0.0.1 needs a NetworkPolicy on the head that limits who reaches 8265."""
    job = _rayjob(docs)
    host = _head_group(job)["rayStartParams"].get("dashboard-host", "0.0.0.0")  # KubeRay's default
    if host == "127.0.0.1":
        return []
    head_policies = _policies_selecting(docs, _head_pod_labels(job))
    if not head_policies:
        return [f"dashboard-host={host} but no NetworkPolicy selects the head pod"]
    problems = [f"{p['metadata']['name']}: {x}" for p in head_policies for x in _network_policy_problems(p)]
    if not _peers_admitted_to_port(head_policies, DASHBOARD_PORT):
        problems.append("the head's NetworkPolicy admits nobody to 8265: the operator could not poll the job")
    return problems


def test_dashboard_reachable_only_through_network_policy_or_localhost() -> None:
    assert _dashboard_problems(_rayjob_docs()) == []


def test_dashboard_check_catches_unprotected_wildcard_host() -> None:
    docs = _rayjob_docs()
    _head_group(_rayjob(docs))["rayStartParams"]["dashboard-host"] = "0.0.0.0"
    without_policies = [d for d in docs if d.get("kind") != "NetworkPolicy"]
    assert _dashboard_problems(without_policies) == ["dashboard-host=0.0.0.0 but no NetworkPolicy selects the head pod"]
    other_target = {"kind": "NetworkPolicy", "metadata": {"name": "x"},
                    "spec": {"podSelector": {"matchLabels": {"app": "other"}}}}
    assert len(_dashboard_problems([*without_policies, other_target])) == 1
    open_policy = copy.deepcopy(_policies_selecting(docs, _head_pod_labels(_rayjob(docs)))[0])
    open_policy["spec"]["ingress"].append({})
    assert any("empty `from`" in p for p in _dashboard_problems([*without_policies, open_policy]))
    localhost = copy.deepcopy(without_policies)
    _head_group(_rayjob(localhost))["rayStartParams"]["dashboard-host"] = "127.0.0.1"
    assert _dashboard_problems(localhost) == []


def test_network_policy_admits_what_kuberay_needs() -> None:
    """The submitter pod and the KubeRay operator must reach 8265, the Ray pods each other, or the job hangs."""
    docs = _rayjob_docs()
    job = _rayjob(docs)
    peers = _peers_admitted_to_port(_policies_selecting(docs, _head_pod_labels(job)), DASHBOARD_PORT)
    submitter_labels = job["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    assert any(_labels_match(p.get("podSelector"), submitter_labels) for p in peers if "namespaceSelector" not in p)
    assert any(
        (p.get("podSelector") or {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "kuberay-operator"
        and (p.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
        for p in peers
    ), "no rule admits the KubeRay operator (by namespace and component label)"
    for name, template in _pod_templates(job):
        if name == "submitter":
            continue
        node_type = "head" if name == "head" else "worker"
        labels = {**template["metadata"]["labels"], "ray.io/node-type": node_type}
        # Every Ray pod's policy admits every Ray pod of this job on all ports.
        for policy in _policies_selecting(docs, labels):
            admits_ray_pods = [
                peer
                for rule in policy["spec"]["ingress"]
                if not rule.get("ports")
                for peer in rule["from"]
                if _labels_match(peer.get("podSelector"), template["metadata"]["labels"])
            ]
            assert admits_ray_pods, (name, policy["metadata"]["name"])


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda p: p["spec"]["ingress"][1].__setitem__("from", []), "empty `from`"),
        (lambda p: p["spec"]["ingress"][1]["from"].append({"ipBlock": {"cidr": "0.0.0.0/0"}}), "ipBlock"),
        (lambda p: p["spec"]["ingress"][1]["from"][0].__setitem__("podSelector", {}), "no podSelector labels"),
        (lambda p: p["spec"]["ingress"][2]["from"][0].__setitem__("namespaceSelector", {}), "every namespace"),
        (lambda p: p["spec"].__setitem__("podSelector", {}), "every pod in the namespace"),
        (lambda p: p["spec"].__setitem__("policyTypes", ["Egress"]), "lacks Ingress"),
    ],
    ids=["empty-from", "ipblock", "empty-podselector", "any-namespace", "selects-all-pods", "egress-only"],
)
def test_network_policy_check_catches_open_policies(mutate: Callable[[dict[str, Any]], Any], problem: str) -> None:
    docs = _rayjob_docs()
    policy = copy.deepcopy(_policies_selecting(docs, _head_pod_labels(_rayjob(docs)))[0])
    assert _network_policy_problems(policy) == []
    mutate(policy)
    assert any(problem in p for p in _network_policy_problems(policy)), _network_policy_problems(policy)


# --------------------------------------------------------------------------------------------------------------
# cluster.yaml: tests/test_cluster_yaml.py covers 0.0.0.0, dashboard-host and port 8265; this adds Ray's other
# unauthenticated ports (GCS, Ray Client), which the file's header also says must never be opened.
# --------------------------------------------------------------------------------------------------------------

RAY_INTERNAL_PORTS = (6379, 10001)


def _ingress_rules(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "IpPermissions" and isinstance(value, list):
                yield from (r for r in value if isinstance(r, dict))
            else:
                yield from _ingress_rules(value)
    elif isinstance(node, list):
        for item in node:
            yield from _ingress_rules(item)


def _opens(rule: dict[str, Any], port: int) -> bool:
    if str(rule.get("IpProtocol", "")) == "-1":
        return True
    low, high = int(rule.get("FromPort", -1)), int(rule.get("ToPort", -1))
    return (low == -1 and high == -1) or low <= port <= high


@pytest.mark.parametrize("port", RAY_INTERNAL_PORTS)
def test_cluster_yaml_opens_no_ray_internal_port(port: int) -> None:
    cfg = yaml.safe_load(CLUSTER_YAML.read_text())
    assert [r for r in _ingress_rules(cfg) if _opens(r, port)] == []


def test_cluster_yaml_port_check_catches_open_rules() -> None:
    bad = {"provider": {"security_group": {"IpPermissions": [{"IpProtocol": "tcp", "FromPort": 6000, "ToPort": 11000}]}}}
    assert all(len([r for r in _ingress_rules(bad) if _opens(r, p)]) == 1 for p in RAY_INTERNAL_PORTS)
    assert _opens({"IpProtocol": "-1"}, 6379)
    assert not _opens({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}, 6379)


# --------------------------------------------------------------------------------------------------------------
# Source code: unsafe deserialisation, remote code, unsafe serialisation, exposed dashboards
# --------------------------------------------------------------------------------------------------------------


def _import_aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted origin, from every import in the module (`np` -> `numpy`, `load` -> `torch.load`)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _calls(tree: ast.AST) -> Iterator[tuple[ast.Call, str | None]]:
    """Every call with its resolved dotted name (None for calls on expressions, e.g. `f()()`)."""
    aliases = _import_aliases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name is not None:
                root, _, rest = name.partition(".")
                name = aliases.get(root, root) + (f".{rest}" if rest else "")
            yield node, name


def _method_calls(tree: ast.AST, method: str) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == method:
            yield node


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is type(value) and node.value == value


def _requires_const_kwarg(tree: ast.AST, names: set[str], kwarg: str, value: object) -> list[Violation]:
    return [
        (call.lineno, f"{name}(...) without {kwarg}={value!r}")
        for call, name in _calls(tree)
        if name in names and not _is_const(_keyword(call, kwarg), value)
    ]


def check_torch_load(tree: ast.AST) -> list[Violation]:
    """torch.load unpickles unless weights_only=True."""
    return _requires_const_kwarg(tree, {"torch.load", "torch.serialization.load"}, "weights_only", True)


UNPICKLERS = {
    f"{module}.{fn}"
    for module in ("pickle", "_pickle", "cloudpickle", "ray.cloudpickle", "dill", "marshal")
    for fn in ("load", "loads", "Unpickler")
} | {"joblib.load", "pandas.read_pickle", "shelve.open"}


def check_no_unpickling(tree: ast.AST) -> list[Violation]:
    """No pickle-based loading at all: checkpoints and snapshots are safetensors, .npz and JSON."""
    return [(call.lineno, f"{name}(...) deserialises pickle") for call, name in _calls(tree) if name in UNPICKLERS]


def check_numpy_load(tree: ast.AST) -> list[Violation]:
    """np.load must never unpickle object arrays."""
    return _requires_const_kwarg(tree, {"numpy.load"}, "allow_pickle", False)


def check_from_pretrained(tree: ast.AST) -> list[Violation]:
    """from_pretrained passes trust_remote_code explicitly: a variable (the config) or False, never literal True."""
    out: list[Violation] = []
    for call in _method_calls(tree, "from_pretrained"):
        value = _keyword(call, "trust_remote_code")
        if value is None:
            out.append((call.lineno, "from_pretrained(...) without an explicit trust_remote_code="))
        elif not (isinstance(value, (ast.Name, ast.Attribute)) or _is_const(value, False)):
            out.append((call.lineno, f"from_pretrained(..., trust_remote_code={ast.unparse(value)})"))
    return out


TOKENIZER_RECEIVER = re.compile(r"(^|_)(tok|tokenizer|processor)s?$")


def _receiver_name(call: ast.Call) -> str:
    receiver = call.func.value if isinstance(call.func, ast.Attribute) else call.func
    if isinstance(receiver, ast.Attribute):
        return receiver.attr
    return receiver.id if isinstance(receiver, ast.Name) else ""


def check_save_pretrained(tree: ast.AST) -> list[Violation]:
    """Models are saved as safetensors (safe_serialization=True). Tokenizers (`tok`, `tokenizer`, `processor`
    receivers) write JSON and take no such flag, so they are exempt, but may never pass False either."""
    out: list[Violation] = []
    for call in _method_calls(tree, "save_pretrained"):
        value = _keyword(call, "safe_serialization")
        if value is not None and not _is_const(value, True):
            out.append((call.lineno, f"save_pretrained(..., safe_serialization={ast.unparse(value)})"))
        elif value is None and not TOKENIZER_RECEIVER.search(_receiver_name(call)):
            out.append((call.lineno, f"{_receiver_name(call)}.save_pretrained(...) without safe_serialization=True"))
    return out


def check_ray_init_dashboard_host(tree: ast.AST) -> list[Violation]:
    """A local Ray instance's dashboard/job server binds to loopback only."""
    out: list[Violation] = []
    for call, name in _calls(tree):
        if name == "ray.init":
            value = _keyword(call, "dashboard_host")
            if value is not None and not _is_const(value, "127.0.0.1"):
                out.append((call.lineno, f"ray.init(dashboard_host={ast.unparse(value)})"))
    return out


CHECKS: list[Check] = [
    check_torch_load,
    check_no_unpickling,
    check_numpy_load,
    check_from_pretrained,
    check_save_pretrained,
    check_ray_init_dashboard_host,
]

# Per check: snippets that must be flagged (one violation each) and snippets that must pass.
BAD_AND_GOOD: dict[Check, tuple[list[str], list[str]]] = {
    check_torch_load: (
        [
            "import torch\ntorch.load('x.pt')",
            "import torch\ntorch.load('x.pt', weights_only=False)",
            "from torch import load\nload('x.pt')",
            "import torch as T\nT.load('x.pt', map_location='cpu')",
            "import torch\nflag = True\ntorch.load('x.pt', weights_only=flag)",
        ],
        ["import torch\ntorch.load('x.pt', weights_only=True)", "import json\njson.load(open('x'))"],
    ),
    check_no_unpickling: (
        [
            "import pickle\npickle.load(f)",
            "import pickle\npickle.loads(b)",
            "from pickle import loads\nloads(b)",
            "import cloudpickle\ncloudpickle.loads(b)",
            "from ray import cloudpickle\ncloudpickle.load(f)",
            "import joblib\njoblib.load('m.joblib')",
            "import pandas as pd\npd.read_pickle('x.pkl')",
        ],
        ["import pickle\npickle.dumps(x)", "import json\njson.loads(s)", "import safetensors.torch as st\nst.load_file('x')"],
    ),
    check_numpy_load: (
        [
            "import numpy as np\nnp.load('x.npz')",
            "import numpy\nnumpy.load('x.npy', allow_pickle=True)",
            "from numpy import load\nload('x.npz', mmap_mode='r')",
        ],
        ["import numpy as np\nnp.load('x.npz', allow_pickle=False)", "import numpy as np\nnp.save('x.npy', a)"],
    ),
    check_from_pretrained: (
        [
            "AutoModel.from_pretrained(p)",
            "AutoModel.from_pretrained(p, trust_remote_code=True)",
            "AutoTokenizer.from_pretrained(p, trust_remote_code='yes')",
            "AutoTokenizer.from_pretrained(p, trust_remote_code=not cfg.safe)",
        ],
        [
            "AutoModel.from_pretrained(p, trust_remote_code=False)",
            "AutoModel.from_pretrained(p, trust_remote_code=trust_remote_code)",
            "AutoModel.from_pretrained(p, trust_remote_code=cfg.trust_remote_code)",
        ],
    ),
    check_save_pretrained: (
        [
            "model.save_pretrained(out)",
            "model.save_pretrained(out, safe_serialization=False)",
            "merged.save_pretrained(out, safe_serialization=flag)",
            "tok.save_pretrained(out, safe_serialization=False)",
            "stoken.save_pretrained(out)",
        ],
        [
            "model.save_pretrained(out, safe_serialization=True)",
            "tok.save_pretrained(out)",
            "self.tokenizer.save_pretrained(out)",
        ],
    ),
    check_ray_init_dashboard_host: (
        [
            "import ray\nray.init(dashboard_host='0.0.0.0')",
            "import ray as r\nr.init(include_dashboard=True, dashboard_host=host)",
        ],
        [
            "import ray\nray.init(dashboard_host='127.0.0.1')",
            "import ray\nray.init(address='auto')",
            "import ray\nray.init()",
        ],
    ),
}


def _source_files() -> list[Path]:
    return sorted({p for pattern in SOURCE_GLOBS for p in ROOT.glob(pattern)})


def _parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _check_id(check: Check) -> str:
    return check.__name__.removeprefix("check_")


def test_source_globs_cover_the_package() -> None:
    files = {p.relative_to(ROOT).as_posix() for p in _source_files()}
    for expected in ("lead_ray/train/checkpoint.py", "lead_ray/models/load.py", "lead_ray/select/snapshot.py",
                     "lead_ray/pipeline.py", "jobs/lead.py", "tune/sweep.py"):
        assert expected in files, expected


def test_checks_see_the_real_calls() -> None:
    """Guard against vacuous passes: the calls the checks police are found where the code makes them."""
    found = {
        name
        for path in ("lead_ray/train/checkpoint.py", "lead_ray/select/snapshot.py", "lead_ray/runtime/ray_init.py")
        for _, name in _calls(_parse(ROOT / path))
    }
    assert {"torch.load", "numpy.load", "ray.init"} <= found, found
    model = _parse(ROOT / "lead_ray/models/load.py")
    assert len(list(_method_calls(model, "from_pretrained"))) >= 2
    assert len(list(_method_calls(model, "save_pretrained"))) >= 2


@pytest.mark.parametrize("check", CHECKS, ids=_check_id)
def test_check_catches_bad_snippets(check: Check) -> None:
    bad, good = BAD_AND_GOOD[check]
    for snippet in bad:
        assert len(check(ast.parse(textwrap.dedent(snippet)))) == 1, snippet
    for snippet in good:
        assert check(ast.parse(textwrap.dedent(snippet))) == [], snippet


@pytest.mark.parametrize("check", CHECKS, ids=_check_id)
def test_source_passes(check: Check) -> None:
    violations = [
        f"{path.relative_to(ROOT)}:{line}: {message}"
        for path in _source_files()
        for line, message in check(_parse(path))
    ]
    assert violations == [], "\n" + "\n".join(violations)


def test_trust_remote_code_is_off_by_default() -> None:
    assert LeadConfig().trust_remote_code is False
