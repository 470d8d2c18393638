"""`opensem train`: data/<sem>/processed/train.jsonl -> models/<sem>/adapters/<run_name>/.

    check data -> detect hardware, plan -> (resume?) -> backend loads model
    -> [cpt: the documents themselves, training.cpt_epochs] -> SFTTrainer on the pairs
    -> adapter + tokenizer + config + metadata -> loss curve, MLflow pyfunc model

A run name is a resumable unit: re-running the same name continues from its newest checkpoint
in the same MLflow run; a finished name is refused rather than overwritten.

Under torchrun (N processes) the same steps run on every rank as DistributedDataParallel: rank 0
picks the run name and the checkpoint to resume from and tells the others, and it alone opens
the MLflow run and writes the adapter; the others train and return (opensem/distributed.py).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from opensem.config import Config
from opensem.distributed import World, world
from opensem.errors import OpenSEMError
from opensem.hardware import TrainingPlan
from opensem.io import atomic_write_json, atomic_write_text
from opensem.retrieval import recorded, settings as retrieval_settings
from opensem.tags import TAG_KEPT_EPOCH, TAG_MODEL_URI, TAG_RUN_NAME, TAG_STOPPED_EARLY
from opensem.workspace import Sem

console = Console(stderr=True, quiet=not world().main)  # under torchrun, rank 0 speaks for all
STATE_FILE = "opensem_run.json"


@dataclass
class Job:
    """What one training run works with, settled before any model is loaded."""

    sem: Sem
    cfg: Config
    plan: TrainingPlan
    world: World  # this process's rank among the torchrun processes (a world of one without torchrun)
    run_name: str
    out_dir: Path  # the adapter folder
    checkpoints: Path
    state_dir: Path  # where the run's state (its MLflow run id) lives: beside the checkpoints
    state: dict
    resume_from: Path | None
    base_dir: Path
    train_rows: list[dict]
    eval_rows: list[dict]
    yes_no_repeats: int


@dataclass
class Fit:
    """What training produced; `trainer` is None when a SIGTERM came during the cpt phase."""

    trainer: Any
    result: Any
    seconds: float
    cpt: dict | None
    tokenizer: Any
    dropped: int
    metrics: Any  # TrackingCallback: the loss history for the curve
    keeper: Any  # KeepBestCallback or None
    stopper: Any  # EvalStopCallback or None
    preempted: bool


def run(sem: Sem, cfg: Config, should_stop: Callable[[float, int], bool] | None = None, title: str | None = None) -> dict:
    """Train one adapter. `should_stop(eval_loss, epoch)`, when given, is asked after each epoch's
    held-out evaluation; True ends training there (recorded as stopped_early_at_epoch). `title`:
    the MLflow run's name (default "<sem> · train · <run_name>")."""
    from opensem import tracking

    job = _prepare(sem, cfg)
    _announce(job)
    with tracking.stage_run(sem, "train", cfg, run_name=title or f"{sem.name} · train · {job.run_name}",
                            run_id=job.state.get("mlflow_run_id"), tags={TAG_RUN_NAME: job.run_name}) as tracked:
        if job.world.main:
            _write_state(job.state_dir, {"mlflow_run_id": tracked.run_id, "status": "running"})
        tracked.log_params({f"plan.{k}": v for k, v in job.plan.as_dict().items() if k != "reasons"}
                           | {"plan.reasons": "; ".join(job.plan.reasons), "processes": job.world.size,
                              "effective_batch_size": effective_batch_size(cfg, job.world.size)})
        if job.world.main and not job.resume_from:
            tracking.log_jsonl_dataset(sem.processed_dir / "train.jsonl", f"{sem.name}-train", "training")
        fit = _fit(job, tracked, should_stop)
        if not fit.preempted:
            # on every rank: a last held-out evaluation and (FSDP) gathering the weights are collective
            eval_loss = _held_out_loss(job, fit)
            _save_weights(job, fit)
        if tracked.follower:  # rank 0 writes the rest, logs and reports
            return {"run_name": job.run_name, "status": "preempted" if fit.preempted else "finished", "rank": job.world.rank}
        if fit.preempted:
            tracked.end_status = "KILLED"
            return _report_preempted(job, fit)
        metadata = _save_adapter(job, fit, tracked, eval_loss)
        _release_trained_model(fit)
        model_uri = _log_servable_model(job, fit, tracked)
        _write_state(job.state_dir, {"mlflow_run_id": tracked.run_id, "status": "finished", "model_uri": model_uri})
    _report_trained(job, metadata, fit)
    return metadata | {"status": "finished", "adapter_dir": str(job.out_dir), "model_uri": model_uri}


