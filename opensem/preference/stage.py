"""`opensem prefer`: the SFT adapter -> models/<sem>/adapters/<sft>-pref/, trained on preferences.

    check the forge's preference rows -> the SFT adapter (newest, or --adapter) -> base + adapter,
    a frozen copy of it as the reference -> [on-policy rejections] -> TRL's DPOTrainer -> the
    adapter, its metadata, a servable MLflow model

Supervised reading practice shows the one right quote; preference training shows a wrong choice
beside it and moves the adapter toward the chosen one, no further from the SFT adapter than
`preference.beta` allows. The result is an adapter like any other: evaluate, promote and serve
take it as they take train's. A run name is a resumable unit, as in train: re-running the same
name continues from its newest checkpoint in the same MLflow run.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from opensem.config import Config
from opensem.errors import OpenSEMError
from opensem.io import atomic_write_json, read_jsonl
from opensem.tags import TAG_MODEL_URI, TAG_RUN_NAME
from opensem.workspace import Sem

console = Console(stderr=True)

TRAIN_ROWS, TEST_ROWS = "preference_train.jsonl", "preference_test.jsonl"


def run(sem: Sem, cfg: Config, adapter: str | None = None) -> dict:
    """Train the preference adapter on top of the SFT `adapter` (default: the newest finished)."""
    from opensem import tracking
    from opensem.train.stage import _read_state, _write_state

    sft, rows, eval_rows = _prepare(sem, cfg, adapter)
    name = cfg.preference.run_name or f"{sft.name}-pref"
    out_dir = sem.adapters_dir / name
    state = _read_state(out_dir)
    if state.get("status") == "finished":
        raise OpenSEMError(f"preference run {name!r} already finished ({out_dir}); pick a new name: --set preference.run_name=...")
    console.print(f"[bold]prefer[/bold] {sem.name} / {name}: {len(rows)} preference rows over SFT adapter {sft.name}, "
                  f"{len(eval_rows)} held out; {cfg.preference.loss} loss, beta {cfg.preference.beta:g}")
    with tracking.stage_run(sem, "preference", cfg, run_name=f"{sem.name} · preference · {name}",
                            run_id=state.get("mlflow_run_id"), tags={TAG_RUN_NAME: name}) as tracked:
        _write_state(out_dir, {"mlflow_run_id": tracked.run_id, "status": "running"})
        tracked.log_params({"preference.sft_adapter": sft.name})
        if not state:
            tracking.log_jsonl_dataset(sem.processed_dir / TRAIN_ROWS, f"{sem.name}-preference", "training")
        trainer, preempt, seconds = _fit(sem, cfg, sft, rows, eval_rows, out_dir, tracked)
        if preempt.requested:
            tracked.end_status = "KILLED"
            console.print(f"[yellow]SIGTERM: stopped at step {trainer.state.global_step}, checkpoint saved.[/yellow] "
                          f"Run the same command (preference.run_name={name}) to resume.")
            return {"run_name": name, "status": "preempted", "step": trainer.state.global_step}
        metadata = _save_adapter(sem, cfg, sft, name, out_dir, trainer, tracked, seconds)
        model_uri = _log_servable_model(cfg, out_dir, tracked)
        _write_state(out_dir, {"mlflow_run_id": tracked.run_id, "status": "finished", "model_uri": model_uri})
    console.print(f"[green]preference-trained[/green] {name}: {metadata['global_step']} steps, reward margin "
                  f"{metadata['reward_margin']:+.3f}, chosen over rejected on {metadata['reward_accuracy']:.0%} of the rows -> {out_dir}",
                  highlight=False)
    return metadata | {"status": "finished", "adapter_dir": str(out_dir), "model_uri": model_uri}


def _prepare(sem: Sem, cfg: Config, adapter: str | None) -> tuple[Path, list[dict], list[dict]]:
    """The SFT adapter folder and the preference rows, checked before any model loads."""
    from opensem.adapters import check_adapter, resolve_adapter
    from opensem.train.data import check_forge_output

    check_forge_output(sem.processed_dir, sem.name)
    path = sem.processed_dir / TRAIN_ROWS
    if not path.is_file():
        raise OpenSEMError(f"no preference rows in {sem.processed_dir}: forge them with `opensem forge --sem {sem.name}` "
                           "(open book, forge.reading.quote_sentences and rejected_per_pair above 0)")
    rows = list(read_jsonl(path))
    if not rows:
        raise OpenSEMError(f"{path} holds no preference rows: the forge found no quoted answer with another sentence "
                           "to reject (set forge.reading.answer_in_excerpts, quote_sentences and rejected_per_pair, then forge again)")
    eval_path = sem.processed_dir / TEST_ROWS
    eval_rows = list(read_jsonl(eval_path)) if eval_path.is_file() else []
    sft = resolve_adapter(sem, adapter)
    trained = json.loads((sft / "training_metadata.json").read_text(encoding="utf-8")) if (sft / "training_metadata.json").is_file() else {}
    if trained.get("preference"):
        raise OpenSEMError(f"adapter {sft.name!r} is already preference-trained; pass its SFT adapter: --adapter {trained['sft_adapter']}")
    check_adapter(sft, cfg)
    return sft, rows, eval_rows


def _load(sem: Sem, cfg: Config, sft: Path, plan):
    """The base model with the SFT adapter, trainable (TRL adds a frozen copy as the reference)."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from opensem.models import resolve_base_model
    from opensem.train.hf_backend import load_model

    base_dir = resolve_base_model(cfg.model.base, sem.base_models_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(sft))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    base = load_model(base_dir, plan)
    if plan.device == "cpu":
        # rows padded on the right: sdpa's causal kernel without the padded mask, the same logits
        # at every real token; measured in docs/measurements/reading.md (candidate P3)
        from opensem.train.packed_attention import use_per_example_attention

        use_per_example_attention(base)
    model = PeftModel.from_pretrained(base, str(sft), is_trainable=True)
    return model, tokenizer


