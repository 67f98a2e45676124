"""One config in typed sections, read from one flat YAML file and `key=value` overrides.

Users write flat keys (`learning_rate: 2e-4`, as in Hugging Face's and LLaMA-Factory's YAML files); each key belongs
to exactly one section, a frozen dataclass owned by the layer that reads it (`RunArgs`, `DataArgs`, `ModelArgs`,
`PrepArgs`, `SelectionArgs`, `TrainingArgs`, `TrackingArgs`, `TuneArgs`), as `HfArgumentParser` reads one file into
several dataclasses. Each field carries its help, choices, range and whether it is operational (`fields.arg`), so one
generic check validates them, the README's table is generated from them (`config/docs.py`), and the keys a resume or
a cached stage depends on are derived from them, never listed by hand.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml

from lead_ray.config.data import DEMO_DATA, DataArgs
from lead_ray.config.fields import ConfigError, LeadRayError, check_section, is_operational
from lead_ray.config.model import ModelArgs
from lead_ray.config.prep import PrepArgs
from lead_ray.config.run import CLOUD_SCHEMES, RunArgs
from lead_ray.config.selection import PRESETS, SELECTORS, SelectionArgs
from lead_ray.config.tracking import TRACKERS, TrackingArgs
from lead_ray.config.training import ATTENTION, TrainingArgs
from lead_ray.config.tune import TuneArgs

__all__ = ["ATTENTION", "CLOUD_SCHEMES", "DEMO_DATA", "OPERATIONAL", "PRESETS", "REPO_ROOT", "SECTIONS", "SELECTORS",
           "TRACKERS", "ConfigError", "DataArgs", "LeadConfig", "LeadRayError", "ModelArgs", "PrepArgs", "RunArgs",
           "SelectionArgs", "TrackingArgs", "TrainingArgs", "TuneArgs", "build_config", "config_fields", "inputs_of",
           "load_config", "parse_overrides", "result_changes", "result_values", "section_values"]

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]
# section name (LeadConfig's attribute) → its dataclass, in the order the flat YAML lists them
SECTIONS: dict[str, type] = {"run": RunArgs, "data": DataArgs, "model": ModelArgs, "prep": PrepArgs,
                             "selection": SelectionArgs, "training": TrainingArgs, "tracking": TrackingArgs,
                             "tune": TuneArgs}


def config_fields() -> dict[str, tuple[str, dataclasses.Field]]:
    """Every flat key → (its section's name, its field), in YAML order."""
    return {f.name: (name, f) for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)}


FIELDS = config_fields()
# keys that change how a run is executed, logged or reported, never what it trains (fields marked operational): a
# rerun that changes only these resumes an interrupted run (train/fit.py) and redoes no stage; the rest are result keys
OPERATIONAL = frozenset(k for k, (_, f) in FIELDS.items() if is_operational(f))


