"""Three Ray nodes on this machine, as a cloud cluster without a shared filesystem has them: a head with no CPUs (so
no Train worker can land there) and two one-CPU worker nodes, each started under `unshare --mount` with its own
tmpfs over this test session's temp folder, lead-ray's cache and /tmp/ray. The driver runs beside the head and sees
its own files; the worker nodes see none of them.

With a local output_dir nothing is staged, and the run fails with lead-ray's message naming the node. With
output_dir in the S3 bucket (moto's server on 127.0.0.1), each worker node stages the pool and the model from the
bucket into its private cache, and the run passes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lead_ray.config import load_config
from lead_ray.runtime.storage import RunStorage
from tests.conftest import CACHE, REPO, TINY, seed_prepared
from tests.helpers import free_port, stop_head

pytestmark = pytest.mark.slow

SETTINGS = {"num_workers": 2, "max_rounds": 3, "max_failures": 0, "per_device_train_batch_size": 4}
NODES = """
import json, ray
ray.init()
print("NODES " + json.dumps({n["NodeID"]: "node:__internal_head__" in n["Resources"] for n in ray.nodes() if n["Alive"]}))
"""


@pytest.fixture(scope="module")
def cluster(s3_env, tmp_path_factory):
    """The head's address, the environment that reaches it, and {node id: is head} for its three nodes."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # the session's local instance turns multi-node off
    ray = str(bin_dir / "ray")
    port, dash, agent = free_port(), free_port(), free_port()
    subprocess.run([ray, "get-auth-token", "--generate"], env=env, capture_output=True, timeout=60, check=True)
    head = subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=0", "--dashboard-host=127.0.0.1",
                           f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={agent}",
                           "--node-ip-address=127.0.0.1", "--disable-usage-stats"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert head.returncode == 0, head.stderr[-2000:]
    address = f"127.0.0.1:{port}"
    private = [str(tmp_path_factory.getbasetemp()), str(CACHE), "/tmp/ray"]
    for folder in private:
        Path(folder).mkdir(parents=True, exist_ok=True)
    mounts = " && ".join(f"mount -t tmpfs tmpfs {folder}" for folder in private)
    unshare = ["unshare", "--mount", "--propagation", "private", *([] if os.geteuid() == 0 else ["--map-root-user"])]
    workers, failed = [], []

    def start_worker() -> subprocess.Popen:
        start = (f"{mounts} && exec {ray} start --address={address} --num-cpus=1 --node-ip-address=127.0.0.1 "
                 f"--dashboard-agent-listen-port={free_port()} --block")
        return subprocess.Popen([*unshare, "sh", "-c", start], env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    try:
        workers = [start_worker() for _ in range(2)]
        nodes, deadline = {}, time.time() + 180
        while len(nodes) < 3 and time.time() < deadline:
            # under load a joining raylet can give up on the GCS ("Failed to get node info … Deadline Exceeded"):
            # start that node again, twice at most
            for i, w in enumerate(workers):
                if w.poll() is not None:
                    failed.append(w.stderr.read()[-2000:])
                    assert len(failed) <= 2, failed
                    workers[i] = start_worker()
            probe = subprocess.run([sys.executable, "-c", NODES], env={**env, "RAY_ADDRESS": address},
                                   capture_output=True, text=True, timeout=60)
            # the line it printed; Ray's log lines from the cluster's processes come to a driver's stdout too (once,
            # under load, a starting raylet's stack trace)
            found = [line[6:] for line in probe.stdout.splitlines() if line.startswith("NODES ")]
            nodes = json.loads(found[-1]) if probe.returncode == 0 and found else {}
            time.sleep(1)
        assert len(nodes) == 3 and sum(nodes.values()) == 1, (nodes, failed)
        # every worker's line as it is: Ray folds lines that differ only in their numbers (the node ids here)
        yield address, {**env, "RAY_ADDRESS": address, "RAY_DEDUP_LOGS": "0"}, nodes
    finally:
        for w in workers:
            try:
                os.killpg(w.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stop_head(port)  # the head and every raylet and worker that names its GCS port


def _run(env: dict[str, str], tmp_path: Path, output_dir: str, run_dir: Path, prepared: Path):
    """jobs/lead.py on the cluster, from a run folder seeded (on the driver's node only) with the prepared pool."""
    shutil.rmtree(run_dir, ignore_errors=True)
    seed_prepared(prepared, run_dir)
    cmd = [sys.executable, str(REPO / "jobs" / "lead.py"), "--config", str(TINY), "--output-dir", output_dir,
           *[f"{k}={v}" for k, v in SETTINGS.items()]]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_without_staging_the_workers_find_nothing(cluster, tiny_prepared, tmp_path: Path) -> None:
    """A local output_dir is the run without staging: the worker nodes cannot open the driver's files."""
    _, env, _ = cluster
    out = tmp_path / "local"
    proc = _run(env, tmp_path, str(out), out / "tiny", tiny_prepared)
    assert proc.returncode != 0, proc.stdout[-3000:]
    said = proc.stdout + proc.stderr
    assert "is not on node" in said and "set output_dir to s3://" in said, said[-3000:]
    assert not (out / "tiny" / "summary.json").exists()


def test_with_staging_each_worker_node_pulls_from_the_bucket(cluster, tiny_prepared, tmp_path: Path) -> None:
    _, env, nodes = cluster
    uri = f"s3://lead-ray-test/{tmp_path.name}"
    cfg = load_config(TINY, {"output_dir": uri})
    proc = _run(env, tmp_path, uri, cfg.run_dir, tiny_prepared)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    storage = RunStorage.at(cfg.run_uri)
    summary = json.loads(storage.read_text("summary.json"))
    assert 1 <= summary["rounds"] <= SETTINGS["max_rounds"] and 0 < summary["num_unique"] <= summary["budget"]
    staged: dict[str, set[str]] = {}  # what was staged → onto which nodes
    for line in proc.stdout.splitlines():
        if "staged s3://" in line:
            what, node = line.split("staged ", 1)[1].split(" onto node ")
            staged.setdefault(what, set()).add(node.split(":")[0])
    print("\n".join(ln for ln in proc.stdout.splitlines() if "staged s3://" in ln))  # the figures, under -s
    heads = {n[:12] for n, is_head in nodes.items() if is_head}
    workers = {n[:12] for n, is_head in nodes.items() if not is_head}
    for what in (storage.uri("pool"), storage.uri("base_model")):
        assert staged.get(what) == workers, (what, staged, heads, [ln for ln in proc.stdout.splitlines() if "staged" in ln])  # once on each worker node, never on the head
