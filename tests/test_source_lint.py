"""Static security checks of the source: no unpickling, torch.load with weights_only, safetensors only,
trust_remote_code off, dashboards on loopback.

Python source is parsed with `ast` (calls are matched by their resolved dotted name, so `import numpy as np;
np.load(...)` and `from torch import load` are both caught). Every check also runs against a small bad snippet, so a
check that silently stops detecting anything fails too.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lead_ray.config import LeadConfig

ROOT = Path(__file__).resolve().parents[1]
SOURCE_GLOBS = ("lead_ray/**/*.py", "jobs/*.py", "tune/*.py", "bench/*.py", "scripts/*.py")

Violation = tuple[int, str]  # (line, message)
Check = Callable[[ast.AST], list[Violation]]



# --------------------------------------------------------------------------------------------------------------
# Source code: unsafe deserialisation, remote code, unsafe serialisation, exposed dashboards
# --------------------------------------------------------------------------------------------------------------


def _import_aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted origin, from every import in the module (`np` -> `numpy`, `load` -> `torch.load`)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _calls(tree: ast.AST) -> Iterator[tuple[ast.Call, str | None]]:
    """Every call with its resolved dotted name (None for calls on expressions, e.g. `f()()`)."""
    aliases = _import_aliases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name is not None:
                root, _, rest = name.partition(".")
                name = aliases.get(root, root) + (f".{rest}" if rest else "")
            yield node, name


def _method_calls(tree: ast.AST, method: str) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == method:
            yield node


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is type(value) and node.value == value


def _requires_const_kwarg(tree: ast.AST, names: set[str], kwarg: str, value: object) -> list[Violation]:
    return [
        (call.lineno, f"{name}(...) without {kwarg}={value!r}")
        for call, name in _calls(tree)
        if name in names and not _is_const(_keyword(call, kwarg), value)
    ]


def check_torch_load(tree: ast.AST) -> list[Violation]:
    """torch.load unpickles unless weights_only=True."""
    return _requires_const_kwarg(tree, {"torch.load", "torch.serialization.load"}, "weights_only", True)


UNPICKLERS = {
    f"{module}.{fn}"
    for module in ("pickle", "_pickle", "cloudpickle", "ray.cloudpickle", "dill", "marshal")
    for fn in ("load", "loads", "Unpickler")
} | {"joblib.load", "pandas.read_pickle", "shelve.open"}


def check_no_unpickling(tree: ast.AST) -> list[Violation]:
    """No pickle-based loading at all: checkpoints and snapshots are safetensors, .npz and JSON."""
    return [(call.lineno, f"{name}(...) deserialises pickle") for call, name in _calls(tree) if name in UNPICKLERS]


def check_numpy_load(tree: ast.AST) -> list[Violation]:
    """np.load must never unpickle object arrays."""
    return _requires_const_kwarg(tree, {"numpy.load"}, "allow_pickle", False)


def check_from_pretrained(tree: ast.AST) -> list[Violation]:
    """from_pretrained passes trust_remote_code explicitly: a variable (the config) or False, never literal True."""
    out: list[Violation] = []
    for call in _method_calls(tree, "from_pretrained"):
        value = _keyword(call, "trust_remote_code")
        if value is None:
            out.append((call.lineno, "from_pretrained(...) without an explicit trust_remote_code="))
        elif not (isinstance(value, (ast.Name, ast.Attribute)) or _is_const(value, False)):
            out.append((call.lineno, f"from_pretrained(..., trust_remote_code={ast.unparse(value)})"))
    return out


TOKENIZER_RECEIVER = re.compile(r"(^|_)(tok|tokenizer|processor)s?$")


def _receiver_name(call: ast.Call) -> str:
    receiver = call.func.value if isinstance(call.func, ast.Attribute) else call.func
    if isinstance(receiver, ast.Attribute):
        return receiver.attr
    return receiver.id if isinstance(receiver, ast.Name) else ""


def check_save_pretrained(tree: ast.AST) -> list[Violation]:
    """Models are saved as safetensors (safe_serialization=True). Tokenizers (`tok`, `tokenizer`, `processor`
    receivers) write JSON and take no such flag, so they are exempt, but may never pass False either."""
    out: list[Violation] = []
    for call in _method_calls(tree, "save_pretrained"):
        value = _keyword(call, "safe_serialization")
        if value is not None and not _is_const(value, True):
            out.append((call.lineno, f"save_pretrained(..., safe_serialization={ast.unparse(value)})"))
        elif value is None and not TOKENIZER_RECEIVER.search(_receiver_name(call)):
            out.append((call.lineno, f"{_receiver_name(call)}.save_pretrained(...) without safe_serialization=True"))
    return out


def check_ray_init_dashboard_host(tree: ast.AST) -> list[Violation]:
    """A local Ray instance's dashboard/job server binds to loopback only."""
    out: list[Violation] = []
    for call, name in _calls(tree):
        if name == "ray.init":
            value = _keyword(call, "dashboard_host")
            if value is not None and not _is_const(value, "127.0.0.1"):
                out.append((call.lineno, f"ray.init(dashboard_host={ast.unparse(value)})"))
    return out


CHECKS: list[Check] = [
    check_torch_load,
    check_no_unpickling,
    check_numpy_load,
    check_from_pretrained,
    check_save_pretrained,
    check_ray_init_dashboard_host,
]