def _prepare(sem: Sem, cfg: Config) -> Job:
    """Check the forge output and the run name, plan for this hardware, find a checkpoint to
    resume from; every refusal here comes before a model is loaded."""
    from opensem import hardware
    from opensem.distributed import broadcast
    from opensem.models import resolve_base_model
    from opensem.train.data import balance_yes_no, check_corpus, check_forge_output, load_conversations

    t = cfg.training
    here = world()
    manifest = check_forge_output(sem.processed_dir, sem.name)
    train_rows = load_conversations(sem.processed_dir / "train.jsonl", sem.name)
    eval_rows = load_conversations(sem.processed_dir / "test.jsonl", sem.name, required=False)
    plan = hardware.plan(hardware.detect(), t, processes=here.size)
    if t.fsdp and here.distributed and t.keep_best:
        raise OpenSEMError("training.fsdp and training.keep_best do not go together (the best epoch's adapter is "
                           "restored on one process, FSDP shards it over all): set training.keep_best=false")
    hardware.import_unsloth_first(plan)

    # rank 0's clock names the run, and rank 0's reading of its state decides the resume: every
    # rank must train the same run from the same checkpoint
    run_name = broadcast(t.run_name or datetime.now().strftime("%Y%m%d-%H%M%S"))
    out_dir = sem.adapters_dir / run_name
    checkpoints = Path(t.checkpoint_dir) / sem.name / run_name if t.checkpoint_dir else out_dir / "checkpoints"
    # on a cloud bucket when checkpoint_dir is one, so a job recovered on a new node continues the same MLflow run
    state_dir = checkpoints if t.checkpoint_dir else out_dir
    state, resume_from = broadcast((_read_state(state_dir), _last_checkpoint(checkpoints) if here.main else None))
    if state.get("status") == "finished":
        raise OpenSEMError(f"run {run_name!r} already finished ({state_dir}); pick a new name: --set training.run_name=...")
    if t.cpt_epochs:
        check_corpus(sem.processed_dir / "corpus.jsonl", sem.name)
    _check_forged_retrieval(sem, cfg, manifest)
    repeats = 0
    if cfg.experimental.balance_yes_no:
        train_rows, repeats = balance_yes_no(train_rows, t.seed)
    return Job(sem, cfg, plan, here, run_name, out_dir, checkpoints, state_dir, state, resume_from,
               Path(resolve_base_model(cfg.model.base, sem.base_models_dir)), train_rows, eval_rows, repeats)


def _announce(job: Job) -> None:
    from opensem import recipes

    console.print(f"[bold]train[/bold] {job.sem.name} / {job.run_name}: {len(job.train_rows)} examples"
                  f"{f' ({job.yes_no_repeats} repeats of the rarer Yes/No answers)' if job.yes_no_repeats else ''}, "
                  f"{len(job.eval_rows)} held out")
    if not job.eval_rows:
        console.print(f"  [yellow]no held-out pairs ({job.sem.processed_dir / 'test.jsonl'} missing or empty): no held-out "
                      "loss, and training.keep_best has no epoch to choose by[/yellow]")
    for reason in job.plan.reasons:
        console.print(f"  hardware: {reason}")
    if job.world.distributed:
        t = job.cfg.training
        console.print(f"  effective batch: {t.batch_size} rows x {t.gradient_accumulation_steps} accumulation x "
                      f"{job.world.size} processes = {effective_batch_size(job.cfg, job.world.size)} per optimizer step, "
                      f"learning rate {t.learning_rate:g} as set (not scaled)")
    if warning := recipes.device_mismatch(job.cfg.recipe, job.plan.device):
        console.print(f"  [yellow]{warning}[/yellow]")
    if job.resume_from:
        console.print(f"  resuming from {job.resume_from}")


