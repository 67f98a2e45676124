"""The model a run saved, loaded for evaluation (HF, vLLM and lm-eval paths alike)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lead_ray.models.load import ModelError, load_model, load_tokenizer, resolve_model_path

if TYPE_CHECKING:
    import torch

    from lead_ray.config import LeadConfig


class EvalError(ValueError):
    """A run folder or model that cannot be evaluated; the message says why."""


def load_eval_model(model_dir: Path, cfg: LeadConfig, device: torch.device) -> tuple[Any, Any]:
    """(model, tokenizer) of a saved folder: a LoRA adapter is applied to the run's base model, a full model (or a
    `merged/` folder) is loaded directly. fp32 weights, as training keeps them; the tokenizer saved with the model
    wins, the base model's is the fallback."""

    model_dir = Path(model_dir)
    base_path = None
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base_path = resolve_model_path(cfg.model.model_name_or_path, cfg.cache_path)
        base = load_model(base_path, trust_remote_code=cfg.model.trust_remote_code)
        model = PeftModel.from_pretrained(base, str(model_dir), trust_remote_code=cfg.model.trust_remote_code)
    elif (model_dir / "config.json").is_file():
        model = load_model(str(model_dir), trust_remote_code=cfg.model.trust_remote_code)
    else:
        raise ModelError(f"model folder {model_dir} holds neither a LoRA adapter (adapter_config.json) nor a "
                         f"Hugging Face model (config.json)")
    has_tokenizer = any((model_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = load_tokenizer(str(model_dir) if has_tokenizer or base_path is None else base_path,
                               cfg.model.trust_remote_code)
    return model.to(device).eval(), tokenizer