def _fit(sem: Sem, cfg: Config, sft: Path, rows: list[dict], eval_rows: list[dict], out_dir: Path, tracked):
    from datasets import Dataset
    from trl import DPOTrainer

    from opensem import hardware
    from opensem.preference.on_policy import on_policy_rows
    from opensem.train.callbacks import FiniteTrainingCallback, PreemptionCallback, TrackingCallback
    from opensem.train.hf_backend import every_step_trains
    from opensem.train.stage import _last_checkpoint

    plan = hardware.plan(hardware.detect(), cfg.training)
    if plan.backend == "unsloth":  # Unsloth's DPO patches are not used here: the HF backend trains it
        console.print("  hardware: the preference stage trains with transformers + PEFT + TRL (not Unsloth)")
    model, tokenizer = _load(sem, cfg, sft, plan)
    if cfg.preference.on_policy:
        extra = on_policy_rows(sem, cfg, model, tokenizer, cfg.preference.on_policy)
        console.print(f"  on-policy: {len(extra)} of {cfg.preference.on_policy} answers of the SFT adapter missed the "
                      "training answer and are rejected beside the chosen quote")
        rows = rows + extra
        tracked.log_metrics({"on_policy_rejections": len(extra)})
    checkpoints = out_dir / "checkpoints"
    resume = _last_checkpoint(checkpoints)
    if resume:
        console.print(f"  resuming from {resume}")
    metrics, preempt = TrackingCallback(tracked, plan.device), PreemptionCallback()
    trainer = every_step_trains(DPOTrainer)(
        model=model,
        args=dpo_config(cfg, plan, checkpoints, bool(eval_rows)),
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        callbacks=[metrics, preempt, FiniteTrainingCallback(cfg.preference.learning_rate, "preference.learning_rate")],
    )
    started = time.time()
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    finally:
        preempt.restore()
    return trainer, preempt, time.time() - started


