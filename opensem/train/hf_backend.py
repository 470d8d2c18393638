"""Training with transformers + PEFT + TRL's SFTTrainer: CPUs, Apple MPS, and GPUs without Unsloth.

The Unsloth backend (unsloth_backend.py) only swaps how the model is loaded and wrapped; the
trainer built here is shared by both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opensem.config import Config
from opensem.distributed import world
from opensem.errors import OpenSEMError
from opensem.hardware import TrainingPlan


def half_dtype(precision: str):
    """The 16-bit dtype a GPU plan's precision names: bf16 -> bfloat16, anything else float16."""
    import torch

    return torch.bfloat16 if precision == "bf16" else torch.float16


def load_model(model_dir: Path | str, plan: TrainingPlan):
    """The base model in the plan's precision (4-bit through bitsandbytes for QLoRA)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {}
    if plan.load_in_4bit:
        from transformers import BitsAndBytesConfig

        compute = half_dtype(plan.precision)
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute
        )
        kwargs["device_map"] = {"": world().local_rank}  # each data-parallel process on its own GPU
    elif plan.device == "cuda":
        kwargs["dtype"] = half_dtype(plan.precision)
    else:
        # CPU/MPS keep fp32 weights; bf16 (when chosen) is applied as autocast by the trainer.
        kwargs["dtype"] = torch.float32
    # sdpa handles the position_ids of padding-free batches on CPU and GPU alike
    return AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa", **kwargs)


def check_target_modules(model, target_modules) -> None:
    """Refuse a target module name the model does not have, listing the ones it does."""
    if target_modules == "all-linear":
        return
    import torch

    linear = {name.split(".")[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    linear.discard("lm_head")
    missing = [t for t in target_modules if t not in linear]
    if missing:
        raise OpenSEMError(
            f"lora.target_modules {missing} not found in {model.config.model_type}; available: {', '.join(sorted(linear))} (or all-linear)"
        )


def lora_config(cfg: Config):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def checkpointing_field(config_class) -> str:
    """transformers 5.23 renamed `gradient_checkpointing` to `activation_checkpointing` (the old
    name a deprecated alias); 5.17, the newest Unsloth accepts, knows only the old one and raises
    TypeError on the new. Use whichever this install's config class has."""
    fields = getattr(config_class, "__dataclass_fields__", {})
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


def sft_config(cfg: Config, plan: TrainingPlan, output_dir: Path, has_eval: bool, cpt: bool = False,
               cpt_epochs: float | None = None):
    """Every training setting comes from the config; the plan decides precision and memory.
    cpt=True: the continued pre-training phase, a loss on every token of the documents for
    training.cpt_epochs (or max_steps), no held-out evaluation and no checkpoints (it is short;
    a preempted run repeats it); cpt_epochs, when given, replaces training.cpt_epochs (passes over
    a dataset that holds several shuffled copies of the corpus)."""
    from trl import SFTConfig

    t = cfg.training
    batch = (t.cpt_batch_size or t.batch_size) if cpt else t.batch_size
    per_pass = examples_per_pass(batch, t.micro_batch_size)  # micro-batches accumulate to the batch
    padding_free = t.padding_free and not t.packing
    checkpointing = {checkpointing_field(SFTConfig): plan.gradient_checkpointing}  # set explicitly: TRL's own default is on
    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=(t.cpt_epochs if cpt_epochs is None else cpt_epochs) if cpt else t.epochs,
        max_steps=t.max_steps,  # caps each phase, so a quick run (max_steps=N) stays quick
        per_device_train_batch_size=per_pass,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps * (batch // per_pass),
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=t.weight_decay,
        seed=t.seed,
        bf16=plan.precision == "bf16",  # TRL would otherwise default to bf16, emulated (slow) on most CPUs
        fp16=plan.precision == "fp16",
        use_cpu=plan.device == "cpu",
        **checkpointing,
        # Padding-free batches carry no padding, so there is nothing to truncate against: long
        # examples are dropped beforehand (see stage.py) instead.
        max_length=None if padding_free else cfg.pair_max_length,
        packing=t.packing,
        padding_free=padding_free,
        train_sampling_strategy="group_by_length" if t.group_by_length and not padding_free else "random",
        assistant_only_loss=not cpt,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,  # a NaN loss is logged as NaN, and stops training (FiniteTrainingCallback)
        save_strategy="no" if cpt else "steps",
        save_steps=t.checkpoint_steps,
        save_total_limit=2,
        eval_strategy="epoch" if has_eval else "no",
        report_to=[],  # opensem's own callback logs to MLflow (and W&B) through the stage's run
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        disable_tqdm=False,
        ddp_find_unused_parameters=False,  # torchrun: every LoRA weight gets a gradient each step
        **fsdp_settings(t),
    )


