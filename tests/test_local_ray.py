"""The local Ray instance that `jobs/lead.py` starts: every port on loopback, token auth on, and nothing left
behind when the driver is SIGKILLed. Real processes, read with psutil."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
# a driver that starts the instance as jobs/lead.py does, runs a task and an actor, and reports its dashboard
DRIVER = """
from lead_ray.config import LeadConfig
from lead_ray.runtime.ray_init import init_ray
init_ray(LeadConfig.from_flat(num_cpus=2))
import ray, time
ray.get(ray.remote(lambda: 1).remote())
@ray.remote
class A:
    def ping(self):
        return 1
a = A.remote()
ray.get(a.ping.remote())
print(ray.get_runtime_context().gcs_address, ray._private.worker.global_worker.node.address_info["webui_url"],
      flush=True)
time.sleep(600)
"""


def _launch_driver() -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    return subprocess.Popen([sys.executable, "-c", DRIVER], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)


def _started(proc: subprocess.Popen) -> str:
    """The driver's dashboard address, once its instance is up."""
    line = proc.stdout.readline().split()
    assert len(line) == 2, "the driver did not start"
    time.sleep(2)  # agents finish binding
    return line[1]


def _start_driver() -> tuple[subprocess.Popen, str]:
    proc = _launch_driver()
    return proc, _started(proc)


def _ray_tree(proc: subprocess.Popen) -> list[psutil.Process]:
    reaper = "lead_ray.runtime.reaper"
    return [p for p in psutil.Process(proc.pid).children(recursive=True)
            if reaper not in " ".join(p.cmdline())]


def test_every_port_is_on_loopback_and_needs_the_token() -> None:
    proc, dashboard = _start_driver()
    try:
        tree = _ray_tree(proc) + [psutil.Process(proc.pid)]
        listening = [(p.name(), c.laddr.ip, c.laddr.port) for p in tree for c in p.net_connections("inet")
                     if c.status == psutil.CONN_LISTEN]
        names = {n for n, _, _ in listening}
        assert {"gcs_server", "raylet"} <= names, listening  # the check sees Ray's servers
        exposed = [x for x in listening if x[1] not in LOOPBACK]
        assert not exposed, f"listening beyond loopback: {exposed}"
        print(f"\n[local ray] {len(listening)} listening sockets, all on loopback: "
              f"{sorted({(n, ip) for n, ip, _ in listening})}")
        # token auth is on: the dashboard's API refuses a request without the token
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://{dashboard}/api/version", timeout=10)
        assert e.value.code in (401, 403)
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_driver_leaves_no_ray_process_behind() -> None:
    proc, _ = _start_driver()
    tree = _ray_tree(proc)
    assert {"gcs_server", "raylet"} <= {p.name() for p in tree}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    alive = tree
    while alive and time.time() < deadline:
        time.sleep(0.5)
        alive = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    listening = [(p.name(), json.dumps([c.laddr.ip, c.laddr.port])) for p in alive
                 for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN]
    assert not alive, f"left behind: {[p.name() for p in alive]}, listening: {listening}"


def test_nothing_turns_token_auth_off() -> None:
    """No code, script or bench of the project sets RAY_AUTH_MODE (Ray's default keeps token auth on)."""
    files = [p for d in ("lead_ray", "bench", "scripts", "jobs", "tune", "deploy") for p in (REPO / d).rglob("*")
             if p.is_file() and p.suffix in (".py", ".sh", ".yaml", ".yml")] + [REPO / ".ci" / "run"]
    assert len(files) > 30
    offenders = [str(p.relative_to(REPO)) for p in files if "RAY_AUTH_MODE" in p.read_text(errors="replace")]
    assert not offenders, offenders


def test_a_workers_state_api_asks_its_own_instance_when_another_starts_later() -> None:
    """Ray Train's placement-group cleaner asks the State API, from a worker, whether its controller still lives.
    Asked without an address, Ray looks for "the" local instance: the one started last on the host. Here another
    instance starts after ours, and a worker of ours must still find its own actor (lead-ray hands the instance's
    processes their dashboard's address at start, without touching this driver's environment)."""
    import ray

    from lead_ray.config import LeadConfig
    from lead_ray.runtime.ray_init import init_ray

    init_ray(LeadConfig.from_flat(num_cpus=2))
    other = None
    try:
        assert "RAY_API_SERVER_ADDRESS" not in os.environ  # this driver's environment is as it was

        @ray.remote(num_cpus=0)
        class Probe:
            def own_state(self) -> str | None:
                from ray.util.state import get_actor

                me = get_actor(ray.get_runtime_context().get_actor_id())
                return me.state if me else None

        probe = Probe.remote()
        assert ray.get(probe.own_state.remote()) == "ALIVE"
        other, _ = _start_driver()  # now "the" local instance on this host is the other one
        assert ray.get(probe.own_state.remote()) == "ALIVE"
    finally:
        ray.shutdown()
        if other is not None:
            other.kill()
            other.wait()


def test_two_instances_starting_at_once_both_come_up() -> None:
    """Two runs started together on one host (as the test suite's workers do) each get a dashboard of their own:
    one port chosen for both (Ray's usual 8265, free when each looked) failed the second one's start."""
    procs = [_launch_driver(), _launch_driver()]
    try:
        dashboards = [_started(p) for p in procs]
        assert len(set(dashboards)) == 2, dashboards
    finally:
        for p in procs:
            p.kill()
            p.wait()
