"""Ray Tune search over LEAD's hyperparameters: each trial is one full LEAD training run.

The pool is prepared once and shared read-only. Each trial is a Tune function that builds its own
SelectionService and TorchTrainer; Train's per-round reports reach Tune through TuneReportCallback, and ASHA
stops bad trials early on held-out NLL.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS

from lead_ray.config import ConfigError, LeadConfig, build_config
from lead_ray.data.prepared import PoolSources, PreparedPool
from lead_ray.pipeline import prepare_stages
from lead_ray.prep.cluster import difficulty_arms
from lead_ray.runtime.console import log
from lead_ray.runtime.folders import claim_folder
from lead_ray.runtime.ray_init import init_ray
from lead_ray.runtime.state_record import StateRecord, state_digests
from lead_ray.runtime.storage import RunStorage, stage
from lead_ray.runtime.tracking import Tracker, report_scalars, start_tracking
from lead_ray.train.fit import train_with_selection

ALIASES = {"b": "smoothing", "r": "sample_rate", "k": "num_arms", "lr": "learning_rate"}
TUNABLE = {"smoothing", "gamma", "bandit_lr", "num_arms", "sample_rate", "learning_rate", "max_uses", "arms_per_round",
           "weight_decay", "lora_rank"}
METRIC = "eval_nll"
TRIAL_CPU = 0.01  # the trial function only drives its TorchTrainer; Tune needs a non-empty request


def parse_space(space: dict[str, list], searcher: str, grid_points: int) -> dict[str, Any]:
    """Config entries → a Tune param space; every mistake is a ConfigError naming the hyperparameter."""
    from ray import tune

    if not space:
        raise ConfigError("config key 'tune_space': is empty; give at least one hyperparameter")
    out = {}
    for raw_name, spec in space.items():
        name = ALIASES.get(raw_name, raw_name)
        where = f"tune_space.{raw_name}"
        if name not in TUNABLE:
            raise ConfigError(f"{where}: unknown hyperparameter; tunable: {', '.join(sorted(TUNABLE))}")
        if not isinstance(spec, list) or len(spec) < 2 or spec[0] not in ("uniform", "loguniform", "choice"):
            raise ConfigError(f"{where}: must be [uniform|loguniform, low, high] or [choice, v1, v2, ...]")
        kind, values = spec[0], spec[1:]
        if kind == "choice":
            out[name] = tune.grid_search(values) if searcher == "grid" else tune.choice(values)
            continue
        if len(values) != 2 or not all(isinstance(v, (int, float)) for v in values):
            raise ConfigError(f"{where}: a {kind} range needs exactly two numbers, got {values}")
        low, high = float(values[0]), float(values[1])
        if not low < high:
            raise ConfigError(f"{where}: empty or inverted range [{low}, {high}]")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"{where}: a loguniform range needs low > 0, got {low}")
        integer = name in ("num_arms", "max_uses", "arms_per_round", "lora_rank")
        if searcher == "grid":
            pts = (np.geomspace if kind == "loguniform" else np.linspace)(low, high, grid_points)
            out[name] = tune.grid_search(sorted({int(round(p)) for p in pts}) if integer else pts.tolist())
        elif integer:
            out[name] = tune.randint(int(low), int(high) + 1)
        else:
            out[name] = (tune.loguniform if kind == "loguniform" else tune.uniform)(low, high)
    return out


def trial_config(base: LeadConfig, params: dict[str, Any], output_dir: str, trial_id: str) -> LeadConfig:
    """A trial's run: the base config with its hyperparameters, in `<output_dir>/<trial_id>`."""
    values = {**base.to_dict(), **params, "output_dir": output_dir, "run_name": trial_id, "eval_every_round": True}
    return build_config(values)


