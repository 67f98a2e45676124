"""The Ray instance a run uses: the cluster it was submitted to, or a private local one on 127.0.0.1."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from lead_ray.config import ConfigError, LeadConfig
from lead_ray.runtime.ray_private import single_node_mode
from lead_ray.runtime.reaper import start_reaper


def init_ray(cfg: LeadConfig) -> None:
    """Join the cluster we were submitted to (RAY_ADDRESS / ray_address), else start a local instance on 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return
    env = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
                                                               str(health_check_interval(cfg.training.num_workers))),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    address = cfg.run.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True)
        quiet_ray_data(cfg.tracking.verbose)
        return
    # One machine that nothing preempts: Ray Train's preemption watcher would only be one more process per run.
    env["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    for k, v in env.items():
        os.environ.setdefault(k, v)
    # A local instance is one node: Ray's single-node mode binds every Ray service to loopback, and Ray's token
    # auth (on by default for local instances) stays on.
    single_node_mode()
    # The dashboard (bound to 127.0.0.1) serves the State API, which Ray Train needs to clean up the placement
    # groups of a stopped run (e.g. a Tune trial that ASHA ends early). Ray's own actors that call it (Ray Train's
    # placement-group cleaner) look for "the" local instance, and find another one when two run on the host: the
    # instance's processes are told its dashboard's address in their environment, which they inherit from the
    # raylet. A runtime_env (env_vars or a setup hook) would do the same per worker, but then every worker process
    # starts through Ray's setup_worker.py, importing ray twice (~14% of a short run's CPU).
    # address="local": always a new instance of our own, never one that `ray start` left running on this machine.
    port = _free_dashboard_port()
    with environ(RAY_API_SERVER_ADDRESS=f"http://127.0.0.1:{port}"):
        ray.init(address="local", num_cpus=cfg.run.num_cpus or max(4, os.cpu_count() or 1), include_dashboard=True,
                 dashboard_host="127.0.0.1", dashboard_port=port, log_to_driver=True)
    quiet_ray_data(cfg.tracking.verbose)
    start_reaper()  # the instance's processes go when this driver goes, even if it is SIGKILLed


def quiet_ray_data(verbose: bool) -> None:
    """Ray Data's progress bars would repeat lead-ray's own (runtime/console.Progress), so they are off. Unless
    `verbose`, its per-dataset INFO lines (execution plan, start, finish) go to its ray-data.log only, and so does
    its warning that the bars are off."""
    import logging

    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    if verbose:
        return
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ == "PlainRayHandler":  # the console one; the file handlers keep everything
            handler.setLevel(logging.WARNING)
            handler.addFilter(lambda record: "Progress bars disabled" not in record.getMessage())


def health_check_interval(num_workers: int) -> float:
    """Seconds between the Train controller's polls of its workers: 0.05 per worker, at most Ray's default (2 s).
    A short run on a few workers then ends within a tick of its last step, and a poll of 1,024 workers never
    comes more often than Ray's own default."""
    return min(2.0, 0.05 * num_workers)


def _free_dashboard_port() -> int:
    """A free loopback port, from the kernel's ephemeral range. Not Ray's usual 8265: two instances starting at
    once would both find 8265 free, and the second one's dashboard would fail to start."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def environ(**values: str) -> Iterator[None]:
    """These environment variables while the block runs (for the processes it starts), then as they were."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def check_resources(cfg: LeadConfig) -> None:
    """On a local instance, asking for more workers or GPUs than exist would wait forever: say so instead."""
    import ray

    if cfg.run.ray_address or os.environ.get("RAY_ADDRESS"):
        return  # a cluster may autoscale: let it
    have = ray.cluster_resources()
    if cfg.training.use_gpu and have.get("GPU", 0) < cfg.training.num_workers:
        raise ConfigError(f"config key 'use_gpu': {cfg.training.num_workers} worker(s) need a GPU each, this machine has "
                          f"{int(have.get('GPU', 0))}")
    if have.get("CPU", 0) < cfg.training.num_workers:
        raise ConfigError(f"config key 'num_workers': {cfg.training.num_workers} workers need a CPU each, the local "
                          f"instance has {have.get('CPU', 0):g} (raise num_cpus)")
    # each preparation stage runs its actor pool beside one-CPU tasks that feed it (block reads, repartition)
    pools = {"preprocessing_num_workers": cfg.data.preprocessing_num_workers,
             "embedding_concurrency": cfg.prep.embedding_concurrency, "score_concurrency": cfg.prep.score_concurrency}
    key, actors = max(pools.items(), key=lambda kv: kv[1])
    if have.get("CPU", 0) < actors + 1:
        raise ConfigError(f"config key '{key}': {actors} actor(s) and the tasks that feed them need {actors + 1} "
                          f"CPUs, the local instance has {have.get('CPU', 0):g} (raise num_cpus"
                          f"{f' or lower {key}' if actors > 1 else ''})")



def on_driver_node() -> dict:
    """Ray remote args that keep a task or actor on the driver's node (its `ray.io/node-id` label): for work on the
    driver's local files (a multi-node cluster has no shared filesystem) and for actors whose outputs land next to
    the driver."""
    import ray

    return {"label_selector": {"ray.io/node-id": ray.get_runtime_context().get_node_id()}}


def reads_on_driver_node(inputs: int) -> dict:
    """`on_driver_node` for Ray Data tasks that only read the driver's files and cut them into blocks (the model
    work runs in actor pools anywhere): they take no CPU slot, so they run on a head started with `--num-cpus=0`.
    Without a CPU slot nothing bounds how many run at once, and Ray starts a worker process for each (~2 CPU-seconds
    apiece; 28 for a pool of 31 small files): a task pool caps them at the driver machine's cores, and at the
    `inputs` there are (a larger pool than inputs makes Ray Data warn on the user's console)."""
    import ray.data

    size = max(1, min(os.cpu_count() or 1, inputs))
    return {"num_cpus": 0, "compute": ray.data.TaskPoolStrategy(size=size), **on_driver_node()}