def preference_rows_per_pass(batch: int, micro_batch_size: int | None) -> int:
    """Preference rows per forward pass under training.micro_batch_size: a row is two sequences
    (its chosen and its rejected answer), so it counts twice against the examples per pass."""
    from opensem.train.hf_backend import examples_per_pass

    return examples_per_pass(batch, max(1, micro_batch_size // 2) if micro_batch_size else None)


def dpo_config(cfg: Config, plan, output_dir: Path, has_eval: bool):
    """Every setting from the config: the preference section, and training's for what both share."""
    from trl import DPOConfig

    from opensem.train.hf_backend import checkpointing_field

    p, t = cfg.preference, cfg.training
    checkpointing = {checkpointing_field(DPOConfig): plan.gradient_checkpointing}  # TRL's own default is on
    rows_per_pass = preference_rows_per_pass(p.batch_size, t.micro_batch_size)
    return DPOConfig(
        **checkpointing,
        output_dir=str(output_dir),
        num_train_epochs=p.epochs,
        max_steps=p.max_steps,
        per_device_train_batch_size=rows_per_pass,  # micro-batches accumulate to the batch
        gradient_accumulation_steps=p.batch_size // rows_per_pass,
        per_device_eval_batch_size=rows_per_pass,
        learning_rate=p.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=t.warmup_ratio,
        beta=p.beta,
        loss_type=[p.loss],
        max_length=cfg.pair_max_length,
        seed=t.seed,
        bf16=plan.precision == "bf16",
        fp16=plan.precision == "fp16",
        use_cpu=plan.device == "cpu",
        logging_steps=1,
        logging_first_step=True,
        logging_nan_inf_filter=False,
        save_strategy="steps",
        save_steps=t.checkpoint_steps,
        save_total_limit=2,
        eval_strategy="epoch" if has_eval else "no",
        report_to=[],
        dataloader_num_workers=0,
    )


def _save_adapter(sem: Sem, cfg: Config, sft: Path, name: str, out_dir: Path, trainer, tracked, seconds: float) -> dict:
    """The trained adapter (not TRL's reference copy), the SFT adapter's tokenizer and passages,
    and metadata that evaluate and promote read as they read train's."""
    trainer.model.save_pretrained(str(out_dir), selected_adapters=["default"])
    trainer.processing_class.save_pretrained(str(out_dir))
    if (sft / "retrieval_passages.json").is_file():
        shutil.copy2(sft / "retrieval_passages.json", out_dir / "retrieval_passages.json")
    sft_metadata = json.loads((sft / "training_metadata.json").read_text(encoding="utf-8"))
    logs = trainer.state.log_history
    last = next((h for h in reversed(logs) if "rewards/margins" in h), {})
    p = cfg.preference
    metadata = sft_metadata | {
        # DPO's losses here (the SFT adapter's under "sft"): not comparable with an SFT held-out loss
        "train_loss": next((h["train_loss"] for h in reversed(logs) if "train_loss" in h), None),
        "eval_loss": next((h["eval_loss"] for h in reversed(logs) if "eval_loss" in h), None),
        "sft": {k: sft_metadata.get(k) for k in ("train_loss", "eval_loss", "global_step", "kept_epoch")},
        "run_name": name,
        "mlflow_run_id": tracked.run_id,
        "sft_adapter": sft.name,
        "preference": {"loss": p.loss, "beta": p.beta, "learning_rate": p.learning_rate, "epochs": p.epochs,
                       "max_steps": p.max_steps, "batch_size": p.batch_size, "on_policy": p.on_policy,
                       "rows_per_pass": trainer.args.per_device_train_batch_size},
        "global_step": trainer.state.global_step,
        "reward_margin": float(last.get("rewards/margins", float("nan"))),
        "reward_accuracy": float(last.get("rewards/accuracies", float("nan"))),
        "train_seconds": round(seconds, 1),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config_digest": cfg.digest(),
    }
    atomic_write_json(out_dir / "training_metadata.json", metadata)
    tracked.log_metrics({"reward_margin_final": metadata["reward_margin"], "reward_accuracy_final": metadata["reward_accuracy"],
                         "train_seconds": seconds})
    tracked.log_artifact(out_dir / "training_metadata.json", "training")
    return metadata


def _log_servable_model(cfg: Config, out_dir: Path, tracked) -> str:
    from opensem.train.pyfunc import log_adapter_model

    g = cfg.generation
    passages = out_dir / "retrieval_passages.json"
    info = log_adapter_model(out_dir, cfg.model.base, cfg.model.system_prompt, g.max_new_tokens, g.batch_size, g.device,
                             passages if passages.is_file() else None, answer=g.answer, quote_sentences=g.quote_sentences)
    tracked.set_tags({TAG_MODEL_URI: info.model_uri})
    return info.model_uri
