"""Ray Tune sweep: real trials of configs/tiny.yaml on a local Ray instance, ASHA, isolation, best_config."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from lead_ray.config import ConfigError, LeadConfig, load_config
from lead_ray.sweep import parse_space
from tests.conftest import TINY, seed_sweep
from tests.helpers import check_run_outputs


@pytest.mark.parametrize("space, message", [
    ({}, "is empty"),
    ({"gamma": ["uniform", 0.5, 0.1]}, "inverted range"),
    ({"gamma": ["uniform", 0.3, 0.3]}, "empty or inverted"),
    ({"smoothing": ["loguniform", 0.0, 1.0]}, "low > 0"),
    ({"temperature": ["uniform", 0.1, 1.0]}, "unknown hyperparameter"),
    ({"gamma": ["normal", 0.1, 1.0]}, "must be"),
    ({"gamma": ["uniform", 0.1]}, "exactly two numbers"),
])
def test_bad_search_spaces_name_the_problem(space: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_space(space, "random", 3)


def test_space_aliases_and_grid() -> None:
    space = parse_space({"b": ["loguniform", 0.01, 1.0], "k": ["uniform", 3, 7]}, "grid", 3)
    assert space["smoothing"]["grid_search"] == pytest.approx([0.01, 0.1, 1.0])
    assert space["num_arms"]["grid_search"] == [3, 5, 7]


def test_tuning_k_with_embedding_arms_is_refused_before_work(tmp_path: Path) -> None:
    from lead_ray.sweep import sweep

    cfg = load_config(None, {"arm_by": "embedding", "tune_space": {"k": ["choice", 3, 5]},
                             "output_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="num_arms can be tuned with arm_by ifd, iu0 or ifd_in_group"):
        sweep(cfg)
    assert not any(tmp_path.iterdir())  # nothing was prepared


def test_a_trial_that_failed_before_reporting_is_a_row_not_a_crash(tmp_path: Path) -> None:
    """Tune's result for a trial that died before its first report has no metrics and so no config (seen once
    under load, where the whole sweep then crashed while writing trials.csv): it is a row with its error, and the
    best trial still comes from the others."""
    from ray.tune import Result

    from lead_ray.sweep import write_results

    history = pd.DataFrame({"eval_nll": [3.0, 2.5], "round": [0, 1], "final": [0, 1]})
    ok = Result(metrics={"trial_id": "a", "config": {"smoothing": 0.2}}, checkpoint=None, error=None,
                path=str(tmp_path / "a"), metrics_dataframe=history)
    dead = Result(metrics=None, checkpoint=None, error=RuntimeError("the node went away"), path=str(tmp_path / "b"))
    silent = Result(metrics=None, checkpoint=None, error=None, path=str(tmp_path / "c"))
    out = write_results(LeadConfig.from_flat(), [ok, dead, silent], tmp_path, ["smoothing"])
    table = pd.read_csv(tmp_path / "trials.csv")
    assert len(table) == 3 and out["best"] == {"smoothing": 0.2} and out["best_eval_nll"] == 2.5
    assert table["error"].fillna("").tolist() == ["", "the node went away", "no result"]
    assert table["stopped_early"].tolist() == [False, True, True]


def test_too_many_concurrent_trials_is_an_error(ray_local) -> None:
    from lead_ray.sweep import max_concurrent

    cpus = int(ray_local.cluster_resources()["CPU"])
    assert max_concurrent(LeadConfig.from_flat(num_workers=1)) == cpus - 1  # each trial also holds 0.01 CPU
    assert max_concurrent(LeadConfig.from_flat(num_workers=2)) == (cpus - 1) // 2
    with pytest.raises(ConfigError, match="tune_max_concurrent_trials"):
        max_concurrent(LeadConfig.from_flat(num_workers=1, tune_max_concurrent_trials=cpus))
    with pytest.raises(ConfigError, match="one trial needs"):
        max_concurrent(LeadConfig.from_flat(num_workers=cpus + 1))


@pytest.mark.slow
def test_sweep_asha_isolation_resume_and_best_config(tiny_prepared, tmp_path: Path) -> None:
    from lead_ray.sweep import sweep

    seed_sweep(tiny_prepared, tmp_path / "sw")  # the pool the trials share, prepared once
    cfg = load_config(TINY, {
        "output_dir": str(tmp_path), "run_name": "sw", "tune_searcher": "grid", "tune_grace_period": 1,
        "tune_max_concurrent_trials": 2, "max_rounds": 5, "report_to": ["tensorboard", "mlflow"],
        # an identical pair first (concurrent trials with equal settings must select identically: no shared state),
        # then a learning rate too small to learn, which ASHA stops at its first rung
        "tune_space": {"learning_rate": ["choice", 3e-3, 3e-3, 1e-7]}})
    result = sweep(cfg)
    sweep_dir = tmp_path / "sw"
    table = pd.read_csv(sweep_dir / "trials.csv")
    assert len(table) == result["trials"] == 3 and (table["error"].fillna("") == "").all()
    assert result["stopped_early"] >= 1 and table["stopped_early"].sum() == result["stopped_early"]
    assert result["best"]["learning_rate"] == pytest.approx(3e-3)
    assert (sweep_dir / "sweep.png").stat().st_size > 10_000

    trials = sorted((sweep_dir / "trials").iterdir())
    assert len(trials) == 3
    by_lr: dict[float, list[pd.DataFrame]] = {}
    finished = table[~table["stopped_early"]]
    for t in trials:
        run_cfg = load_config(t / "config.yaml" if (t / "config.yaml").exists() else t / "ray" / "config.yaml")
        if t.name not in set(finished["trial_id"]):
            continue
        summary = check_run_outputs(t, run_cfg.selection.max_uses, sweep_dir / "shared" / "prep" / "enriched.parquet")
        sel = pq.read_table(t / "selections.parquet").to_pandas()
        assert sel["id"].nunique() == summary["num_unique"] <= summary["budget"]
        by_lr.setdefault(run_cfg.training.learning_rate, []).append(sel[["round", "id", "arm"]])
        check_trial_tracking(sweep_dir / "logs", t)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{sweep_dir / 'logs' / 'mlflow.db'}")  # one store, a run per trial
    runs = client.search_runs([client.get_experiment_by_name("lead-ray").experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(t.name for t in trials)
    pair = by_lr.get(3e-3, [])
    assert len(pair) >= 1
    if len(pair) == 2:  # the good pair ran concurrently: identical selections, round for round
        assert pair[0].reset_index(drop=True).equals(pair[1].reset_index(drop=True))

    again = sweep(cfg)  # same experiment name: resumes, runs nothing new
    assert again["trials"] == 3 and again["best"] == result["best"]
    assert sorted((sweep_dir / "trials").iterdir()) == trials  # no new trial was started

    # someone who can write the sweep's folder plants Tune state: the resume refuses it without unpickling it
    marker = tmp_path / "planted-code-ran"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")  # unpickling it creates the marker

    tuner_pkl = sweep_dir / "tune" / "sw" / "tuner.pkl"
    kept = tuner_pkl.read_bytes()
    tuner_pkl.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ConfigError, match="tuner.pkl.*resuming would unpickle it") as e:
        sweep(cfg)
    assert "\n" not in str(e.value) and not marker.exists()
    tuner_pkl.write_bytes(kept)  # the state lead-ray wrote is trusted again

    best = load_config(sweep_dir / "best_config.yaml")
    assert best.training.learning_rate == pytest.approx(3e-3)
    # best_config.yaml is a run config (jobs/lead.py --config takes it): the best finished trial's run as it ran,
    # in the sweep's output_dir under run_name "best", with the trials' per-round evaluation left as configured
    best_trial = sweep_dir / "trials" / table.sort_values("best_eval_nll")["trial_id"].iloc[0]
    ran = load_config(best_trial / "config.yaml" if (best_trial / "config.yaml").exists()
                      else best_trial / "ray" / "config.yaml").to_dict()
    differ = {k for k, v in best.to_dict().items() if ran[k] != v}
    assert differ <= {"output_dir", "run_name", "eval_every_round", "logging_dir"}, differ
    assert (best.run.output_dir, best.run.run_name) == (str(tmp_path), "best")


def check_trial_tracking(logs: Path, trial: Path) -> None:
    """report_to in a sweep: the trial's TensorBoard run holds its training loss at every round's step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rounds = [json.loads(line) for line in (trial / "metrics.jsonl").read_text().splitlines()][:-1]
    events = EventAccumulator(str(logs / trial.name), size_guidance={"scalars": 0}).Reload()
    for tag in ("train_loss", "eval_nll"):  # trials evaluate every round
        got = {e.step: e.value for e in events.Scalars(tag)}
        assert got == pytest.approx({r["step"]: r[tag] for r in rounds}, rel=1e-5), (trial.name, tag)


@pytest.mark.parametrize("experiment", ["/abs/elsewhere", "..", "a/b", "-x"])
def test_experiment_must_be_one_folder_name(tmp_path: Path, experiment: str) -> None:
    from lead_ray.sweep import sweep

    with pytest.raises(ConfigError, match="--experiment .* must be one folder name") as e:
        sweep(load_config(None, {"output_dir": str(tmp_path)}), experiment)
    assert "\n" not in str(e.value) and not any(tmp_path.iterdir())


def test_experiment_folder_with_other_files_is_refused_untouched(tmp_path: Path) -> None:
    from lead_ray.sweep import sweep

    theirs = tmp_path / "mine" / "trials.csv"
    theirs.parent.mkdir()
    theirs.write_text("someone else's results")
    with pytest.raises(ConfigError, match="already holds files that lead-ray did not make"):
        sweep(load_config(None, {"output_dir": str(tmp_path)}), "mine")
    assert theirs.read_text() == "someone else's results" and sorted(p.name for p in theirs.parent.iterdir()) == \
        ["trials.csv"]
