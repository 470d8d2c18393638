"""Unsloth on a CUDA GPU: its FastLanguageModel loads and wraps the model, then the shared
SFTTrainer from hf_backend trains it.

Imported only after hardware.plan() chose this backend, i.e. a CUDA GPU is present and Unsloth
is installed (`pip install -e '.[gpu]'` on that machine): importing Unsloth without a GPU
raises, and its version pins (older transformers/trl) must never reach the CPU install.
Written against Unsloth's documented API; this machine has no GPU, so CI cannot run it.
"""

from __future__ import annotations

from pathlib import Path

from opensem.config import Config
from opensem.errors import OpenSEMError
from opensem.hardware import TrainingPlan
from opensem.train.hf_backend import ensure_generation_markers, half_dtype

# Unsloth's get_peft_model takes module names, not "all-linear": these are the linear layers of
# the Llama/Qwen/Mistral families it supports.
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def unsloth_dtype(precision: str):
    """The dtype Unsloth loads the model in. It trains in 16 bits; fp32 used to become float16
    silently (no AMP, no grad scaler), so it is refused instead."""
    if precision == "fp32":
        raise OpenSEMError("training.precision=fp32 is not supported by the Unsloth backend (it trains in bf16 or fp16); "
                           "use training.precision=bf16/fp16/auto, or training.backend=hf for fp32")
    return half_dtype(precision)


def prepare(model_dir: Path | str, cfg: Config, plan: TrainingPlan):
    import torch

    dtype = unsloth_dtype(plan.precision)  # refuses before any GPU work
    if not torch.cuda.is_available():
        raise OpenSEMError("training.backend=unsloth needs a CUDA GPU; use training.backend=auto or hf")
    if plan.vram_cap_gb:
        total = torch.cuda.get_device_properties(0).total_memory / 1024**3
        torch.cuda.set_per_process_memory_fraction(min(1.0, plan.vram_cap_gb / total), 0)
    from unsloth import FastLanguageModel  # noqa: E402 - only after the CUDA check, see above

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(model_dir),
        max_seq_length=cfg.pair_max_length,
        dtype=dtype,
        load_in_4bit=plan.load_in_4bit,
    )
    targets = ALL_LINEAR if cfg.lora.target_modules == "all-linear" else list(cfg.lora.target_modules)
    model = FastLanguageModel.get_peft_model(
        model,
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=targets,
        bias="none",
        use_gradient_checkpointing="unsloth" if plan.gradient_checkpointing else False,
        random_state=cfg.training.seed,
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ensure_generation_markers(tokenizer)  # as the hf backend does: the trainer is shared
    return model, tokenizer
