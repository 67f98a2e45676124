"""Static checks of the KubeRay RayJob manifest (deploy/kuberay/rayjob.yaml): a real RayJob, GPU workers from zero,
shared output storage, no public endpoint, unprivileged pods, network policies that admit only what Ray needs.

Fast and Ray-free: YAML is parsed with `yaml.safe_load_all`. Every check also runs against a small bad input, so a
check that silently stops detecting anything fails too.
"""

from __future__ import annotations

import copy
import importlib.metadata
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lead_ray.config import load_config

ROOT = Path(__file__).resolve().parents[1]
RAYJOB_YAML = ROOT / "deploy" / "kuberay" / "rayjob.yaml"
DASHBOARD_PORT = 8265
PUBLIC_SERVICE_TYPES = {"LoadBalancer", "NodePort"}
GPU = "nvidia.com/gpu"




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


def test_rayjob_run_lives_in_a_bucket_reached_through_a_service_account() -> None:
    """No shared volume: output_dir is an S3 URI (workers stage the pool and model node-locally), and every Ray pod
    reaches the bucket as the IRSA-annotated ServiceAccount, with no key in the file."""
    docs = _rayjob_docs()
    job = _rayjob(docs)
    entrypoint = shlex.split(job["spec"]["entrypoint"])
    overrides = dict(arg.split("=", 1) for arg in entrypoint if "=" in arg and not arg.startswith("-"))
    assert overrides["output_dir"].startswith("s3://") and "--output-dir" not in entrypoint
    load_config(ROOT / "configs" / "demo.yaml", [f"output_dir={overrides['output_dir']}", "use_gpu=true"])
    for name, template in _pod_templates(job):
        claims = [v for v in template["spec"].get("volumes") or [] if "persistentVolumeClaim" in v]
        assert not claims, (name, claims)
        if name != "submitter":
            assert template["spec"]["serviceAccountName"] == "lead-ray", name
    (account,) = [d for d in docs if d.get("kind") == "ServiceAccount"]
    assert account["metadata"]["name"] == "lead-ray"
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    text = (ROOT / "deploy" / "kuberay" / "rayjob.yaml").read_text().lower()
    assert "aws_secret_access_key" not in text and "aws_access_key_id" not in text


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


