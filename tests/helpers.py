"""Helpers several test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lead_ray.data.store import RowStore
    from lead_ray.runtime.storage import RunStorage


@contextmanager
def outside_process(title: str) -> Iterator[int]:
    """A process titled `title` that is not a descendant of this one (its parent shell exits at once, so it is
    re-parented): another Ray instance's worker, as far as a process tree can tell."""
    out = subprocess.run(["bash", "-c", f"(exec -a '{title} decoy' sleep 300) >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True)
    pid = int(out.stdout.strip())
    try:
        yield pid
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# Longer rounds than tiny.yaml's defaults (batch 1, more rounds), so a kill lands mid-run.
RELIABILITY_SETTINGS = {"per_device_train_batch_size": 1, "budget": 0.3, "sample_rate": 0.1, "max_rounds": 8, "max_uses": 2}


def check_run_outputs(run_dir: Path, expect_max_uses: int, enriched_path: Path | None = None) -> dict:
    """The invariants every finished run must satisfy; returns the summary."""
    import pyarrow.parquet as pq

    for name in ("config.yaml", "selections.parquet", "metrics.jsonl", "bandit.jsonl", "quarantine.parquet",
                 "summary.json", "model"):
        assert (run_dir / name).exists(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    sel = pq.read_table(run_dir / "selections.parquet").to_pandas()
    assert {"round", "id", "arm", "group", "idu_before"} <= set(sel.columns)
    assert not sel.duplicated(["round", "id"]).any()
    assert sel["id"].nunique() == summary["num_unique"] <= summary["budget"]
    assert sel.groupby("id").size().max() <= expect_max_uses
    assert not sel["loss"].isna().any()  # every trained sample reported its loss from the training pass
    assert sel["round"].nunique() == summary["rounds"] == len(summary["arms_per_round"])
    enriched = pq.read_table(enriched_path or run_dir / "prep" / "enriched.parquet").to_pandas().set_index("id")
    assert (enriched.loc[sel["id"], "split"] == "train").all()  # held-out rows are never selected
    assert (enriched.loc[sel["id"], "arm"].to_numpy() == sel["arm"].to_numpy()).all()
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == summary["rounds"] + 1 and metrics[-1]["final"]
    # ΔL′ is a loss change in nats, predicted to first order for rows trained in earlier rounds: it stays within
    # twice the largest loss seen so far (the old Δθ/η rule gave about -200), so the IDU of trained rows stays on
    # the scale of their losses
    bandit = [json.loads(line) for line in (run_dir / "bandit.jsonl").read_text().splitlines()]
    for t, b in enumerate(bandit):
        for arm in b["arms"]:
            assert abs(arm["delta_l"]) <= 2 * max(m["mean_loss"] for m in metrics[: t + 1]), (arm, metrics[: t + 1])
    if "utility: learnable" not in (run_dir / "config.yaml").read_text():
        assert (sel["idu_after"] >= 0).all()
    waits = [m["selection_seconds"] for m in metrics[:-1]]  # cumulative: never back to 0, even after a restart
    assert waits == sorted(waits) and summary["selection_seconds"] >= max(waits, default=0.0)
    return summary


def checkpoints(storage: RunStorage) -> list[str]:
    import pyarrow.fs as pafs

    if not storage.exists("ray", "train"):
        return []
    infos = storage.fs.get_file_info(pafs.FileSelector(storage.path("ray", "train")))
    return sorted(i.base_name for i in infos if i.base_name.startswith("checkpoint_"))


_TAKEN: set[int] = set()


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range (32768+) and above Ray's worker ports (10002-19999).
    A port the kernel handed out (bind to 0) could be handed out again, to any of the new head's processes, before
    the process we meant it for binds it: the job agent then failed, "No available agent" for every submission."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 32000)
        if port in _TAKEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _TAKEN.add(port)
        return port


def stop_head(port: int) -> None:
    """Stop this test's head and only it (never `ray stop --force`, which kills every Ray instance on the host, the
    suite's shared one too): its services name its GCS port, and the workers are their descendants."""
    import psutil

    mine = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or []) + " "
        if f"--gcs_server_port={port} " in cmd or f"--gcs-address=127.0.0.1:{port} " in cmd:
            mine.append(p)
    tree = {q for p in mine for q in [p, *_children(p)]}
    for p in tree:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(list(tree), timeout=30)


def _children(p):
    import psutil

    try:
        return p.children(recursive=True)
    except psutil.Error:
        return []


def conv(user: str, answer: str, system: str | None = None) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


# (source, split, group, messages): two sources, train and eval rows, a system prompt, and one multi-turn eval row
# (NLL yes, exact match no). Answers have different lengths so token weighting differs from a plain row mean.
ROWS = [
    ("arithmetic", "eval", 0, conv("What is 2 + 3?", "2 + 3 = 5")),
    ("arithmetic", "train", 0, conv("What is 7 * 6?", "7 * 6 = 42")),
    ("facts", "eval", 1, conv("Name a Python keyword.", "The keyword lambda makes an anonymous function.")),
    ("arithmetic", "eval", 1, conv("Subtract 163 from 173.", "173 - 163 = 10", system="Be brief.")),
    ("facts", "train", 2, conv("What does len do?", "It returns the number of items.")),
    ("facts", "eval", 2, conv("What is a tuple?", "An immutable sequence.")),
    ("arithmetic", "eval", 2, conv("Divide 968 by 7.", "968 divided by 7 is 138 remainder 2")),
    ("facts", "eval", 0, conv("What is PEP 8?", "A style guide.") + [
        {"role": "user", "content": "Who wrote it?"}, {"role": "assistant", "content": "Guido van Rossum and others."}]),
    ("facts", "eval", 1, conv("What does zip do?", "It pairs items of several iterables into tuples.")),
]
EVAL_IDS = np.array([i for i, r in enumerate(ROWS) if r[1] == "eval"])


def write_pool(run_dir: Path, tok) -> RowStore:
    """pool/pool.parquet, pool/pool.arrow and prep/enriched.parquet of ROWS, as a run writes them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lead_ray.data.store import RowStore, StoreWriter
    from lead_ray.data.tokenize import tokenize_messages

    (run_dir / "pool").mkdir(parents=True)
    (run_dir / "prep").mkdir()
    ids = np.arange(len(ROWS))
    tokens = [tokenize_messages(tok, r[3], 192) for r in ROWS]
    writer = StoreWriter(run_dir / "pool" / "pool.arrow")
    writer.write(ids, [t[0].tolist() for t in tokens], [t[1].tolist() for t in tokens])
    writer.close()
    pq.write_table(pa.table({"id": ids, "source": [r[0] for r in ROWS], "split": [r[1] for r in ROWS],
                             "messages": [json.dumps(r[3]) for r in ROWS]}), run_dir / "pool" / "pool.parquet")
    # enriched in another row order than the pool: the evaluation must join by id, not by position
    order = ids[::-1]
    pq.write_table(pa.table({"id": order, "source": [ROWS[i][0] for i in order], "split": [ROWS[i][1] for i in order],
                             "group": np.array([ROWS[i][2] for i in order], dtype=np.int64),
                             "arm": np.array([0 if ROWS[i][1] == "train" else -1 for i in order], dtype=np.int64)}),
                   run_dir / "prep" / "enriched.parquet")
    return RowStore(run_dir / "pool" / "pool.arrow")


def make_run(root: Path, tok, tiny_model_path: str) -> Path:
    from lead_ray.config import LeadConfig

    run_dir = root / "run"
    run_dir.mkdir(parents=True)
    write_pool(run_dir, tok)
    LeadConfig.from_flat(run_name="run", output_dir=str(root), model_name_or_path=tiny_model_path,
               eval_batch_size=3).save(run_dir / "config.yaml")
    return run_dir


def paper_selection() -> dict:
    """The paper's selection keys (`preset: paper`, less its preparation key `arm_by`): hand-worked selector cases
    and stored fixtures are the paper's maths, whatever the defaults are."""
    from lead_ray.config import PRESETS, SelectionArgs

    return {k: v for k, v in PRESETS["paper"].items() if k in SelectionArgs.__dataclass_fields__}
