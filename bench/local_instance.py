"""What a local Ray instance costs to start and use, as `init_ray` starts it, against one started with a runtime_env.

Each sample is a fresh process that starts a local instance, creates `--actors` actors (as a run's TorchTrainer,
its controller, the selection service and Ray Data's actors are), asks each once, and shuts the instance down. The
figures are the machine's CPU-seconds over that process's life (every process: the driver, the GCS, the raylet,
the dashboard, the workers; read from /proc/stat, so run it on an otherwise idle machine) and its wall time.

- `lead`: `lead_ray.runtime.ray_init.init_ray`: the instance's processes inherit its settings from the raylet.
- `runtime_env` (the baseline, lead-ray's way before): the same instance with the settings as a job runtime_env;
  Ray then starts every worker process through its setup_worker.py, which imports ray before the worker does.

The two alternate, `--repeats` times each. The last line is `cpu_ratio=<lead / runtime_env, medians>
wall_ratio=<...>`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(variant: str, actors: int) -> None:
    import ray

    from lead_ray.config import LeadConfig
    from lead_ray.runtime.ray_init import init_ray
    from lead_ray.runtime.ray_private import single_node_mode

    if variant == "lead":
        init_ray(LeadConfig.from_flat(num_cpus=4))
    else:
        single_node_mode()
        ray.init(address="local", num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1",
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})

    @ray.remote(num_cpus=0)
    class Echo:
        def pid(self) -> int:
            return os.getpid()

    handles = [Echo.remote() for _ in range(actors)]
    assert len(set(ray.get([h.pid.remote() for h in handles]))) == actors
    ray.shutdown()


def machine_cpu_seconds() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:7]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # user..softirq less idle, iowait


def sample(variant: str, actors: int) -> tuple[float, float]:
    cpu, t = machine_cpu_seconds(), time.time()
    subprocess.run([sys.executable, __file__, "--child", variant, "--actors", str(actors)], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return machine_cpu_seconds() - cpu, time.time() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--actors", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", choices=["lead", "runtime_env"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.actors)
    runs: dict[str, list[tuple[float, float]]] = {"lead": [], "runtime_env": []}
    for i in range(args.repeats):
        for variant in (("lead", "runtime_env") if i % 2 == 0 else ("runtime_env", "lead")):
            runs[variant].append(sample(variant, args.actors))
            cpu, wall = runs[variant][-1]
            print(f"[local instance] {variant:11s} repeat {i}: {cpu:5.1f} CPU-s, {wall:5.1f} s wall", flush=True)
    med = {v: (statistics.median(c for c, _ in r), statistics.median(w for _, w in r)) for v, r in runs.items()}
    for v, (cpu, wall) in med.items():
        print(f"[local instance] {v:11s} median: {cpu:5.1f} CPU-s, {wall:5.1f} s wall ({args.actors} actors)")
    print(f"cpu_ratio={med['lead'][0] / med['runtime_env'][0]:.3f} wall_ratio={med['lead'][1] / med['runtime_env'][1]:.3f}")


if __name__ == "__main__":
    main()
