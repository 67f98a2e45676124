"""How much device memory one training worker needs, before any weight is loaded.

A run that does not fit should fail in one line at its start, not with a CUDA out-of-memory error minutes into
round one, and a user choosing between DDP and FSDP, LoRA and full fine-tuning, or gradient checkpointing should see
the trade in numbers. The estimate follows what lead-ray's loop holds at its peak (`train/loop.py`):

- weights: frozen ones in the load dtype (bf16 when training in bf16), trainable ones always in fp32;
- fp32 gradients and AdamW's two fp32 moments for every trainable weight (sharded over the ranks under FSDP; DDP
  adds its gradient buckets, one more fp32 copy, when there are 2 ranks or more);
- the ΔL′ tracker's start values and gradient sum (8 bytes per tracked weight, on rank 0 under DDP);
- activations saved for the backward pass, per token and decoder layer;
- the logits and their gradient.

The activation coefficients were counted with saved-tensor hooks on transformers' Llama decoder layer (the layout of
Llama, Qwen and Mistral; `tests/test_memory.py` checks them against a real model's peak memory). Attention is sdpa
or flash-attention (nothing quadratic in the sequence is kept), or eager (the attention probabilities are).
"""

from __future__ import annotations

import dataclasses
from typing import Any

GIB = 2**30
LORA_LINEARS = 7  # q, k, v, o, gate, up, down: peft's "all-linear" on a Llama decoder layer (never lm_head)


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """The few numbers of a decoder-only transformer that its memory depends on."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    tied_embeddings: bool = True

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """From a transformers config (or its dict)."""
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        heads = get("num_attention_heads")
        return cls(vocab_size=get("vocab_size"), hidden_size=get("hidden_size"),
                   intermediate_size=get("intermediate_size"), num_layers=get("num_hidden_layers"), num_heads=heads,
                   num_kv_heads=get("num_key_value_heads") or heads,
                   tied_embeddings=bool(get("tie_word_embeddings", True)))

    @property
    def kv_dim(self) -> int:
        return self.hidden_size // self.num_heads * self.num_kv_heads

    @property
    def layer_linear_params(self) -> int:
        h, i = self.hidden_size, self.intermediate_size
        return 2 * h * h + 2 * h * self.kv_dim + 3 * h * i

    @property
    def num_params(self) -> int:
        h = self.hidden_size
        embeddings = self.vocab_size * h * (1 if self.tied_embeddings else 2)
        return embeddings + self.num_layers * (self.layer_linear_params + 2 * h) + h  # + the RMSNorm weights

    def lora_params(self, rank: int) -> int:
        h, i, kv = self.hidden_size, self.intermediate_size, self.kv_dim
        per_layer = rank * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 3)  # r·(in + out) for each adapted linear
        return self.num_layers * per_layer


@dataclasses.dataclass(frozen=True)
class TrainingSetup:
    """The config keys the memory depends on (lead-ray's names)."""

    per_device_train_batch_size: int
    max_length: int
    use_lora: bool = True
    lora_rank: int = 64
    lora_dropout: float = 0.05
    bf16: bool = True
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None
    parallel_strategy: str = "ddp"
    num_workers: int = 1
    loss_change_params: str = "auto"

    @classmethod
    def from_config(cls, cfg: Any, bf16: bool) -> TrainingSetup:
        return cls(**{f.name: cfg.get(f.name) for f in dataclasses.fields(cls) if f.name != "bf16"}, bf16=bf16)


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one worker holds, by what holds them, and their peak: the weights, optimizer state and ΔL′ tracker are
    held throughout; the activations and logits of a micro-batch are freed as the backward pass fills in the
    gradients (and, with gradient checkpointing, recomputes one layer at a time), so the peak takes the larger."""

    weights: int
    optimizer: int
    direction: int  # the ΔL′ tracker
    buckets: int  # DDP's gradient buckets (2 ranks or more)
    gradients: int
    activations: int  # saved for backward, and the bf16 weight copies autocast keeps for it
    logits: int
    recompute: int = 0  # one layer's activations, recomputed in the backward pass (gradient checkpointing)

    @property
    def total(self) -> int:
        held = self.weights + self.optimizer + self.direction + self.buckets
        return held + max(self.activations + self.logits, self.activations + self.gradients + self.recompute)

    def describe(self) -> str:
        parts = ", ".join(f"{f.name} {getattr(self, f.name) / GIB:.2f}" for f in dataclasses.fields(self)
                          if getattr(self, f.name))
        return f"{self.total / GIB:.2f} GiB per worker at its peak ({parts})"


def estimate_training_memory(shape: ModelShape, setup: TrainingSetup) -> MemoryEstimate:
    """The peak memory of one training worker under `setup` (see the module's docstring for what it counts)."""
    s = setup
    h, i, kv, layers = shape.hidden_size, shape.intermediate_size, shape.kv_dim, shape.num_layers
    world = max(1, s.num_workers)
    fsdp = s.parallel_strategy == "fsdp" and world > 1
    shard = world if fsdp else 1
    trainable = shape.lora_params(s.lora_rank) if s.use_lora else shape.num_params
    frozen = shape.num_params if s.use_lora else 0
    weights = (frozen * (2 if s.bf16 else 4) + trainable * 4) // shard
    if fsdp:  # the gathered (unsharded) weights of the layer in use and the next one, and of the embeddings
        weights += (2 * (shape.layer_linear_params + 2 * h) + shape.vocab_size * h) * (2 if s.bf16 else 4)
    tracked = trainable if s.use_lora or s.loss_change_params == "all" else \
        shape.layer_linear_params + 2 * h  # last_block: the last decoder layer
    tokens = s.per_device_train_batch_size * s.max_length
    act = 2 if s.bf16 else 4  # autocast's activation dtype
    if s.use_lora:  # frozen linears save their input for the adapter only; the adapter's r-wide middle in fp32
        per_token = 24 * h + 4 * act * i + 2 * act * kv + LORA_LINEARS * s.lora_rank * act
        if s.lora_dropout > 0:  # each dropout's output and mask
            per_token += (24 if s.bf16 else 40) * h + 4 * i
    else:
        per_token = (30 if s.bf16 else 32) * h + 4 * act * i + 2 * act * kv
    if s.attn_implementation == "eager":  # softmax probabilities in fp32 and in the activation dtype
        per_token += shape.num_heads * s.max_length * (4 + act)
    recompute = 0
    if s.gradient_checkpointing:  # each layer's input; one layer at a time is recomputed in the backward pass
        residual = act if s.use_lora else 4  # the residual stream keeps the (frozen) weights' dtype
        activations, recompute = tokens * layers * residual * h, tokens * per_token
    else:
        activations = tokens * layers * per_token
    if s.bf16 and not s.use_lora:  # autocast's bf16 copies of the fp32 weights, saved for the backward pass
        activations += shape.num_layers * shape.layer_linear_params * 2 // shard
    # the logits and their gradient in the activation dtype; the fp32 log-softmax, its gradient (and in bf16 the
    # fp32 copy it is taken of) for one chunk of models/nll.py's at a time
    from lead_ray.models.nll import LOGITS_CHUNK_ELEMENTS

    elems = tokens * shape.vocab_size
    logits = 2 * act * elems + (8 if act == 4 else 12) * min(elems, LOGITS_CHUNK_ELEMENTS)
    return MemoryEstimate(weights=weights, optimizer=trainable * 8 // shard, direction=tracked * 8 // shard,
                          buckets=trainable * 4 if s.parallel_strategy == "ddp" and world > 1 else 0,
                          gradients=trainable * 4 // shard, activations=activations, logits=logits,
                          recompute=recompute)


# Public shapes (the models' config.json) for the README's table.
REFERENCE_SHAPES = {
    "Llama-3.2-1B": ModelShape(128256, 2048, 8192, 16, 32, 8, True),
    "Llama-3.1-8B": ModelShape(128256, 4096, 14336, 32, 32, 8, False),
    "Llama-3.1-70B": ModelShape(128256, 8192, 28672, 80, 64, 8, False),
}


def memory_table(batch_size: int = 4, max_length: int = 2048, lora_rank: int = 64, num_workers: int = 8) -> str:
    """The README's GPU table: GiB per worker for each reference model and strategy."""
    strategies = [
        ("LoRA, DDP", dict(use_lora=True)),
        ("LoRA, DDP, gradient checkpointing", dict(use_lora=True, gradient_checkpointing=True)),
        (f"LoRA, FSDP × {num_workers}, gradient checkpointing",
         dict(use_lora=True, parallel_strategy="fsdp", gradient_checkpointing=True)),
        ("full, DDP", dict(use_lora=False)),
        (f"full, FSDP × {num_workers}", dict(use_lora=False, parallel_strategy="fsdp")),
        (f"full, FSDP × {num_workers}, gradient checkpointing",
         dict(use_lora=False, parallel_strategy="fsdp", gradient_checkpointing=True)),
    ]
    lines = ["| strategy | " + " | ".join(REFERENCE_SHAPES) + " |", "| --- |" + " ---: |" * len(REFERENCE_SHAPES)]
    for name, options in strategies:
        setup = TrainingSetup(per_device_train_batch_size=batch_size, max_length=max_length, lora_rank=lora_rank,
                              num_workers=num_workers, **options)
        cells = [f"{estimate_training_memory(shape, setup).total / GIB:.0f}" for shape in REFERENCE_SHAPES.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def training_memory(model_path: str, cfg: Any, bf16: bool, trust_remote_code: bool = False) -> MemoryEstimate | None:
    """The estimate for `cfg`'s run of the model in `model_path`; None for a model whose config lacks a decoder's
    shape (the estimate then says nothing rather than something wrong)."""
    from transformers import AutoConfig

    try:
        shape = ModelShape.from_config(AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code))
        return estimate_training_memory(shape, TrainingSetup.from_config(cfg, bf16))
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def does_not_fit(estimate: MemoryEstimate, device_bytes: int, device_name: str = "the device") -> str | None:
    """The one line that stops a run whose estimate exceeds the device's memory, or None if it fits."""
    if estimate.total <= device_bytes:
        return None
    return (f"a worker needs about {estimate.describe()}, more than the {device_bytes / GIB:.3g} GiB of "
            f"{device_name}; use gradient_checkpointing=true, a smaller per_device_train_batch_size or max_length, "
            "use_lora=true, or parallel_strategy=fsdp over more workers")