def examples_per_pass(batch: int, micro_batch_size: int | None) -> int:
    """Examples per forward pass for a batch under training.micro_batch_size: the largest divisor
    of the batch not above it, so that equal passes add up to exactly the batch."""
    if not micro_batch_size or micro_batch_size >= batch:
        return batch
    return max(d for d in range(1, micro_batch_size + 1) if batch % d == 0)


def fsdp_settings(training) -> dict:
    """The Trainer's FSDP arguments for training.fsdp under torchrun (none otherwise): FSDP2,
    wrapped per decoder layer (transformers reads the model's own no-split modules), the full
    state dict gathered on rank 0 when the adapter is saved."""
    if not (training.fsdp and world().distributed):
        return {}
    return {"fsdp": True, "fsdp_config": {"version": 2, "state_dict_type": "FULL_STATE_DICT"}}


def schedule_factor(kind: str, warmup: int, total: int):
    """The learning-rate multiplier at each optimizer step (0-based) for training.lr_scheduler.

    Transformers' schedules start their warmup at a rate of 0, so the first step of every run
    with warmup changes nothing, and a run of one step (max_steps=1) trains nothing at all. Here
    warmup step s runs at (s + 1) / (warmup + 1) of the rate, and the decay ends one step past the
    last one, so each of a run's N steps trains. Written by hand: no library schedule has that
    offset."""
    import math

    def factor(step: int) -> float:
        if kind == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant_with_warmup":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def every_step_trains(trainer_class):
    """trainer_class with OpenSEM's learning-rate schedule (schedule_factor)."""
    import torch

    class EveryStepTrains(trainer_class):
        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                kind = getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type)
                factor = schedule_factor(str(kind), self.args.get_warmup_steps(num_training_steps), num_training_steps)
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
                self._created_lr_scheduler = True
            return self.lr_scheduler

    return EveryStepTrains