class TrialTracking(Callback):
    """report_to for a sweep: each trial is a run named by its trial id, under the sweep's logging folder, with the
    figures its training reports (what a single run logs)."""

    def __init__(self, cfg: LeadConfig, logging_dir: Path) -> None:
        self.cfg, self.logging_dir = cfg, logging_dir
        self.trackers: dict[str, Tracker] = {}

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        if trial.trial_id not in self.trackers:
            params = {k: v for k, v in trial.config.items() if k in TUNABLE}
            cfg = build_config({**self.cfg.to_dict(), **params, "run_name": trial.trial_id,
                                "logging_dir": str(self.logging_dir / trial.trial_id)})
            self.trackers[trial.trial_id] = Tracker(start_tracking(cfg, mlflow_dir=self.logging_dir))  # one MLflow store
        self.trackers[trial.trial_id].log_metrics(report_scalars(result, skip=AUTO_RESULT_KEYS),
                                                  step=int(result["step"]))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        if trial.trial_id in self.trackers:
            self.trackers.pop(trial.trial_id).close(finished=True)

    on_trial_error = on_trial_complete


class RecordState(Callback):
    """Records the digests of Tune's experiment state as Tune rewrites it (at most every `every_s`, and at the end),
    so the next resume can tell it from files someone else put there (`runtime/state_record.py`)."""

    def __init__(self, store: RunStorage, parts: tuple[str, ...], record: StateRecord, every_s: float = 5.0) -> None:
        self.store, self.parts, self.record, self.every_s, self.last = store, parts, record, every_s, 0.0

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if time.monotonic() - self.last >= self.every_s:
            self.record.add(state_digests(self.store, *self.parts))
            self.last = time.monotonic()

    def on_experiment_end(self, trials: list, **info) -> None:
        self.record.add(state_digests(self.store, *self.parts))


def _rearm(prepared: PreparedPool, num_arms: int, seed: int, out: Path, arm_by: str) -> PreparedPool:
    """A trial that tunes K gets its own enriched file with new arms (`difficulty_arms` on the shared scores)."""

    table = pq.read_table(prepared.enriched)
    arm = table.column("arm").to_numpy().copy()
    train = arm >= 0
    arm[train] = difficulty_arms(arm_by, {k: table.column(k).to_numpy()[train] for k in ("ifd", "iu0")},
                                 table.column("group").to_numpy()[train], num_arms, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.set_column(table.schema.get_field_index("arm"), "arm", pa.array(arm)), out)
    return dataclasses.replace(prepared, enriched=out)


