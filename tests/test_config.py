"""Tests for `lead_ray.config`: defaults, YAML loading, `key=value` overrides, errors that name the key.

Expected values are written out by hand; none is obtained by calling the code under test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import lead_ray.config as config_module
from lead_ray.config import ConfigError, LeadConfig, build_config, config_fields, load_config, parse_overrides

# Where the bundled demo pool lives, derived from the package location (not from the constant under test).
DEMO_FOLDER = str(Path(config_module.__file__).resolve().parents[1] / "demo_data")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------------------------------------------


def test_defaults_validate() -> None:
    cfg = LeadConfig()
    assert cfg.validate() is cfg
    assert build_config({}) == cfg
    assert load_config() == cfg


def test_default_data_files_is_the_bundled_demo_folder() -> None:
    assert LeadConfig().data.data_files == [DEMO_FOLDER]
    assert Path(DEMO_FOLDER).is_dir()


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# ---------------------------------------------------------------------------------------------------------------
# YAML loading
# ---------------------------------------------------------------------------------------------------------------


def test_yaml_load_values_and_data_path_resolution(tmp_path: Path) -> None:
    data = _write(tmp_path / "pool" / "zz_lead_ray_test_only.jsonl", "{}\n")
    absolute = _write(tmp_path / "elsewhere" / "abs.jsonl", "{}\n")
    cfg_path = _write(
        tmp_path / "cfg" / "run.yaml",
        "run_name: from_yaml\n"
        "num_arms: 5\n"
        "learning_rate: 1.0e-3\n"
        "use_lora: false\n"
        "max_samples: null\n"
        f"data_files: [builtin:demo, ../pool/zz_lead_ray_test_only.jsonl, {absolute}]\n",
    )
    cfg = load_config(cfg_path)
    assert cfg.run.run_name == "from_yaml"
    assert cfg.selection.num_arms == 5 and isinstance(cfg.selection.num_arms, int)
    assert cfg.training.learning_rate == 1e-3
    assert cfg.model.use_lora is False
    assert cfg.data.max_samples is None
    # builtin:demo -> the bundled folder; a path relative to the YAML's folder -> absolute; absolute kept.
    assert cfg.data.data_files == [DEMO_FOLDER, str(data.resolve()), str(absolute)]


def test_yaml_relative_path_under_the_yaml_folder(tmp_path: Path) -> None:
    data = _write(tmp_path / "zz_lead_ray_sub" / "rows.jsonl", "{}\n")
    cfg_path = _write(tmp_path / "c.yaml", "data_files: [zz_lead_ray_sub/rows.jsonl, zz_lead_ray_sub]\n")
    assert load_config(cfg_path).data.data_files == [str(data.resolve()), str(data.parent.resolve())]


def test_bundled_yaml_configs_load() -> None:
    configs = Path(config_module.__file__).resolve().parents[2] / "configs"
    tiny = load_config(configs / "tiny.yaml")
    assert tiny.run.run_name == "tiny"
    assert tiny.data.data_files == [DEMO_FOLDER]
    assert tiny.training.learning_rate == 1e-3 and tiny.selection.num_arms == 3 and tiny.data.max_samples == 600
    assert load_config(configs / "demo.yaml").data.data_files == [DEMO_FOLDER]


def test_empty_yaml_gives_defaults(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path / "empty.yaml", "")) == LeadConfig()


def test_overrides_win_over_yaml(tmp_path: Path) -> None:
    cfg_path = _write(tmp_path / "c.yaml", "num_arms: 5\ngamma: 0.2\n")
    cfg = load_config(cfg_path, ["num_arms=3"])
    assert cfg.selection.num_arms == 3
    assert cfg.selection.gamma == 0.2


def test_yaml_scalar_data_files_is_resolved_like_a_list(tmp_path: Path) -> None:
    data = _write(tmp_path / "zz_lead_ray_scalar.jsonl", "{}\n")
    cfg_path = _write(tmp_path / "c.yaml", "data_files: zz_lead_ray_scalar.jsonl\n")
    assert load_config(cfg_path).data.data_files == [str(data.resolve())]


def test_builtin_demo_in_an_override_names_the_bundled_pool() -> None:
    assert load_config(None, ["data_files=builtin:demo"]).data.data_files == [DEMO_FOLDER]


# ---------------------------------------------------------------------------------------------------------------
# Overrides and type coercion
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "key", "expected"),
    [
        ("num_arms=5", "num_arms", 5),
        ("max_length=64", "max_length", 64),
        ("max_length=64.0", "max_length", 64),
        ("gamma=0.5", "gamma", 0.5),
        ("learning_rate=1e-4", "learning_rate", 1e-4),
        ("learning_rate=3E-5", "learning_rate", 3e-5),
        ("learning_rate=1.0e-3", "learning_rate", 1e-3),
        ("budget=50", "budget", 50.0),
        ("use_lora=false", "use_lora", False),
        ("use_lora=False", "use_lora", False),
        ("use_gpu=true", "use_gpu", True),
        ("use_correction=no", "use_correction", False),
        ("uniform_arms=yes", "uniform_arms", True),
        ("trust_remote_code=1", "trust_remote_code", True),
        ("merge_adapter=on", "merge_adapter", True),
        ("bf16=null", "bf16", None),
        ("memory_limit_gb=80", "memory_limit_gb", 80.0),
        ("bf16=off", "bf16", False),
        ("max_samples=null", "max_samples", None),
        ("max_samples=None", "max_samples", None),
        ("max_samples=100", "max_samples", 100),
        ("ray_address=null", "ray_address", None),
        ("ray_address=auto", "ray_address", "auto"),
        ("run_name=123", "run_name", "123"),
        ("data_files=a.jsonl,b.jsonl", "data_files", ["a.jsonl", "b.jsonl"]),
        ("data_files=one.jsonl", "data_files", ["one.jsonl"]),
        ("data_files=[x.jsonl, y]", "data_files", ["x.jsonl", "y"]),
        (" num_arms = 4", "num_arms", 4),
    ],
)
def test_override_coercion(item: str, key: str, expected: Any) -> None:
    cfg = load_config(None, [item])
    value = cfg.get(key)
    assert value == expected
    assert type(value) is type(expected)


def test_dict_overrides_are_coerced() -> None:
    cfg = load_config(None, {"num_arms": "6", "gamma": "0.25", "use_lora": "false", "max_samples": None})
    assert (cfg.selection.num_arms, cfg.selection.gamma, cfg.model.use_lora, cfg.data.max_samples) == (6, 0.25, False, None)


def test_several_overrides_apply_together() -> None:
    cfg = load_config(None, ["num_arms=4", "arms_per_round=4", "seed=7"])
    assert (cfg.selection.num_arms, cfg.selection.arms_per_round, cfg.run.seed) == (4, 4, 7)


def test_parse_overrides_keeps_text_after_the_first_equals() -> None:
    assert parse_overrides(["ray_address=a=b", "num_arms=3"]) == {"ray_address": "a=b", "num_arms": 3}


def test_override_without_equals_is_an_error() -> None:
    with pytest.raises(ConfigError, match="num_arms"):
        parse_overrides(["num_arms"])


# ---------------------------------------------------------------------------------------------------------------
# Errors that name the key
# ---------------------------------------------------------------------------------------------------------------


def test_unknown_key_suggests_the_near_miss() -> None:
    with pytest.raises(ConfigError, match=r"'learning_rat'.*did you mean 'learning_rate'"):
        load_config(None, ["learning_rat=0.1"])


def test_unknown_key_without_near_miss() -> None:
    with pytest.raises(ConfigError, match="'zzqqxx'") as info:
        load_config(None, ["zzqqxx=1"])
    assert "did you mean" not in str(info.value)


def test_unknown_key_in_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'num_armz'.*did you mean 'num_arms'"):
        load_config(_write(tmp_path / "c.yaml", "num_armz: 3\n"))


@pytest.mark.parametrize(
    ("item", "key"),
    [
        ("num_arms=abc", "num_arms"),
        ("num_arms=2.5", "num_arms"),
        ("num_arms=true", "num_arms"),
        ("num_arms=[1, 2]", "num_arms"),
        ("learning_rate=fast", "learning_rate"),
        ("gamma=true", "gamma"),
        ("use_lora=maybe", "use_lora"),
        ("use_lora=2", "use_lora"),
        ("data_files=5", "data_files"),
        ("run_name={a: 1}", "run_name"),
        ("run_name=null", "run_name"),
        ("num_arms=null", "num_arms"),
        ("memory_limit_gb=0", "memory_limit_gb"),
        ("memory_limit_gb=lots", "memory_limit_gb"),
        ("score_tensor_parallel_size=0", "score_tensor_parallel_size"),
        ("score_tensor_parallel_size=2", "score_tensor_parallel_size"),  # the hf backend has no tensor parallelism
    ],
)
def test_wrong_type_names_the_key(item: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(None, [item])


def test_wrong_type_in_yaml_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'max_length'"):
        load_config(_write(tmp_path / "c.yaml", "max_length: lots\n"))


@pytest.mark.parametrize(
    ("item", "key"),
    [
        ("gamma=0", "gamma"),
        ("gamma=1.01", "gamma"),
        ("smoothing=1.5", "smoothing"),
        ("smoothing=0", "smoothing"),
        ("eval_fraction=1", "eval_fraction"),
        ("eval_fraction=-0.1", "eval_fraction"),
        ("num_arms=0", "num_arms"),
        ("max_length=15", "max_length"),
        ("sample_rate=0", "sample_rate"),
        ("budget=0", "budget"),
        ("max_uses=0", "max_uses"),
        ("max_rounds=0", "max_rounds"),
        ("arms_per_round=8", "arms_per_round"),
        ("learning_rate=0", "learning_rate"),
        ("lr_decay=1.5", "lr_decay"),
        ("lora_dropout=1", "lora_dropout"),
        ("max_samples=0", "max_samples"),
        ("selector=oracle", "selector"),
        ("scoring_backend=onnx", "scoring_backend"),
        ("group_by=length", "group_by"),
        ("arm_by=source", "arm_by"),
        ("ifd_model=large", "ifd_model"),
        ("warmup_fraction=0", "warmup_fraction"),
        ("num_groups=0", "num_groups"),
        ("arm_reference=middle", "arm_reference"),
        ("run_name=a/b", "run_name"),
        ("run_name=", "run_name"),
        ("data_files=", "data_files"),
        ("num_workers=0", "num_workers"),
        ("num_cpus=1", "num_cpus"),
        ("output_dir=ftp://host/x", "output_dir"),
        ("cache_dir=s3://bucket/cache", "cache_dir"),
    ],
)
def test_out_of_range_names_the_key(item: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(None, [item])


def test_ifd_none_conflicts_name_the_key() -> None:
    with pytest.raises(ConfigError, match="'ifd_model'.*arm_by"):
        load_config(None, ["ifd_model=none"])  # arms by ifd is the default
    assert load_config(None, ["ifd_model=none", "arm_by=iu0"]).prep.ifd_model == "none"
    with pytest.raises(ConfigError, match="'ifd_model'.*static_ifd"):
        load_config(None, ["ifd_model=none", "arm_by=iu0", "selector=static_ifd"])


def test_cloud_output_dir_is_kept_as_a_uri_with_a_local_scratch_folder() -> None:
    cfg = load_config(None, ["output_dir=s3://bucket/runs/", "run_name=r", "cache_dir=/tmp/c"])
    assert cfg.run.output_dir == "s3://bucket/runs/" and cfg.run_uri == "s3://bucket/runs/r"
    assert cfg.run_dir.parent.parent == Path("/tmp/c/runs") and cfg.run_dir.name == "r"
    other = load_config(None, ["output_dir=s3://bucket/other", "run_name=r", "cache_dir=/tmp/c"])
    assert other.run_dir != cfg.run_dir  # one scratch folder per storage place
    local = load_config(None, ["output_dir=/tmp/out", "run_name=r"])
    assert local.run_uri == str(local.run_dir) == "/tmp/out/r"


def test_full_selector_budget_is_the_whole_pool() -> None:
    assert load_config(None, ["selector=full", "budget=0.1"]).budget_for(500) == 500
    assert load_config(None, ["selector=random", "budget=0.1"]).budget_for(500) == 50


def test_boundary_values_are_accepted() -> None:
    cfg = load_config(None, ["gamma=1", "smoothing=1", "eval_fraction=0", "max_length=16", "sample_rate=1"])
    assert (cfg.selection.gamma, cfg.selection.smoothing, cfg.data.eval_fraction, cfg.data.max_length, cfg.selection.sample_rate) == (1.0, 1.0, 0.0, 16, 1.0)


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(missing)
    assert "nope.yaml" in str(info.value)


def test_config_path_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path)


def test_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(_write(tmp_path / "bad.yaml", "num_arms: [1, 2\nrun_name: x\n"))
    assert "bad.yaml" in str(info.value)


def test_yaml_that_is_a_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping") as info:
        load_config(_write(tmp_path / "list.yaml", "- num_arms\n- gamma\n"))
    assert "list.yaml" in str(info.value)


def test_yaml_that_is_a_scalar(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path / "scalar.yaml", "just text\n"))


# ---------------------------------------------------------------------------------------------------------------
# budget_for
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "pool", "expected"),
    [
        (0.025, 1000, 25),  # fraction: 0.025 * 1000 = 25
        (0.1, 1000, 100),  # 0.1 * 1000 = 100
        (0.1, 37, 4),  # 3.7 rounds to 4
        (0.1, 32, 3),  # 3.2 rounds to 3
        (0.001, 10, 1),  # 0.01 rounds to 0, but at least one sample
        (1.0, 37, 37),  # budget 1 is the whole pool (a fraction, not a count of one)
        (50, 1000, 50),  # > 1: a count, independent of the pool size
        (50, 200, 50),
        (2, 1000, 2),
    ],
)
def test_budget_for(budget: float, pool: int, expected: int) -> None:
    cfg = build_config({"budget": budget})
    got = cfg.budget_for(pool)
    assert got == expected
    assert isinstance(got, int)


# ---------------------------------------------------------------------------------------------------------------
# save / load round trip
# ---------------------------------------------------------------------------------------------------------------


def test_save_then_load_round_trip_defaults(tmp_path: Path) -> None:
    cfg = LeadConfig()
    path = tmp_path / "nested" / "dir" / "config.yaml"
    cfg.save(path)
    assert path.is_file()
    assert load_config(path) == cfg


def test_save_then_load_round_trip_non_defaults(tmp_path: Path) -> None:
    data = _write(tmp_path / "d" / "rows.jsonl", "{}\n")
    cfg = load_config(
        None,
        {
            "run_name": "round_trip",
            "data_files": [str(data), str(tmp_path / "d")],
            "num_arms": 4,
            "arms_per_round": 2,
            "learning_rate": 1e-4,
            "gamma": 0.3,
            "use_lora": False,
            "bf16": True,
            "max_samples": 123,
            "ray_address": "auto",
            "budget": 75,
        },
    )
    path = tmp_path / "out" / "config.yaml"
    cfg.save(path)
    loaded = load_config(path)
    assert loaded == cfg
    # every field survives with its type
    for key in config_fields():
        assert type(loaded.get(key)) is type(cfg.get(key)), key


@pytest.mark.parametrize("item, says", [
    ("seed=[1", "override 'seed': '[1' is not a valid YAML value"),
    ("run_name={a", "override 'run_name': '{a' is not a valid YAML value"),
    ("run_name=!!python/name:os.system", "could not determine a constructor"),  # safe_load refuses every tag
    ("seed=2147483648", "config key 'seed': must be in [0, 2^31)"),  # faiss takes a 32-bit seed
])
def test_bad_override_is_one_line(item: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, [item])
    assert says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("content, says", [(b"seed: 1\x00\x01\n", "is not valid YAML: unacceptable character"),
                                           (b"\xff\xfeseed: 1\n", "is not UTF-8 text")])
def test_binary_config_file_is_one_line(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert says in str(e.value) and "\n" not in str(e.value)