def effective_batch_size(cfg: Config, processes: int) -> int:
    """Rows per optimizer step: each process's batch, accumulated, over all processes."""
    return cfg.training.batch_size * cfg.training.gradient_accumulation_steps * processes


def _fit(job: Job, tracked, should_stop) -> Fit:
    """Load the model through the plan's backend, then train: the cpt phase (training.cpt_epochs)
    and the pairs. A SIGTERM ends either phase after a checkpoint (Fit.preempted)."""
    from opensem.train.callbacks import (
        EvalStopCallback, FiniteTrainingCallback, KeepBestCallback, PreemptionCallback, TrackingCallback,
    )
    from opensem.train.hf_backend import build_trainer

    cfg, t, plan = job.cfg, job.cfg.training, job.plan
    model, tokenizer, peft_applied = _load(plan, job.base_dir, cfg)
    train_rows, dropped = _fit_length(job.train_rows, tokenizer, cfg.pair_max_length)
    if dropped:
        console.print(f"  [yellow]{dropped} examples longer than {cfg.pair_max_length} tokens (training.max_length"
                      f"{' + the retrieved passages' if cfg.retrieval.enabled else ''}) left out[/yellow]")
    metrics = TrackingCallback(tracked, plan.device)
    preempt = PreemptionCallback()
    stopper = EvalStopCallback(should_stop) if should_stop and job.eval_rows else None
    keeper = KeepBestCallback(job.checkpoints / "best") if t.keep_best and job.eval_rows else None
    callbacks = [metrics, preempt, FiniteTrainingCallback(t.learning_rate)] + [c for c in (stopper, keeper) if c]
    stock_loss = plan.backend == "unsloth"
    cpt, trainer, result, started = None, None, None, time.time()
    try:
        # A resumed run's checkpoint already holds the adapter the cpt phase trained.
        if t.cpt_epochs and not job.resume_from:
            cpt = _continued_pretraining(model, tokenizer, job.sem, cfg, plan, job.checkpoints, tracked, preempt,
                                         apply_lora=not peft_applied, stock_loss=stock_loss,
                                         pairs=train_rows if cfg.experimental.cpt_mix_pairs else [])
            model, peft_applied = cpt["model"], True
        if not preempt.requested:
            trainer = build_trainer(model, tokenizer, train_rows, job.eval_rows, cfg, plan, job.checkpoints, callbacks,
                                    apply_lora=not peft_applied, stock_loss=stock_loss)
            started = time.time()  # the pairs phase alone: tokens/s is its own
            result = trainer.train(resume_from_checkpoint=str(job.resume_from) if job.resume_from else None)
    finally:
        preempt.restore()
    return Fit(trainer, result, time.time() - started, cpt, tokenizer, dropped, metrics, keeper, stopper,
               preempted=trainer is None or preempt.requested)


def _report_preempted(job: Job, fit: Fit) -> dict:
    again = f"Run the same command (training.run_name={job.run_name})"
    if fit.trainer is None:
        console.print(f"[yellow]SIGTERM during continued pre-training: nothing to keep yet.[/yellow] {again} to start again.")
        return {"run_name": job.run_name, "status": "preempted", "step": 0}
    step = fit.trainer.state.global_step
    console.print(f"[yellow]SIGTERM: stopped at step {step}, checkpoint saved in {job.checkpoints}.[/yellow] {again} to resume.")
    return {"run_name": job.run_name, "status": "preempted", "step": step}


def _held_out_loss(job: Job, fit: Fit) -> float | None:
    """The kept epoch's held-out loss (keep_best), else the last step's (None without test pairs)."""
    if fit.keeper and fit.keeper.best:
        return fit.keeper.best["eval_loss"]
    return _final_eval_loss(fit.trainer) if job.eval_rows else None


