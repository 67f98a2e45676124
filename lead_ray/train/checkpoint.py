"""Round checkpoints: trainable weights as safetensors, the optimizer via weights_only, how many rounds of the
selection journal they go with, and the training metrics so far (metrics.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lead_ray.runtime.run_files import RoundMetrics

STOPPED = "stopped.json"  # a checkpoint that ends a run without a model: {"reason": ...}


def save_training_state(folder: Path, weights: dict[str, torch.Tensor], optimizer_state: dict[str, Any],
                        selection_rounds: int, step: int, nll_before: float, selection_seconds: float = 0.0,
                        history: list[RoundMetrics] | None = None) -> None:
    """`weights` and `optimizer_state`: full tensors, from `parallel.training_state`."""
    save_file(weights, str(folder / "trainable.safetensors"))
    torch.save(optimizer_state, folder / "optimizer.pt")
    (folder / "train_state.json").write_text(json.dumps({"step": step, "nll_before": nll_before,
                                                          "selection_seconds": selection_seconds,
                                                          "selection_rounds": selection_rounds}))
    write_history(folder, history or [])


def write_history(folder: Path, history: list[RoundMetrics]) -> None:
    """Each round's training metrics, one JSON line per round."""
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m.to_dict()) + "\n" for m in history))


def read_history(folder: Path) -> list[RoundMetrics]:
    path = folder / "metrics.jsonl"
    return [RoundMetrics.from_dict(json.loads(line)) for line in path.read_text().splitlines()] if path.exists() \
        else []


def load_training_state(folder: Path) -> dict[str, Any]:
    """A round checkpoint: the trainable weights and optimizer state (for `parallel.restore_training_state`), the
    optimizer step, the held-out NLL before training, the selection seconds, the metrics so far and the selection
    journal's round count (for the SelectionService)."""
    state = json.loads((folder / "train_state.json").read_text())
    return {"weights": load_file(str(folder / "trainable.safetensors")),
            "optimizer": torch.load(folder / "optimizer.pt", weights_only=True), "step": int(state["step"]), "nll_before": float(state["nll_before"]),
            "selection_seconds": float(state.get("selection_seconds", 0.0)), "history": read_history(folder),
            "selection_rounds": int(state["selection_rounds"])}


def save_final_model(folder: Path, model, tokenizer, merge: bool, weights: dict[str, torch.Tensor] | None = None,
                     base_path: str | None = None, trust_remote_code: bool = False) -> None:
    """Hugging Face folders: `model/` (the adapter for LoRA, else the full model) and `merged/` when asked.

    `weights`: a sharded (FSDP) model's trainable weights, gathered whole (`parallel.training_state`), saved in
    place of its own shards; its merged model is then rebuilt on the host from `base_path` and the saved adapter."""
    model.save_pretrained(folder / "model", safe_serialization=True,
                          **({"state_dict": weights} if weights is not None else {}))
    tokenizer.save_pretrained(folder / "model")
    if merge and hasattr(model, "merge_and_unload"):
        if weights is None:
            merged = model.merge_and_unload()
        else:
            from peft import PeftModel

            from lead_ray.models.load import load_model

            base = load_model(base_path, trust_remote_code=trust_remote_code)
            merged = PeftModel.from_pretrained(base, str(folder / "model"),
                                               trust_remote_code=trust_remote_code).merge_and_unload()
        merged.save_pretrained(folder / "merged", safe_serialization=True)
        tokenizer.save_pretrained(folder / "merged")