def run_trial(config: dict[str, Any]) -> None:
    """The Tune function: one LEAD run with this trial's hyperparameters, in its own folder."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    base = LeadConfig.from_flat(**config["base"])
    sources = PoolSources(**config["sources"])
    pool_dir, enriched = Path(config["pool_dir"]), Path(config["enriched"])
    if sources.storage:  # the trial may run on any node: the prepared pool comes from the sweep's storage
        pool_dir = stage(sources.pool, sources.cache_dir)
        enriched = stage(f"{sources.storage}/prep", sources.cache_dir) / "enriched.parquet"
    prepared = PreparedPool(pool_dir, enriched, sources.model, sources)
    params = {k: v for k, v in config.items() if k in TUNABLE}
    cfg = trial_config(base, params, f"{config['sweep_uri']}/trials", ray.tune.get_context().get_trial_id())
    trial_dir = cfg.run_dir
    claim_folder(trial_dir)
    if cfg.selection.num_arms != base.selection.num_arms:
        prepared = _rearm(prepared, cfg.selection.num_arms, cfg.run.seed, trial_dir / "enriched.parquet", cfg.prep.arm_by)
    train_with_selection(cfg, prepared, callbacks=[TuneReportCallback()])


def max_concurrent(cfg: LeadConfig) -> int:
    """How many trials the cluster can run at once; an explicit setting beyond that is an error."""
    import ray

    total = ray.cluster_resources()
    per_trial_cpu, per_trial_gpu = cfg.training.num_workers + TRIAL_CPU, cfg.training.num_workers if cfg.training.use_gpu else 0
    fit = int(total.get("CPU", 0) // per_trial_cpu)
    if per_trial_gpu:
        fit = min(fit, int(total.get("GPU", 0) // per_trial_gpu))
    if fit < 1 and (cfg.run.ray_address or os.environ.get("RAY_ADDRESS")):
        # an autoscaling cluster (GPU workers from 0) may have none of these yet: let the autoscaler add them
        fit = cfg.tune.tune_max_concurrent_trials or 1
        log(f"tune: the cluster has no room for a trial yet; running {fit} at a time while it scales up")
        return fit
    if fit < 1:
        raise ConfigError(f"one trial needs {per_trial_cpu} CPU and {per_trial_gpu} GPU; the cluster has "
                          f"{total.get('CPU', 0)} CPU and {total.get('GPU', 0)} GPU")
    if cfg.tune.tune_max_concurrent_trials is not None:
        if cfg.tune.tune_max_concurrent_trials > fit:
            raise ConfigError(f"config key 'tune_max_concurrent_trials': {cfg.tune.tune_max_concurrent_trials} trials "
                              f"need more than the cluster has (room for {fit})")
        return cfg.tune.tune_max_concurrent_trials
    return fit


def sweep(cfg: LeadConfig, experiment: str | None = None) -> dict[str, Any]:
    """Run (or resume) the search; write trials.csv, the plot and best_config.yaml under the sweep folder."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    space = parse_space(cfg.tune.tune_space, cfg.tune.tune_searcher, cfg.tune.tune_grid_points)  # fail before any work
    if "num_arms" in space and cfg.prep.arm_by == "embedding":
        raise ConfigError("tune_space: num_arms can be tuned with arm_by ifd, iu0 or ifd_in_group (1-D arms per trial), "
                          "not with arm_by embedding")
    searcher = None
    if cfg.tune.tune_searcher == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError:
            raise ConfigError("tune_searcher 'optuna' needs the tune extra: bash scripts/setup.sh tune") from None
        searcher = OptunaSearch(metric=METRIC, mode="min", seed=cfg.run.seed)
    name = experiment or cfg.run.run_name
    try:  # one folder name inside output_dir, checked as run_name is: never a path to someone else's files
        cfg.replace(run_name=name).validate()
    except ConfigError:
        raise ConfigError(f"--experiment {name!r} must be one folder name (no '/', not '.' or '..', no leading "
                          "'-'); the sweep is written to output_dir/<experiment>") from None
    sweep_dir = cfg.run_dir.parent / name  # on this node (a scratch folder with cloud storage)
    claim_folder(sweep_dir)  # lead-ray's marker: a folder it did not make is refused, before any work
    store = RunStorage.at(f"{cfg.run.output_dir.rstrip('/')}/{name}" if "://" in cfg.run.output_dir else sweep_dir)
    store.check_reachable()
    init_ray(cfg)
    concurrency = max_concurrent(cfg)
    prepared = prepare_stages(cfg, sweep_dir / "shared", RunStorage(store.fs, store.path("shared")))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    constants = {"base": cfg.to_dict(), "pool_dir": str(prepared.pool_dir), "enriched": str(prepared.enriched),
                 "sources": dataclasses.asdict(prepared.sources), "sweep_uri": store.uri()}
    trainable = tune.with_resources(run_trial, {"CPU": TRIAL_CPU})
    logging_dir = Path(cfg.tracking.logging_dir).expanduser() if cfg.tracking.logging_dir else sweep_dir / "logs"
    callbacks = [TrialTracking(cfg, logging_dir)] if set(cfg.tracking.report_to) != {"none"} else []
    storage, fs = store.path("tune"), store.fs if store.remote else None
    path = f"{storage}/{name}"
    record = StateRecord.for_folder(cfg.cache_path, store, "tune", name)
    callbacks.append(RecordState(store, ("tune", name), record))
    if tune.Tuner.can_restore(path, storage_filesystem=fs):
        unknown = record.unknown(state_digests(store, "tune", name))
        if unknown:  # Tuner.restore unpickles these: only what this driver saw its own sweep write is trusted
            raise ConfigError(f"tune: {store.uri('tune', name)} holds Tune state this machine did not see lead-ray "
                              f"write ({', '.join(unknown[:3])}); resuming would unpickle it. Choose another "
                              "--experiment, or delete that folder to start this one afresh")
        log(f"tune: resuming experiment {name} from {store.uri('tune', name)}")
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True, param_space={**space, **constants},
                                   storage_filesystem=fs)
    else:
        num_samples = 1 if cfg.tune.tune_searcher == "grid" else cfg.tune.tune_num_samples
        log(f"tune: {num_samples if cfg.tune.tune_searcher != 'grid' else 'grid of'} trial(s), up to {concurrency} at once")
        tuner = tune.Tuner(
            trainable, param_space={**space, **constants},
            tune_config=tune.TuneConfig(
                metric=METRIC, mode="min", num_samples=num_samples, search_alg=searcher,
                max_concurrent_trials=concurrency,
                # max_t above the most reports a trial makes (rounds + final), so ASHA never cuts a finishing trial
                scheduler=ASHAScheduler(time_attr="training_iteration", max_t=cfg.selection.max_rounds + 2,
                                        grace_period=cfg.tune.tune_grace_period, reduction_factor=2)),
            run_config=tune.RunConfig(name=name, storage_path=storage, storage_filesystem=fs, verbose=0,
                                      callbacks=callbacks))
    grid = tuner.fit()
    record.add(state_digests(store, "tune", name))  # the state as the finished (or stopped) sweep left it
    out = write_results(cfg, grid, sweep_dir, list(space))
    if store.remote:
        for result in ("trials.csv", "best_config.yaml", "sweep.png", "sweep.json"):
            store.upload(sweep_dir / result, result)
        if callbacks and logging_dir.is_relative_to(sweep_dir):
            store.upload(logging_dir, "logs")
        out["storage"] = store.uri()
    return out