def _save_weights(job: Job, fit: Fit) -> None:
    """The adapter (the best epoch's with keep_best): adapter_config.json, adapter_model.safetensors,
    tokenizer, chat template. Called on every rank; the Trainer writes on rank 0 only."""
    if fit.keeper and job.world.main:
        fit.keeper.restore(fit.trainer.model)
    fit.trainer.save_model(str(job.out_dir))


def _save_adapter(job: Job, fit: Fit, tracked, eval_loss: float | None) -> dict:
    """Beside the saved weights: the tokenizer, metadata, resolved config and loss curve in the
    adapter folder, and the run's final metrics."""
    cfg, trainer, keeper, stopper = job.cfg, fit.trainer, fit.keeper, fit.stopper
    fit.tokenizer.save_pretrained(str(job.out_dir))
    metadata = {
        "sem": job.sem.name,
        "run_name": job.run_name,
        "mlflow_run_id": tracked.run_id,
        "base_model": cfg.model.base,
        "recipe": cfg.recipe,
        "retrieval": retrieval_settings(cfg),  # open book: asked with passages
        "base_model_path": _shown_path(job.base_dir, job.sem.root),
        "backend": job.plan.backend,
        "plan": job.plan.as_dict(),
        "examples": len(job.train_rows) - fit.dropped,
        "yes_no_repeats": job.yes_no_repeats,
        "dropped_too_long": fit.dropped,
        "global_step": trainer.state.global_step,
        "train_loss": fit.result.training_loss,
        "eval_loss": eval_loss,
        "kept_epoch": keeper.best["epoch"] if keeper and keeper.best else None,
        "stopped_early_at_epoch": stopper.stopped_at_epoch if stopper else None,
        "tokens_seen": int(trainer.state.num_input_tokens_seen or 0),
        "cpt": {k: v for k, v in fit.cpt.items() if k != "model"} if fit.cpt else None,
        "train_seconds": round(fit.seconds, 1),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config_digest": cfg.digest(),
    }
    if metadata["kept_epoch"] is not None:
        tracked.set_tags({TAG_KEPT_EPOCH: f"{metadata['kept_epoch']:g}"})
    if metadata["stopped_early_at_epoch"] is not None:
        tracked.set_tags({TAG_STOPPED_EARLY: f"after epoch {metadata['stopped_early_at_epoch']}"})
    atomic_write_json(job.out_dir / "training_metadata.json", metadata)
    atomic_write_text(job.out_dir / "resolved_config.yaml", cfg.to_yaml())
    tracked.log_metrics({"train_loss_final": fit.result.training_loss, "train_seconds": fit.seconds}
                        | ({"eval_loss_final": metadata["eval_loss"]} if metadata["eval_loss"] is not None else {}))
    if fit.metrics.history:
        _loss_curve(fit.metrics.history, job.out_dir / "loss_curve.png")
        tracked.log_artifact(job.out_dir / "loss_curve.png", "training")
    tracked.log_artifact(job.out_dir / "training_metadata.json", "training")
    if cfg.training.merge:
        merge_adapter(job.out_dir, job.base_dir, job.plan, trainer.model, fit.tokenizer,
                      from_saved=bool(trainer.is_fsdp_enabled))
    return metadata


def _release_trained_model(fit: Fit) -> None:
    """Free the trained model, its optimizer state and the compiled MLPs once the adapter is on
    disk: logging the servable model loads the expert afresh to check that it answers, and the
    training process would otherwise hold both (measured: docs/measurements/memory.md)."""
    import torch._dynamo

    from opensem.hardware import return_freed_memory

    fit.trainer.accelerator.free_memory()  # accelerate's own references to the model and optimizer
    fit.trainer.model = fit.trainer.model_wrapped = fit.trainer.optimizer = fit.trainer.lr_scheduler = None
    handler = fit.trainer.callback_handler  # the callbacks' view of the same objects
    handler.model = handler.optimizer = handler.lr_scheduler = None
    if fit.cpt:
        fit.cpt.pop("model", None)
    torch._dynamo.reset()  # compiled graphs hold on to the modules they were traced from
    return_freed_memory()