def assistant_only_trainer_class():
    """SFTTrainer whose loss applies the LM head only where there is a label.

    With assistant-only loss most tokens (system prompt, question, template) carry no label, yet
    the stock loss projects every position onto the whole vocabulary (49k rows for SmolLM2) and
    takes its log-softmax. Here the decoder runs as usual and only the labelled positions go
    through the head: same loss (a test checks it against TRL's), a third less work per step on
    the 2-core CPU this was measured on. Written by hand because no library offers a "head only
    where labelled" switch for training.
    """
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer

    class AssistantOnlyLossTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if isinstance(model, torch.nn.DataParallel):  # several visible GPUs: DataParallel must split
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)  # the batch itself
            labels = inputs["labels"]
            targets = labels[:, 1:]  # position p's logits predict token p + 1
            keep = targets != -100
            # The positions labelled in any row (in a padding-free batch, its one row's): the model
            # runs its decoder as usual and its head on those alone. Called through `model` itself,
            # so a DistributedDataParallel wrapper (torchrun) sees the forward and syncs gradients.
            positions = keep.any(dim=0).nonzero().squeeze(1)
            decoder_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
            logits = model(**decoder_inputs, use_cache=False, logits_to_keep=positions).logits
            chosen = targets[:, positions]
            mask = chosen != -100
            loss = F.cross_entropy(logits[mask].float(), chosen[mask], reduction="sum")
            count = keep.sum() if num_items_in_batch is None else num_items_in_batch
            loss = loss / torch.as_tensor(count, device=loss.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            return (loss, {"loss": loss}) if return_outputs else loss

    return AssistantOnlyLossTrainer


def build_trainer(model, tokenizer, train_rows, eval_rows, cfg: Config, plan: TrainingPlan, output_dir: Path, callbacks,
                  apply_lora: bool = True, stock_loss: bool = False, cpt: bool = False, cpt_epochs: float | None = None):
    """An SFTTrainer for the question/answer pairs, or (cpt=True) for token windows of the
    documents ({"input_ids": [...]}, see data.corpus_windows). apply_lora=False when the model
    already carries its adapter (Unsloth's, or the one the cpt phase trained)."""
    from datasets import Dataset
    from trl import SFTTrainer

    # Unsloth brings its own fused loss; the head-only-where-labelled loss is for the hf backend.
    trainer_class = every_step_trains(SFTTrainer if stock_loss else assistant_only_trainer_class())
    trainer = trainer_class(
        model=model,
        args=sft_config(cfg, plan, output_dir, bool(eval_rows), cpt=cpt, cpt_epochs=cpt_epochs),
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=lora_config(cfg) if apply_lora else None,
        callbacks=callbacks,
    )
    if not stock_loss and should_compile(cfg, plan, optimizer_steps(cfg, len(train_rows), cpt, cpt_epochs)):
        compile_mlps(trainer.model)
    return trainer


COMPILE_MIN_STEPS = 10  # measured on 2 cores: the ~20 s compile is paid back after about 8 open-book steps


def optimizer_steps(cfg: Config, rows: int, cpt: bool = False, cpt_epochs: float | None = None) -> int:
    """How many optimizer steps a phase over `rows` examples will take."""
    import math

    t = cfg.training
    if t.max_steps > 0:
        return t.max_steps
    batch = (t.cpt_batch_size or t.batch_size) if cpt else t.batch_size
    epochs = (t.cpt_epochs if cpt_epochs is None else cpt_epochs) if cpt else t.epochs
    return math.ceil(math.ceil(rows / batch) / t.gradient_accumulation_steps * epochs)


def should_compile(cfg: Config, plan: TrainingPlan, steps: int) -> bool:
    if cfg.training.compile is not None:
        return cfg.training.compile
    return plan.device == "cpu" and steps >= COMPILE_MIN_STEPS


def compile_mlps(model) -> None:
    """torch.compile every decoder layer's MLP in place (nn.Module.compile keeps parameter names,
    so the saved adapter is unchanged). dynamic=True: padding-free rows change length every step,
    and one graph serves them all. Only the MLP: compiling whole layers (attention included) was
    as fast and took four times longer to compile. Where it cannot compile (no C++ compiler for
    inductor), dynamo's suppress_errors runs the MLP as before, with a warning."""
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for layer in getattr(getattr(base, "model", None), "layers", []):
        if hasattr(layer, "mlp") and getattr(layer.mlp, "_compiled_call_impl", None) is None:
            layer.mlp.compile(dynamic=True)


def ensure_generation_markers(tokenizer) -> None:
    """Assistant-only loss needs a chat template with {% generation %} markers (TRL finds the
    answer tokens by them). Base models with a ChatML template (SmolLM2, Qwen2.5) get ours; any
    other template without markers is refused before training starts."""
    template = tokenizer.chat_template or ""
    if "{% generation %}" in template or "generation -%}" in template:
        return
    if "<|im_start|>" not in template:
        raise OpenSEMError(
            "the base model's chat template has no {% generation %} markers, so the prompt cannot be masked; "
            "give it a template with them (see opensem/templates/chatml_generation.jinja)"
        )
    from opensem.models import CHAT_TEMPLATE

    tokenizer.chat_template = CHAT_TEMPLATE.read_text(encoding="utf-8")


def prepare(model_dir: Path | str, cfg: Config, plan: TrainingPlan):
    """(model, tokenizer) ready for build_trainer: base model, checked targets, VRAM cap applied."""
    from transformers import AutoTokenizer

    if plan.device == "cuda" and plan.vram_cap_gb:
        import torch

        gpu = world().local_rank
        total = torch.cuda.get_device_properties(gpu).total_memory / 1024**3
        torch.cuda.set_per_process_memory_fraction(min(1.0, plan.vram_cap_gb / total), gpu)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ensure_generation_markers(tokenizer)
    model = load_model(model_dir, plan)
    if plan.device == "cpu":
        # Padding-free rows attended per example, not through one block mask over the whole row:
        # measured 1.6x faster steps on the demo's open-book rows, same loss (packed_attention.py).
        # GPUs keep stock sdpa: not measured there.
        from opensem.train.packed_attention import use_per_example_attention

        use_per_example_attention(model)
    check_target_modules(model, cfg.lora.target_modules)
    return model, tokenizer
