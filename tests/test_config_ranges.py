"""Every numeric config key at 0, -1, inf and nan: a one-line ConfigError naming the key, unless the table below
says the value is valid for that key. A new numeric key fails this test until it is classified here."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import get_type_hints

import pytest

from lead_ray.config import SECTIONS, ConfigError, build_config, config_fields
from tests.conftest import REPO

PROBES = {"0": 0, "-1": -1, "inf": math.inf, "nan": math.nan}
# which probes are valid values (with their meaning), per key; every other probe must be refused
VALID = {
    "seed": {"0"},
    "eval_fraction": {"0"},  # no held-out split
    "lora_dropout": {"0"},
    "weight_decay": {"0"},
    "max_grad_norm": {"0"},  # no clipping
    "max_failures": {"0", "-1"},  # no restarts; unlimited
    "loss_change_sketch_dim": {"0"},  # exact vectors
    "truncate_top": {"0"},  # no loss truncation
    "demote_after": {"0"},  # no demotion
}


def _numeric_keys() -> list[str]:
    hints = {k: h for cls in SECTIONS.values() for k, h in get_type_hints(cls).items()}
    return [f.name for _, f in config_fields().values()
            if ("int" in str(hints[f.name]) or "float" in str(hints[f.name])) and "bool" not in str(hints[f.name])
            and "list" not in str(hints[f.name]) and "dict" not in str(hints[f.name])]


def test_the_table_names_real_keys() -> None:
    keys = _numeric_keys()
    assert len(keys) >= 35 and set(VALID) <= set(keys)


@pytest.mark.parametrize("key", _numeric_keys())
@pytest.mark.parametrize("probe", list(PROBES))
def test_numeric_key_range(key: str, probe: str) -> None:
    if probe in VALID.get(key, set()):
        assert build_config({key: PROBES[probe]}) is not None
        return
    with pytest.raises(ConfigError) as e:
        build_config({key: PROBES[probe]})
    msg = str(e.value)
    assert f"'{key}'" in msg and "\n" not in msg, msg


@pytest.mark.parametrize("budget, ok", [(0.5, True), (1.0, True), (1, True), (30, True), (1.5, False),
                                         (2.5, False), (0.0, False)])
def test_budget_is_a_fraction_or_a_whole_count(budget: float, ok: bool) -> None:
    if ok:
        assert build_config({"budget": budget}).selection.budget == budget
    else:
        with pytest.raises(ConfigError, match="'budget'"):
            build_config({"budget": budget})


@pytest.mark.parametrize("name", [".", "..", "a/b", "-rf", "", "a\\b"])
def test_run_name_is_one_folder_name(name: str) -> None:
    with pytest.raises(ConfigError, match="'run_name'"):
        build_config({"run_name": name})


def test_cli_bad_value_is_one_line_exit_2_before_any_work() -> None:
    """Before any work: the job exits before it imports Ray, torch or transformers (it prints which it did)."""
    probe = ("import runpy, sys\n"
             "try:\n    runpy.run_path('jobs/lead.py', run_name='__main__')\n"
             "except SystemExit as e:\n"
             "    print(sorted(m for m in ('ray', 'torch', 'transformers') if m in sys.modules))\n"
             "    raise\n")
    proc = subprocess.run([sys.executable, "-c", probe, "--config", "configs/tiny.yaml", "budget=.inf",
                           "--output-dir", "/nonexistent/never-created"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.strip() == "[]", proc.stdout
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["lead-ray: error: config key 'budget': must be a finite number "
                                                "(got inf)"]
