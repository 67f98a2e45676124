"""report_to, for real and offline: the session's tiny job logs to TensorBoard (its event files read back by TensorBoard's own
reader), MLflow (a local SQLite store read back by MlflowClient) and W&B (offline mode), and every logged figure
equals the run's metrics.jsonl and bandit.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lead_ray.config import ConfigError, load_config
from tests.conftest import TINY


def test_report_to_takes_a_list_or_a_comma_string() -> None:
    assert load_config(TINY, ["report_to=tensorboard,mlflow"]).tracking.report_to == ["tensorboard", "mlflow"]
    assert load_config(TINY).tracking.report_to == ["none"]
    for bad in ("tensorbord", "none,mlflow", ""):
        with pytest.raises(ConfigError, match="report_to"):
            load_config(TINY, [f"report_to={bad}"])


@pytest.fixture(scope="module")
def tracked_run(tiny_job):
    """The session's tiny job, run with report_to=tensorboard,mlflow,wandb (W&B offline; tests/conftest.py)."""
    run_dir, _ = tiny_job
    cfg = load_config(run_dir / "config.yaml")
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    bandit = [json.loads(line) for line in (run_dir / "bandit.jsonl").read_text().splitlines()]
    return cfg, rounds[:-1], rounds[-1], bandit


def expected(rounds: list[dict], bandit: list[dict]) -> dict[str, dict[int, float]]:
    """tag → {optimizer step: value}, from the run's own files."""
    want: dict[str, dict[int, float]] = {}
    for row, arms in zip(rounds, bandit):
        step = row["step"]
        for key in ("train_loss", "learning_rate", "eval_nll", "num_unique", "selection_seconds"):
            if key in row:  # eval_nll: with eval_every_round (the sweep test checks it)
                want.setdefault(key, {})[step] = row[key]
        for k, p in enumerate(arms["arm_probs"]):
            want.setdefault(f"arm_prob/{k}", {})[step] = p
        for arm in arms["arms"]:
            for key in ("reward", "scaled_reward", "delta_l", "beta"):
                want.setdefault(f"{key}/{arm['arm']}", {})[step] = arm[key]
    return want


def test_tensorboard_events_hold_the_run_figures(tracked_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg, rounds, final, bandit = tracked_run
    events = EventAccumulator(str(cfg.logging_path), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = events.Tags()
    for tag, by_step in expected(rounds, bandit).items():
        got = {e.step: e.value for e in events.Scalars(tag)}
        assert got.keys() == by_step.keys(), tag
        for step, value in by_step.items():
            assert got[step] == pytest.approx(value, rel=1e-5, abs=1e-7), (tag, step)
    assert {e.step: e.value for e in events.Scalars("nll_after")} == {rounds[-1]["step"]: pytest.approx(final["nll_after"])}
    assert "config" in " ".join(tags["tensors"]) and {f"report/{p.stem}" for p in
                                                       (cfg.run_dir / "report").glob("*.png")} <= set(tags["images"])


def test_mlflow_run_holds_figures_params_and_report(tracked_run) -> None:
    from mlflow.tracking import MlflowClient

    cfg, rounds, final, bandit = tracked_run
    client = MlflowClient(f"sqlite:///{cfg.logging_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("lead-ray").experiment_id])
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    for tag, by_step in expected(rounds, bandit).items():
        got = {m.step: m.value for m in client.get_metric_history(run.info.run_id, tag)}
        assert got == pytest.approx(by_step, rel=1e-9, abs=1e-12), tag
    assert json.loads(run.data.params["learning_rate"]) == cfg.training.learning_rate
    assert json.loads(run.data.params["report_to"]) == ["tensorboard", "mlflow", "wandb"]
    artifacts = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "report")}
    assert artifacts == {p.name for p in (cfg.run_dir / "report").iterdir() if p.is_file()}


def test_wandb_offline_run_is_written(tracked_run) -> None:
    cfg, *_ = tracked_run
    runs = list((cfg.logging_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert runs and all(p.stat().st_size > 0 for p in runs)
