"""Which model is trained and how its weights are adapted (owned by `lead_ray.models`)."""

from __future__ import annotations

from dataclasses import dataclass

from lead_ray.config.fields import arg


@dataclass(frozen=True)
class ModelArgs:
    model_name_or_path: str = arg("builtin:smollm2", "a Hub id, a local folder, `builtin:smollm2` or `builtin:tiny`")
    trust_remote_code: bool = arg(False, "passed to transformers: run a model repository's own code; off unless you "
                                  "set it (the same weights give the same results either way)", operational=True)
    use_lora: bool = arg(True, "LoRA on all linear layers (the paper), or full fine-tuning")
    lora_rank: int = arg(64, "LoRA rank r", ge=1)
    lora_alpha: int = arg(16, "LoRA alpha (the update is scaled by alpha / r)", ge=1)
    lora_dropout: float = arg(0.1, "LoRA dropout", ge=0.0, lt=1.0)
    merge_adapter: bool = arg(False, "also save the base model with the adapter merged in (`merged/`)")
