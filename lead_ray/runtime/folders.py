"""The folders a run owns: claimed with a marker before anything is written, outputs published all at once."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lead_ray.config import ConfigError

RUN_MARKER = ".lead-ray"  # written into every folder lead-ray creates for a run; it deletes only inside such folders


def claim_folder(path: Path) -> None:
    """Make `path` lead-ray's (create it with its marker), or fail with one line if it cannot be written or holds
    files lead-ray did not make. Called before Ray starts, so nothing is written on a bad path."""
    if (path / RUN_MARKER).is_file():
        return
    if path.exists() and not path.is_dir():
        raise ConfigError(f"config key 'output_dir': {path} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"config key 'output_dir': {path} already holds files that lead-ray did not make (no "
                          f"{RUN_MARKER} marker); choose another run_name or output_dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / RUN_MARKER).write_text("made by lead-ray: it may replace what is inside\n")
    except OSError as e:
        raise ConfigError(f"config key 'output_dir': cannot write {path} ({e.strerror or e})") from None



# what a finished run publishes; eval.json and lm_eval.json (from `lead-ray eval`) describe an earlier model, so a
# new run removes them
OUTPUTS = ("config.yaml", "quarantine.parquet", "model", "merged", "selections.parquet", "metrics.jsonl",
           "bandit.jsonl", "report", "eval.json", "lm_eval.json", "summary.json")


def publish_outputs(staging: Path, run_dir: Path) -> None:
    """Replace the run's outputs with those in `staging`: each one by an atomic rename, `summary.json` (what marks
    a finished run) last; outputs of an earlier run that this one did not make (e.g. `merged/`) are removed
    first, so old and new outputs never sit side by side."""
    new = [name for name in OUTPUTS if (staging / name).exists()]
    for name in OUTPUTS:
        old = run_dir / name
        if name not in new and (old.exists() or old.is_symlink()):
            _remove(old)
    for name in new:
        target = run_dir / name
        if target.is_dir() and not target.is_symlink():
            aside = run_dir / f".{name}.old"
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(target, aside)
            os.replace(staging / name, target)
            shutil.rmtree(aside)
        else:
            if target.is_symlink():
                target.unlink()  # a link someone put where an output goes: replaced, never followed
            os.replace(staging / name, target)
    staging.rmdir()


def _remove(path: Path) -> None:
    """A file, a folder, or a link (the link itself, never what it points to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


FINISHED = "finished.json"  # in <run>/ray/: these checkpoints belong to a run that published its outputs