def _log_servable_model(job: Job, fit: Fit, tracked) -> str:
    """The adapter as an MLflow pyfunc model (with the retrieval passages, open book, so the
    served model answers from the same passages); returns its model URI."""
    from opensem.retrieval import for_sem
    from opensem.train.pyfunc import log_adapter_model

    cfg, passages = job.cfg, None
    if retriever := for_sem(job.sem, cfg, fit.tokenizer):
        retriever.save(passages := job.out_dir / "retrieval_passages.json")
    g = cfg.generation
    info = log_adapter_model(job.out_dir, cfg.model.base, cfg.model.system_prompt, g.max_new_tokens, g.batch_size, g.device,
                             passages, answer=g.answer, quote_sentences=g.quote_sentences)
    tracked.set_tags({TAG_MODEL_URI: info.model_uri})
    return info.model_uri


def _report_trained(job: Job, metadata: dict, fit: Fit) -> None:
    console.print(
        f"[green]trained[/green] {job.run_name}: {metadata['global_step']} steps"
        + (f" (stopped early after epoch {metadata['stopped_early_at_epoch']})" if metadata["stopped_early_at_epoch"] is not None else "")
        + (f", kept epoch {metadata['kept_epoch']:g} (lowest held-out loss)" if metadata["kept_epoch"] is not None else "")
        + f", loss {fit.result.training_loss:.3f}, "
        f"{metadata['tokens_seen'] / max(fit.seconds, 1e-9):.0f} tokens/s -> {job.out_dir}"
    )


def _continued_pretraining(model, tokenizer, sem: Sem, cfg: Config, plan, checkpoints: Path, tracked, preempt,
                           apply_lora: bool, stock_loss: bool, pairs: list[dict]) -> dict:
    """Train the adapter on the documents themselves (every token) before the pairs, so the
    facts are seen as the text states them and not only through the forge's questions; `pairs`
    (experimental.cpt_mix_pairs) are mixed in, one copy per pass. Returns the model with its adapter,
    and what the phase did (also logged as cpt_* metrics)."""
    from opensem.train.callbacks import FiniteTrainingCallback, TrackingCallback
    from opensem.train.data import corpus_windows, pair_windows
    from opensem.train.hf_backend import build_trainer

    t = cfg.training
    # Shuffled sentences: one copy of the corpus per pass, each in its own order, trained over once.
    passes = math.ceil(t.cpt_epochs) if cfg.experimental.cpt_shuffle_sentences else 1
    windows = corpus_windows(sem.processed_dir / "corpus.jsonl", sem.name, tokenizer, t.max_length, passes=passes,
                             shuffle_seed=t.seed if cfg.experimental.cpt_shuffle_sentences else None)
    corpus_size = len(windows) // passes
    windows += pair_windows(pairs, tokenizer) * passes  # the trainer's sampler mixes them with the windows
    console.print(f"  continued pre-training: {corpus_size} windows of <= {t.max_length} tokens, {t.cpt_epochs:g} epochs"
                  + (", sentences shuffled within sections in each" if cfg.experimental.cpt_shuffle_sentences else "")
                  + (f", {len(pairs)} pairs mixed in" if pairs else ""))
    metrics = TrackingCallback(tracked, plan.device, prefix="cpt_")
    trainer = build_trainer(model, tokenizer, windows, [], cfg, plan, checkpoints / "cpt", [metrics, preempt, FiniteTrainingCallback(t.learning_rate)],
                            apply_lora=apply_lora, stock_loss=stock_loss, cpt=True, cpt_epochs=t.cpt_epochs / passes)
    started = time.time()
    result = trainer.train()
    summary = {"windows": corpus_size, "pairs": len(pairs), "epochs": t.cpt_epochs, "steps": trainer.state.global_step,
               "loss": result.training_loss, "seconds": round(time.time() - started, 1)}
    tracked.log_metrics({"cpt_loss_final": result.training_loss, "cpt_seconds": summary["seconds"]})
    return summary | {"model": trainer.model}


