"""Run one stage of one SEM: resolve its config, open its tracked run, call its implementation.

Each stage is one function `run(sem, cfg, **options)` in its own module, which opens its own
tracked run(s) through opensem.tracking; this table is the only place that maps stage names
to modules.
"""

from __future__ import annotations

import importlib

# stage name -> (module holding `run(sem, cfg, **options)`, what it does: shown by --help).
STAGES: dict[str, tuple[str, str]] = {
    "forge": ("opensem.forge", "documents -> teacher-written Q/A pairs -> train.jsonl / test.jsonl"),
    "baseline": ("opensem.judge.baseline", "score the base model on the golden set"),
    "train": ("opensem.train", "LoRA/QLoRA fine-tune -> models/<sem>/adapters/<run_name>; base model and settings from the recipe (--set recipe=NAME, see `opensem recipes`)"),
    "prefer": ("opensem.preference", "preference training after SFT: TRL's DPO on the forge's chosen/rejected quotes -> models/<sem>/adapters/<sft>-pref (section `preference`)"),
    "evaluate": ("opensem.judge.evaluate", "score a fine-tuned adapter; print Baseline vs Fine-tuned"),
    "sweep": ("opensem.sweep", "Optuna study over sweep.space (--set sweep.n_trials=N; run again to add trials); each trial trains as a nested run, losing ones are pruned after an epoch"),
    "promote": ("opensem.registry", "register the adapter; move `champion` only if it beats the baseline"),
    "report": ("opensem.report", "Markdown + HTML report for the SEM"),
    "pipeline": ("opensem.pipeline", "forge -> baseline -> train -> evaluate -> promote -> report"),
}


# The stages that run under torchrun (several processes): training is data-parallel, answering
# is split across the processes; the others write files and registry entries once and are run
# as one process.
DISTRIBUTED_STAGES = ("baseline", "train", "evaluate", "dev", "pipeline")


def join_launcher(stage: str) -> None:
    """Under torchrun, refuse a stage that must run once, and join the process group before any
    model is loaded (so each process loads onto its own GPU); without torchrun, nothing."""
    from opensem.distributed import join, world

    here = world()
    if not here.distributed:
        return
    if stage not in DISTRIBUTED_STAGES:
        from opensem.errors import OpenSEMError

        raise OpenSEMError(f"`opensem {stage}` runs as one process, and this is one of {here.size} (torchrun); "
                           f"run it without torchrun (torchrun runs {', '.join(DISTRIBUTED_STAGES)})")
    join()


def run_stage(stage: str, sem_name: str, overrides: list[str], **options) -> None:
    from opensem.config import load_config
    from opensem.workspace import open_sem

    join_launcher(stage)
    sem = open_sem(sem_name)
    cfg = load_config(sem.root, sem.name, overrides)
    options = {k: v for k, v in options.items() if v is not None}
    module = importlib.import_module(STAGES[stage][0])
    raise_if_interrupted(module.run(sem, cfg, **options))


def raise_if_interrupted(result) -> None:
    """A stage that stopped on SIGTERM returns {"status": "preempted", ...}: not a success."""
    if isinstance(result, dict) and result.get("status") == "preempted":
        from opensem.errors import Interrupted

        raise Interrupted(f"stopped by SIGTERM at step {result.get('step')} of run {result.get('run_name')}, checkpoint saved; "
                          "run the same command again to resume")
