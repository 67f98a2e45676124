"""Round checkpoints: trainable weights as safetensors, the optimizer via weights_only, how many rounds of the
selection journal they go with, and the training metrics so far (metrics.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

STOPPED = "stopped.json"  # a checkpoint that ends a run without a model: {"reason": ...}


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_training_state(folder: Path, model, optimizer, selection_rounds: int, step: int,
                        nll_before: float, selection_seconds: float = 0.0,
                        history: list[dict[str, Any]] | None = None) -> None:
    save_file(_trainable_state(model), str(folder / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    (folder / "train_state.json").write_text(json.dumps({"step": step, "nll_before": nll_before,
                                                          "selection_seconds": selection_seconds,
                                                          "selection_rounds": selection_rounds}))
    write_history(folder, history or [])


def write_history(folder: Path, history: list[dict[str, Any]]) -> None:
    """Each round's training metrics, one JSON line per round."""
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in history))


def read_history(folder: Path) -> list[dict[str, Any]]:
    path = folder / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def load_training_state(folder: Path, model, optimizer) -> dict[str, Any]:
    """Restore weights and optimizer. Returns the optimizer step, the held-out NLL before training, the selection
    seconds, the metrics so far and the selection journal's round count (for the SelectionService)."""
    weights = load_file(str(folder / "trainable.safetensors"))
    missing = set(_trainable_state(model)) - set(weights)
    if missing:
        raise RuntimeError(f"checkpoint {folder} lacks {len(missing)} trainable tensors, e.g. {sorted(missing)[0]}")
    model.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    state = json.loads((folder / "train_state.json").read_text())
    return {"step": int(state["step"]), "nll_before": float(state["nll_before"]),
            "selection_seconds": float(state.get("selection_seconds", 0.0)), "history": read_history(folder),
            "selection_rounds": int(state["selection_rounds"])}


def save_final_model(folder: Path, model, tokenizer, merge: bool) -> None:
    """Hugging Face folders: `model/` (the adapter for LoRA, else the full model) and `merged/` when asked."""
    model.save_pretrained(folder / "model", safe_serialization=True)
    tokenizer.save_pretrained(folder / "model")
    if merge and hasattr(model, "merge_and_unload"):
        merged = model.merge_and_unload()
        merged.save_pretrained(folder / "merged", safe_serialization=True)
        tokenizer.save_pretrained(folder / "merged")
