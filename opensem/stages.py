"""Run one stage of one SEM: resolve its config, open its tracked run, call its implementation.

Each stage is one function `run(sem, cfg, **options)` in its own module, which opens its own
tracked run(s) through opensem.tracking; this table is the only place that maps stage names
to modules. A stage whose module has not landed yet
still opens a tracked run (so `mlflow run` works end to end) and says so plainly.
"""

from __future__ import annotations

import importlib
import importlib.util

from rich.console import Console

console = Console(stderr=True)

# stage name -> (module holding `run(sem, cfg, **options)`, what it does: shown by --help).
STAGES: dict[str, tuple[str, str]] = {
    "forge": ("opensem.forge", "documents -> teacher-written Q/A pairs -> train.jsonl / test.jsonl"),
    "baseline": ("opensem.judge.baseline", "score the base model on the golden set"),
    "train": ("opensem.train", "LoRA/QLoRA fine-tune -> models/<sem>/adapters/<run_name>"),
    "evaluate": ("opensem.judge.evaluate", "score a fine-tuned adapter; print Baseline vs Fine-tuned"),
    "sweep": ("opensem.sweep", "(not built yet) Optuna study over training settings, one nested run per trial"),
    "promote": ("opensem.registry", "register the adapter; move `champion` only if it beats the baseline"),
    "report": ("opensem.report", "Markdown + HTML report for the SEM"),
    "pipeline": ("opensem.pipeline", "forge -> baseline -> train -> evaluate -> promote -> report"),
}


def is_built(stage: str) -> bool:
    return importlib.util.find_spec(STAGES[stage][0]) is not None


def run_stage(stage: str, sem_name: str, overrides: list[str], **options) -> None:
    from opensem.config import load_config
    from opensem.tracking import stage_run
    from opensem.workspace import open_sem

    sem = open_sem(sem_name)
    cfg = load_config(sem.root, sem.name, overrides)
    options = {k: v for k, v in options.items() if v is not None}
    if not is_built(stage):
        with stage_run(sem, stage, cfg, tags={"opensem.status": "not_built"}):
            console.print(f"[yellow]{stage}: not built yet[/yellow] - a tracked run was opened and tagged; the stage itself lands in a later release.")
        return
    module = importlib.import_module(STAGES[stage][0])
    module.run(sem, cfg, **options)
