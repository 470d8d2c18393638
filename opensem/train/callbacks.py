"""Trainer callbacks: metrics into the stage's MLflow run (and W&B), a clean stop on SIGTERM, and
an early stop that a caller (the sweep's pruner) decides after each held-out evaluation."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

from transformers import TrainerCallback


class TrackingCallback(TrainerCallback):
    """Forward loss, eval loss, learning rate and grad norm, plus real (non-padding) tokens/s and
    peak memory, to the StageRun at each logging step."""

    def __init__(self, tracked, device: str, prefix: str = ""):
        self.tracked = tracked
        self.prefix = prefix  # "cpt_" for the continued pre-training phase, whose steps restart at 0
        self.device = device
        self.last_time = time.perf_counter()
        self.last_tokens = 0
        self.history: list[dict] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_time = time.perf_counter()
        self.last_tokens = state.num_input_tokens_seen or 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        metrics = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and k not in ("epoch", "total_flos")}
        now = time.perf_counter()
        tokens = state.num_input_tokens_seen or 0
        if "loss" in metrics and tokens > self.last_tokens and now > self.last_time:
            metrics["tokens_per_second"] = (tokens - self.last_tokens) / (now - self.last_time)
            self.last_time, self.last_tokens = now, tokens
        metrics["peak_memory_gb"] = peak_memory_gb(self.device)
        metrics["epoch"] = float(state.epoch or 0)
        self.history.append({"step": state.global_step, **metrics})
        self.tracked.log_metrics({self.prefix + k: v for k, v in metrics.items()}, step=state.global_step)


class FiniteTrainingCallback(TrainerCallback):
    """Stops a training whose weights or logged loss stop being finite numbers, before the step is
    checkpointed: a NaN adapter answers nothing, and saving it as "trained" hides why. Checked
    after every optimizer step over the trainable (LoRA) weights only, a few million numbers."""

    def __init__(self, learning_rate: float, key: str = "training.learning_rate"):
        self.learning_rate, self.key = learning_rate, key  # the setting the message names

    def _stop(self, step: int, what: str):
        from opensem.errors import OpenSEMError

        raise OpenSEMError(f"training diverged at step {step}: {what} is not a finite number ({self.key}="
                           f"{self.learning_rate:g}); no adapter was written: lower {self.key} and train again "
                           f"under a new {self.key.split('.')[0]}.run_name")

    def on_step_end(self, args, state, control, model=None, **kwargs):
        import torch

        if model is not None and not all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.requires_grad):
            self._stop(state.global_step, "a trained weight")

    def on_log(self, args, state, control, logs=None, **kwargs):
        import math

        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                self._stop(state.global_step, f"the {key.replace('_', ' ')} ({value})")


def peak_memory_gb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 1024**3
    import resource

    # ru_maxrss is KiB on Linux, bytes on macOS
    import sys

    scale = 1024**3 if sys.platform == "darwin" else 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


class PreemptionCallback(TrainerCallback):
    """On SIGTERM (a spot preemption notice, or `kill`), finish the current step, save a
    checkpoint and stop, so a re-run resumes from it. Under torchrun the ranks decide together
    (a signal can reach them a step apart, and a rank that stopped alone would leave the others
    waiting at the next gradient sync)."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def on_step_end(self, args, state, control, **kwargs):
        from opensem.distributed import any_rank

        if any_rank(self.requested):
            self.requested = True
            control.should_save = True
            control.should_training_stop = True
        return control

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


class EvalStopCallback(TrainerCallback):
    """After each held-out evaluation during training, ask `should_stop(eval_loss, epoch)`; on
    True, end training there. The sweep's pruner uses it to drop a trial that is already losing."""

    def __init__(self, should_stop):
        self.should_stop = should_stop
        self.stopped_at_epoch: int | None = None
        self._training = False

    def on_train_begin(self, args, state, control, **kwargs):
        self._training = True

    def on_train_end(self, args, state, control, **kwargs):
        self._training = False  # the final evaluation after training is not a decision point

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not self._training or not metrics or "eval_loss" not in metrics:
            return control
        epoch = int(round(state.epoch or 0))
        if self.should_stop(float(metrics["eval_loss"]), epoch):
            self.stopped_at_epoch = epoch
            control.should_training_stop = True
        return control


class KeepBestCallback(TrainerCallback):
    """training.keep_best: after each held-out evaluation during training, if its loss is the
    lowest so far, save the adapter to `folder` (with best.json: loss, epoch, step); the train
    stage loads it back when training ends. The folder lives beside the checkpoints, so a
    resumed run goes on comparing with the best epoch before the interruption.

    Written by hand because the Trainer's own load_best_model_at_end needs a checkpoint at
    every evaluation (and none between them): it would trade the step checkpoints that a
    preempted run resumes from for one per epoch."""

    def __init__(self, folder):
        self.folder = Path(folder)
        info = self.folder / "best.json"
        self.best: dict | None = json.loads(info.read_text()) if info.is_file() else None
        self._training = False

    def on_train_begin(self, args, state, control, **kwargs):
        self._training = True

    def on_train_end(self, args, state, control, **kwargs):
        self._training = False  # an evaluation after training is not an epoch to keep

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if not self._training or not metrics or "eval_loss" not in metrics or model is None:
            return control
        loss = float(metrics["eval_loss"])
        if self.best is not None and not loss < self.best["eval_loss"]:
            return control
        self.best = {"eval_loss": loss, "epoch": round(float(state.epoch or 0), 2), "step": state.global_step}
        if not state.is_world_process_zero:  # under torchrun every rank has the same loss; rank 0 writes
            return control
        # written whole under a temporary name, then swapped in: a kill leaves the old best or the new
        partial = self.folder.with_name(self.folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(str(partial))  # a PEFT model saves its adapter only
        (partial / "best.json").write_text(json.dumps(self.best))
        old = self.folder.with_name(self.folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if self.folder.exists():
            self.folder.rename(old)
        partial.rename(self.folder)
        shutil.rmtree(old, ignore_errors=True)
        return control

    def restore(self, model) -> None:
        """Put the best epoch's adapter weights into `model` (the one training ended with)."""
        if self.best is not None:
            model.load_adapter(str(self.folder), adapter_name=model.active_adapter)
