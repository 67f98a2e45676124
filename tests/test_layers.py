"""The package's imports point one way: down the layer order that docs/architecture.md states, with no circle.

Reads every import in lead_ray/ (function-local ones included) with `ast`, so the rule holds without any tool from
outside the repo. Also: the repo documents itself (no path points outside it), and config and select name the same
selectors.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "lead_ray"
OUTSIDE = ("../" + "shared", "shared/" + "docs")  # split, so this file does not match itself


def layer_order() -> list[str]:
    line = re.search(r"^layers: (.+)$", (REPO / "docs" / "architecture.md").read_text(), re.M)
    assert line, "docs/architecture.md must state `layers: a,b,c` (bottom first)"
    return [name.strip() for name in line.group(1).split(",")]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """module → the lead_ray modules it imports (`from lead_ray.x import y` counts y when y is a module)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("lead_ray")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lead_ray"):
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def layer_of(module: str, order: list[str]) -> int:
    top = module.split(".")[1] if "." in module else ""
    assert top in order, f"{module}: its top-level name {top!r} is in no layer of docs/architecture.md"
    return order.index(top)


def test_every_import_points_down_the_layers() -> None:
    order = layer_order()
    graph = imports()
    upward = [f"{a} ({order[layer_of(a, order)]}) imports {b} ({order[layer_of(b, order)]})"
              for a, targets in graph.items() for b in targets if layer_of(b, order) > layer_of(a, order)]
    assert not upward, "\n".join(upward)
    assert len(graph) > 40 and sum(map(len, graph.values())) > 60  # the walk really saw the package


def test_no_import_circles() -> None:
    graph = imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[str] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if n.startswith(m + ".") or m.startswith(n + "."):
                continue  # a package and its own submodules: Python's import of a package, not a circle
            if state.get(n) == 1:
                circles.append(" → ".join(path[path.index(n):] + [n]))
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, "\n".join(circles)


def test_the_checker_sees_an_upward_import() -> None:
    """Guard against a vacuous pass: a known downward import is found, and read backwards it would be upward."""
    order = layer_order()
    graph = imports()
    assert "lead_ray.models.load" in graph["lead_ray.data.pool"]
    assert layer_of("lead_ray.models.load", order) < layer_of("lead_ray.data.pool", order)


def test_nothing_points_outside_the_repo() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    bad = []
    for name in files:
        path = REPO / name
        if path.suffix not in (".py", ".md", ".sh", ".yaml", ".yml", ".toml", ".txt", "") or not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        if any(outside in text for outside in OUTSIDE):
            bad.append(name)
    assert not bad, f"these files point outside the repo: {bad}"


def test_config_and_select_name_the_same_selectors() -> None:
    from lead_ray.config import SELECTORS
    from lead_ray.select.strategies import STRATEGIES

    assert set(SELECTORS) == set(STRATEGIES)