@dataclass(frozen=True)
class LeadConfig:
    run: RunArgs = field(default_factory=RunArgs)
    data: DataArgs = field(default_factory=DataArgs)
    model: ModelArgs = field(default_factory=ModelArgs)
    prep: PrepArgs = field(default_factory=PrepArgs)
    selection: SelectionArgs = field(default_factory=SelectionArgs)
    training: TrainingArgs = field(default_factory=TrainingArgs)
    tracking: TrackingArgs = field(default_factory=TrackingArgs)
    tune: TuneArgs = field(default_factory=TuneArgs)

    @classmethod
    def from_flat(cls, **values: Any) -> LeadConfig:
        """A validated config from flat keys (`LeadConfig.from_flat(num_cpus=4)`), each converted to its declared
        type or refused in one line; `build_config` also applies a `preset`."""
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            raise ConfigError(_unknown_key(unknown[0]))
        parts: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, value in values.items():
            parts[FIELDS[key][0]][key] = _coerce(key, value, _HINTS[key])
        return cls(**{name: SECTIONS[name](**kw) for name, kw in parts.items()}).validate()

    def replace(self, **values: Any) -> LeadConfig:
        """A validated copy with these flat keys changed."""
        return LeadConfig.from_flat(**{**self.to_dict(), **values})

    def get(self, key: str) -> Any:
        """A flat key's value, for code that handles keys by name (sweeps, presets, the run record)."""
        if key not in FIELDS:
            raise ConfigError(_unknown_key(key))
        return getattr(getattr(self, FIELDS[key][0]), key)

    def validate(self) -> LeadConfig:
        """Each field against its metadata (`fields.check_section`), then the rules that join several keys."""
        for name in SECTIONS:
            check_section(getattr(self, name))
        run, data, prep, sel, tr = self.run, self.data, self.prep, self.selection, self.training

        def need(ok: bool, key: str, msg: str) -> None:
            if not ok:
                raise ConfigError(f"config key '{key}': {msg} (got {self.get(key)!r})")

        need(bool(run.run_name) and "/" not in run.run_name and "\\" not in run.run_name
             and run.run_name not in (".", "..") and not run.run_name.startswith("-"), "run_name",
             "must be one folder name: not empty, no '/', not '.' or '..', no leading '-'")
        need("://" not in run.output_dir or run.output_dir.split("://")[0] in CLOUD_SCHEMES, "output_dir",
             f"must be a local folder or a {' / '.join(s + '://' for s in CLOUD_SCHEMES)} URI")
        need("://" not in run.cache_dir, "cache_dir", "must be a local folder (each node keeps its own cache)")
        need(bool(data.data_files), "data_files", "must list at least one file or folder")
        need(prep.ifd_model != "none" or prep.arm_by not in ("ifd", "ifd_in_group"), "ifd_model",
             "none needs arm_by iu0 or embedding")
        need(prep.ifd_model != "none" or sel.selector != "static_ifd", "ifd_model", "none cannot rank static_ifd")
        need(prep.warmup_rows == "selectable" or prep.ifd_model == "warmup", "warmup_rows",
             "reserved needs ifd_model: warmup")
        need(sel.utility != "learnable" or prep.ifd_model != "none", "utility",
             "learnable needs a reference model: ifd_model warmup (or base)")
        need(sel.budget <= 1 or float(sel.budget).is_integer(), "budget",
             "must be a fraction in (0, 1] or a whole count of samples >= 1")
        need(sel.arms_per_round <= sel.num_arms, "arms_per_round", "must be in [1, num_arms]")
        need(sel.arm_allocation == "sample" or sel.quota == "proportional", "arm_allocation",
             "proportional needs quota: proportional")
        need(sel.demote_after != 1, "demote_after", "must be 0 (off) or >= 2")
        need(sel.demote_after <= sel.max_uses, "demote_after", "must be <= max_uses")
        need(sel.ifd_max is None or prep.ifd_model != "none", "ifd_max", "needs IFD scores (ifd_model warmup or base)")
        need("none" not in self.tracking.report_to or len(self.tracking.report_to) == 1, "report_to",
             f"must be none, or a list of {', '.join(TRACKERS)}")
        need(self.tracking.logging_dir is None or "://" not in self.tracking.logging_dir, "logging_dir",
             "must be a local folder (the driver's node)")
        need(prep.score_tensor_parallel_size == 1 or (prep.scoring_backend == "vllm" and tr.use_gpu),
             "score_tensor_parallel_size", "needs scoring_backend=vllm and use_gpu=true (tensor parallelism is "
             "vLLM's, over GPUs)")
        return self

    @property
    def run_dir(self) -> Path:
        """The run folder on this node: the run itself, or with cloud storage its scratch copy in the cache."""
        run = self.run
        if "://" in run.output_dir:
            where = hashlib.sha256(run.output_dir.rstrip("/").encode()).hexdigest()[:12]
            return self.cache_path.expanduser().resolve() / "runs" / where / run.run_name
        return Path(run.output_dir).expanduser().resolve() / run.run_name

    @property
    def run_uri(self) -> str:
        """Where the run lives: `run_dir`, or `<output_dir>/<run_name>` in cloud storage."""
        out = self.run.output_dir
        return f"{out.rstrip('/')}/{self.run.run_name}" if "://" in out else str(self.run_dir)

    @property
    def logging_path(self) -> Path:
        """Where report_to's backends write on the driver's node (uploaded with the outputs in cloud storage)."""
        d = self.tracking.logging_dir
        return Path(d).expanduser().resolve() if d else self.run_dir / "logs"

    @property
    def cache_path(self) -> Path:
        return Path(os.path.expanduser(self.run.cache_dir))

    def budget_for(self, num_selectable: int) -> int:
        """The unique-sample budget B for a pool of this many selectable rows."""
        budget = self.selection.budget
        if self.selection.selector == "full":
            return num_selectable
        if budget <= 1:
            return max(1, int(round(budget * num_selectable)))
        return int(budget)

    def to_dict(self) -> dict[str, Any]:
        """The flat keys, as a YAML config file has them."""
        return {k: v for name in SECTIONS for k, v in dataclasses.asdict(getattr(self, name)).items()}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml())


def section_values(section: Any, *, results_only: bool = True) -> dict[str, Any]:
    """A section's (or any config dataclass's) fields by name; by default only those that affect results, which is
    what a stage's cache key and a run's resume key are the hash of."""
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)
            if not (results_only and is_operational(f))}


def inputs_of(cfg: LeadConfig, cls: type[T], **derived: Any) -> T:
    """A stage's inputs: the dataclass `cls`, whose fields are filled from the config keys of the same names, or
    from `derived` (values the caller computes). The stage reads only these, and its cache key is their hash
    (`runtime.stages.stage_key`), so the keys a stage depends on are exactly the ones it reads."""
    return cls(**{f.name: derived[f.name] if f.name in derived else cfg.get(f.name) for f in dataclasses.fields(cls)})


def result_values(cfg: LeadConfig) -> dict[str, Any]:
    """The config without its operational keys: what a run's results depend on."""
    return {k: v for k, v in cfg.to_dict().items() if k not in OPERATIONAL}


def result_changes(old: dict[str, Any], cfg: LeadConfig) -> list[str]:
    """The result keys whose values differ between a saved config (`old`, as read from its YAML; a key it lacks
    counts at its default) and `cfg`."""
    defaults = LeadConfig().to_dict()
    return sorted(k for k, v in result_values(cfg).items() if old.get(k, defaults[k]) != v)


def _unknown_key(key: str) -> str:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    return f"unknown config key '{key}'" + (f"; did you mean '{close[0]}'?" if close else "")


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


_HINTS = {k: h for cls in SECTIONS.values() for k, h in get_type_hints(cls).items()}


def build_config(values: dict[str, Any]) -> LeadConfig:
    """A validated config from flat key: value pairs as YAML gives them; a known `preset` supplies the keys they do
    not set."""
    preset = values.get("preset")
    if isinstance(preset, str) and preset in PRESETS:
        values = {**PRESETS[preset], **values}
    return LeadConfig.from_flat(**values)


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