def _load(plan, base_dir, cfg: Config):
    """(model, tokenizer, peft already applied?) from the planned backend."""
    if plan.backend == "unsloth":
        from opensem.train.unsloth_backend import prepare as unsloth_prepare

        model, tokenizer = unsloth_prepare(base_dir, cfg, plan)
        return model, tokenizer, True
    from opensem.train.hf_backend import prepare

    model, tokenizer = prepare(base_dir, cfg, plan)
    return model, tokenizer, False


def merge_adapter(out_dir: Path, base_dir, plan, trained_model, tokenizer, from_saved: bool = False) -> Path:
    """out_dir/merged: the base model with the adapter merged in, in 16 bits. A model trained on a
    4-bit base is merged into a fresh 16-bit load of the base instead: merging into the NF4 weights
    would re-quantize them (lossy) and save a 4-bit model. So is one trained with FSDP
    (`from_saved`): rank 0 holds only its shard of the trained model, and the saved adapter whole."""
    folder = out_dir / "merged"
    if plan.load_in_4bit or from_saved:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        from opensem.train.hf_backend import half_dtype

        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=half_dtype(plan.precision))
        merged = PeftModel.from_pretrained(base, str(out_dir)).merge_and_unload()
    else:
        merged = trained_model.merge_and_unload()
    merged.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def _final_eval_loss(trainer) -> float:
    """Held-out loss at the last step, what `opensem sweep` minimises (with keep_best, the kept
    epoch's is used instead). Evaluation runs each epoch; max_steps can stop between epochs, and
    then one more evaluation is needed."""
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry:
            if entry.get("step") == trainer.state.global_step:
                return float(entry["eval_loss"])
            break
    return float(trainer.evaluate()["eval_loss"])


def _shown_path(path, root: Path) -> str:
    """A path inside the project relative to it (what is recorded travels with the model to other
    machines); a path elsewhere, or a model id, as given."""
    for inside, project in ((Path(path), root), (Path(path).resolve(), root.resolve())):
        try:
            return str(inside.relative_to(project))
        except ValueError:
            continue
    return str(path)


def _check_forged_retrieval(sem: Sem, cfg: Config, manifest: dict | None) -> None:
    """The pairs must be asked as the adapter will be: open book (with passages) or not."""
    if manifest is None:
        return  # pairs written by hand: nothing recorded to compare
    forged = recorded(manifest.get("retrieval"))
    wanted = retrieval_settings(cfg)
    if forged != wanted:
        raise OpenSEMError(f"the forge wrote {sem.processed_dir} with retrieval {forged or 'off'}, this run has it "
                           f"{wanted or 'off'}: run `opensem forge --sem {sem.name}` with the same settings first")


def _fit_length(rows: list[dict], tokenizer, max_length: int) -> tuple[list[dict], int]:
    """Rows whose whole conversation fits in max_length tokens, and how many did not. (The token
    ids are asked for by name: transformers 5.23 returns a BatchEncoding by default, whose len()
    is its number of fields, 2, so a bare len() dropped nothing.)"""
    def length(messages) -> int:
        return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])

    kept = [r for r in rows if length(r["messages"]) <= max_length]
    return kept, len(rows) - len(kept)


def _read_state(folder: Path) -> dict:
    path = folder / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_state(folder: Path, state: dict) -> None:
    atomic_write_json(folder / STATE_FILE, state)


def _last_checkpoint(folder: Path) -> Path | None:
    """The newest *complete* checkpoint-N: the Trainer writes trainer_state.json last, so a folder
    without it was cut off mid-save (a preemption) and resuming from it would fail every time.
    (transformers' get_last_checkpoint takes the highest number whatever its state.)"""
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))]
    for _, path in sorted(found, reverse=True):
        if (path / "trainer_state.json").is_file():
            return path
        console.print(f"  [yellow]{path.name} is incomplete (cut off while saving): skipped[/yellow]")
    return None


def _loss_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("loss", "train loss"), ("eval_loss", "eval loss")):
        points = [(h["step"], h[key]) for h in history if key in h]
        if points:
            ax.plot(*zip(*points), marker="o" if key == "eval_loss" else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
