"""How the selected rows are trained (owned by `lead_ray.train`): Ray Train's scaling, the optimizer, memory,
evaluation and checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

from lead_ray.config.fields import arg

ATTENTION = ("sdpa", "flash_attention_2", "eager")  # attn_implementation (transformers' names)


@dataclass(frozen=True)
class TrainingArgs:
    num_workers: int = arg(1, "Ray Train workers (`ScalingConfig`)", ge=1, le=100_000)
    use_gpu: bool = arg(False, "one GPU per worker (and per scoring or embedding actor)")
    parallel_strategy: str = arg("ddp", "with `num_workers` > 1: `ddp` keeps a full replica on every worker; `fsdp` "
                                 "shards weights, gradients and AdamW state over them (FSDP2 `fully_shard` per decoder "
                                 "layer); checkpoints hold full tensors either way", choices=("ddp", "fsdp"))
    learning_rate: float = arg(2e-5, "AdamW's learning rate", gt=0.0)
    weight_decay: float = arg(0.0, "AdamW's weight decay", ge=0.0)
    lr_decay: float = arg(0.995, "lr · lr_decay^(step // lr_decay_every)", gt=0.0, le=1.0)
    lr_decay_every: int = arg(8, "optimizer steps per decay", ge=1)
    per_device_train_batch_size: int = arg(4, "rows per worker per micro-step; an optimizer step takes per_device × "
                                           "accumulation × num_workers rows, and its loss is the mean NLL over all of "
                                           "their target tokens", ge=1, le=1_000_000)
    gradient_accumulation_steps: int = arg(1, "micro-steps per optimizer step", ge=1, le=1_000_000)
    max_grad_norm: float = arg(1.0, "gradient clipping (0: none)", ge=0.0)
    bf16: bool | None = arg(None, "frozen weights in bf16, trained ones in float32, bf16 autocast (null: on with "
                            "GPUs)")
    gradient_checkpointing: bool = arg(False, "recompute each layer's activations in the backward pass (less memory)")
    attn_implementation: str | None = arg(None, "transformers' attention: `sdpa`, `flash_attention_2` (needs "
                                          "flash-attn) or `eager` (null: transformers' default)", choices=ATTENTION)
    loss_change_params: str = arg("auto", "the parameters ḡ and u (ΔL′) are measured over: `all` trainable ones, "
                                  "`last_block`, or `auto` (all with LoRA, the last block for full fine-tuning)",
                                  choices=("auto", "all", "last_block"))
    loss_change_sketch_dim: int = arg(65536, "ḡ and u longer than this travel to the selection actor as a "
                                      "CountSketch of this many entries; 0 sends them exactly", ge=0)
    memory_limit_gb: float | None = arg(None, "a worker's memory for the start-of-run estimate (null: its GPU's; no "
                                        "check on CPU): a run whose estimate exceeds it stops in one line",
                                        gt=0.0, lt=1e6, operational=True)
    eval_batch_size: int = arg(8, "evaluation batch", ge=1, le=1_000_000, operational=True)
    eval_every_round: bool = arg(False, "held-out NLL after every round (Tune's ASHA needs it)", operational=True)
    eval_max_samples: int | None = arg(1000, "at most this many held-out rows are evaluated", ge=1)
    max_failures: int = arg(3, "worker-group restarts, each from the last round checkpoint (-1: unlimited)", ge=-1,
                            operational=True)
    save_every_rounds: int = arg(1, "a round checkpoint every this many rounds; a restart redoes the rounds since, "
                                 "identically", ge=1, operational=True)