# Per check: snippets that must be flagged (one violation each) and snippets that must pass.
BAD_AND_GOOD: dict[Check, tuple[list[str], list[str]]] = {
    check_torch_load: (
        [
            "import torch\ntorch.load('x.pt')",
            "import torch\ntorch.load('x.pt', weights_only=False)",
            "from torch import load\nload('x.pt')",
            "import torch as T\nT.load('x.pt', map_location='cpu')",
            "import torch\nflag = True\ntorch.load('x.pt', weights_only=flag)",
        ],
        ["import torch\ntorch.load('x.pt', weights_only=True)", "import json\njson.load(open('x'))"],
    ),
    check_no_unpickling: (
        [
            "import pickle\npickle.load(f)",
            "import pickle\npickle.loads(b)",
            "from pickle import loads\nloads(b)",
            "import cloudpickle\ncloudpickle.loads(b)",
            "from ray import cloudpickle\ncloudpickle.load(f)",
            "import joblib\njoblib.load('m.joblib')",
            "import pandas as pd\npd.read_pickle('x.pkl')",
        ],
        ["import pickle\npickle.dumps(x)", "import json\njson.loads(s)", "import safetensors.torch as st\nst.load_file('x')"],
    ),
    check_numpy_load: (
        [
            "import numpy as np\nnp.load('x.npz')",
            "import numpy\nnumpy.load('x.npy', allow_pickle=True)",
            "from numpy import load\nload('x.npz', mmap_mode='r')",
        ],
        ["import numpy as np\nnp.load('x.npz', allow_pickle=False)", "import numpy as np\nnp.save('x.npy', a)"],
    ),
    check_from_pretrained: (
        [
            "AutoModel.from_pretrained(p)",
            "AutoModel.from_pretrained(p, trust_remote_code=True)",
            "AutoTokenizer.from_pretrained(p, trust_remote_code='yes')",
            "AutoTokenizer.from_pretrained(p, trust_remote_code=not cfg.safe)",
        ],
        [
            "AutoModel.from_pretrained(p, trust_remote_code=False)",
            "AutoModel.from_pretrained(p, trust_remote_code=trust_remote_code)",
            "AutoModel.from_pretrained(p, trust_remote_code=cfg.model.trust_remote_code)",
        ],
    ),
    check_save_pretrained: (
        [
            "model.save_pretrained(out)",
            "model.save_pretrained(out, safe_serialization=False)",
            "merged.save_pretrained(out, safe_serialization=flag)",
            "tok.save_pretrained(out, safe_serialization=False)",
            "stoken.save_pretrained(out)",
        ],
        [
            "model.save_pretrained(out, safe_serialization=True)",
            "tok.save_pretrained(out)",
            "self.tokenizer.save_pretrained(out)",
        ],
    ),
    check_ray_init_dashboard_host: (
        [
            "import ray\nray.init(dashboard_host='0.0.0.0')",
            "import ray as r\nr.init(include_dashboard=True, dashboard_host=host)",
        ],
        [
            "import ray\nray.init(dashboard_host='127.0.0.1')",
            "import ray\nray.init(address='auto')",
            "import ray\nray.init()",
        ],
    ),
}


def _source_files() -> list[Path]:
    return sorted({p for pattern in SOURCE_GLOBS for p in ROOT.glob(pattern)})


def _parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _check_id(check: Check) -> str:
    return check.__name__.removeprefix("check_")


def test_source_globs_cover_the_package() -> None:
    files = {p.relative_to(ROOT).as_posix() for p in _source_files()}
    for expected in ("lead_ray/train/checkpoint.py", "lead_ray/models/load.py", "lead_ray/select/journal.py",
                     "lead_ray/pipeline.py", "jobs/lead.py", "tune/sweep.py"):
        assert expected in files, expected


def test_checks_see_the_real_calls() -> None:
    """Guard against vacuous passes: the calls the checks police are found where the code makes them."""
    found = {
        name
        for path in ("lead_ray/train/checkpoint.py", "lead_ray/select/journal.py", "lead_ray/runtime/ray_init.py")
        for _, name in _calls(_parse(ROOT / path))
    }
    assert {"torch.load", "numpy.load", "ray.init"} <= found, found
    model = _parse(ROOT / "lead_ray/models/load.py")
    assert len(list(_method_calls(model, "from_pretrained"))) >= 2
    assert len(list(_method_calls(model, "save_pretrained"))) >= 2


@pytest.mark.parametrize("check", CHECKS, ids=_check_id)
def test_check_catches_bad_snippets(check: Check) -> None:
    bad, good = BAD_AND_GOOD[check]
    for snippet in bad:
        assert len(check(ast.parse(textwrap.dedent(snippet)))) == 1, snippet
    for snippet in good:
        assert check(ast.parse(textwrap.dedent(snippet))) == [], snippet


@pytest.mark.parametrize("check", CHECKS, ids=_check_id)
def test_source_passes(check: Check) -> None:
    violations = [
        f"{path.relative_to(ROOT)}:{line}: {message}"
        for path in _source_files()
        for line, message in check(_parse(path))
    ]
    assert violations == [], "\n" + "\n".join(violations)


def test_trust_remote_code_is_off_by_default() -> None:
    assert LeadConfig().model.trust_remote_code is False