def write_results(cfg: LeadConfig, grid, sweep_dir: Path, names: list[str]) -> dict[str, Any]:
    rows = []
    for result in grid:
        # a trial that failed before its first report has no metrics, so no config (Tune keeps it in the metrics)
        metrics, config = result.metrics or {}, result.config or {}
        error = str(result.error) if result.error else ("" if metrics else "no result")
        hist = result.metrics_dataframe
        finished = hist is not None and "final" in hist and hist["final"].fillna(0).max() == 1
        best = float(hist[METRIC].min()) if hist is not None and METRIC in hist else math.nan
        rounds = int(hist["round"].max() + 1) if hist is not None and "round" in hist else 0
        rows.append({"trial_id": metrics.get("trial_id", ""), **{n: config.get(n) for n in names},
                     "best_eval_nll": best, "rounds": rounds, "stopped_early": not finished, "error": error})
    import pandas as pd

    table = pd.DataFrame(rows).sort_values("best_eval_nll")
    table.to_csv(sweep_dir / "trials.csv", index=False)
    print(table.to_string(index=False), flush=True)
    ok = table[~table["best_eval_nll"].isna()]
    if ok.empty:
        raise RuntimeError(f"no trial reported {METRIC}; see {sweep_dir / 'trials'}")
    best = ok.iloc[0]
    best_cfg = build_config({**cfg.to_dict(), **{n: _plain(best[n]) for n in names}, "run_name": "best"})
    best_cfg.save(sweep_dir / "best_config.yaml")
    plot(ok, names, sweep_dir / "sweep.png")
    summary = {"sweep_dir": str(sweep_dir), "trials": len(table), "stopped_early": int(table["stopped_early"].sum()),
               "best": {n: _plain(best[n]) for n in names}, "best_eval_nll": float(best["best_eval_nll"])}
    (sweep_dir / "sweep.json").write_text(json.dumps(summary, indent=2))
    return summary


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def plot(table, names: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.8), squeeze=False)
    for ax, n in zip(axes[0], names):
        ax.scatter(table[n], table["best_eval_nll"], c=table["stopped_early"].map({True: "tab:gray", False: "tab:blue"}))
        if n in ("smoothing", "learning_rate"):
            ax.set_xscale("log")
        ax.set_xlabel(n + (" (b)" if n == "smoothing" else ""))
        ax.set_ylabel("best held-out NLL")
        ax.set_title(f"held-out NLL vs {n}")
        ax.grid(alpha=0.3)
    fig.suptitle("LEAD sweep (gray: stopped early by ASHA)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
