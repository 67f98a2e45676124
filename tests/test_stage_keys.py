"""Derived cache keys: a prepared stage is redone exactly when a key it reads changes, never for an operational key,
and an interrupted run resumes whatever its operational keys (train/fit.py; tests/test_run_folders.py)."""

from __future__ import annotations

import dataclasses

import pytest

from lead_ray.config import OPERATIONAL, ConfigError, LeadConfig, config_fields
from lead_ray.prep.prepare import stage_inputs, stage_keys

# every stage at once: embeddings for groups and kept in the enriched pool, IFD from a warm-up model
ALL_STAGES = {"group_by": "embedding", "arm_by": "ifd", "ifd_model": "warmup", "store_embeddings": True}
ARM_CLUSTERS = {"arm_by": "embedding"}


def _other(key: str, value, f: dataclasses.Field):
    """Another valid-looking value of a key."""
    choices = f.metadata.get("choices")
    if key == "report_to":
        return ["tensorboard"]
    if choices:
        return next(c for c in choices if c != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 2 if key not in ("num_cpus",) else 8
    if isinstance(value, float):
        return value / 2
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, "/elsewhere"]
    if isinstance(value, dict):
        return {}
    return 4 if key in ("num_cpus", "max_samples", "tune_max_concurrent_trials") else 0.5  # null keys


def _changed(base: LeadConfig, key: str) -> set[str] | None:
    try:
        other = base.replace(**{key: _other(key, base.get(key), config_fields()[key][1])})
    except ConfigError:
        return None  # not valid alone (e.g. tensor parallelism needs vLLM on GPUs)
    a, b = stage_keys(base, "ingest", "/model"), stage_keys(other, "ingest", "/model")
    assert a.keys() == b.keys() or key in ALL_STAGES or key in ("ifd_model", "group_by", "arm_by",
                                                                 "store_embeddings")
    return {name for name in a if a.get(name) != b.get(name)}


DOWNSTREAM = {"embed": {"groups", "arm_clusters", "enriched"}, "groups": {"enriched"},
              "arm_clusters": {"enriched"}, "score_base": {"enriched"}, "warmup": {"score_warmup", "enriched"},
              "score_warmup": {"enriched"}, "enriched": set()}


@pytest.mark.parametrize("setting", [ALL_STAGES, ARM_CLUSTERS])
def test_an_operational_key_redoes_no_stage(setting: dict) -> None:
    base = LeadConfig.from_flat(**setting)
    tried = 0
    for key in sorted(OPERATIONAL):
        changed = _changed(base, key)
        if changed is not None:
            tried += 1
            assert changed == set(), f"changing the operational key {key!r} redoes {changed}"
    assert tried >= len(OPERATIONAL) - 2


@pytest.mark.parametrize("setting", [ALL_STAGES, ARM_CLUSTERS])
def test_a_stage_that_is_redone_redoes_every_stage_after_it(setting: dict) -> None:
    base = LeadConfig.from_flat(**setting)
    for key in sorted(set(config_fields()) - OPERATIONAL):
        changed = _changed(base, key)
        if changed:
            after = {d for name in changed for d in DOWNSTREAM[name] if d in stage_inputs(base)}
            assert after <= changed, f"{key}: redoes {sorted(changed)} but not {sorted(after - changed)}"


def test_the_keys_each_stage_depends_on_worked_out_by_hand() -> None:
    base = LeadConfig.from_flat(**ALL_STAGES)
    everything = set(stage_keys(base, "ingest", "/model"))
    assert everything == {"embed", "groups", "score_base", "warmup", "score_warmup", "enriched"}
    assert _changed(base, "seed") == {"groups", "warmup", "score_warmup", "enriched"}  # k-means, warm-up; not scores
    assert _changed(base, "embedding_model") == {"embed", "groups", "enriched"}
    assert _changed(base, "num_groups") == {"groups", "enriched"}
    assert _changed(base, "scoring_backend") == {"score_base", "score_warmup", "enriched"}
    assert _changed(base, "learning_rate") == {"warmup", "score_warmup", "enriched"}  # the warm-up trains
    assert _changed(base, "lora_rank") == {"warmup", "score_warmup", "enriched"}
    assert _changed(base, "max_rounds") == {"warmup", "score_warmup", "enriched"}  # the warm-up's rounds
    assert _changed(base, "ifd_above_one") == {"enriched"}
    assert _changed(base, "num_arms") == {"enriched"}  # arms by IFD: a 1-D k-means inside the enriched stage
    assert _changed(base, "use_gpu") == everything  # every model pass runs on the GPU
    for selection_only in ("gamma", "smoothing", "bandit_lr", "budget", "quota", "truncate_top", "group_budget",
                           "utility", "loss_change_sketch_dim"):
        assert _changed(base, selection_only) == set(), selection_only  # tuning the bandit redoes nothing
    for operational in ("score_batch_size", "score_concurrency", "verbose", "report_to", "eval_batch_size",
                        "trust_remote_code", "embedding_concurrency"):
        assert _changed(base, operational) == set(), operational
