"""`opensem sweep`: an Optuna study over training settings, each trial a nested MLflow run.

    sweep.space -> Optuna's TPE sampler proposes values -> train <study>-tNNN (a child of the
    sweep run) -> objective (held-out loss, key facts on the dev set, or the judge on the
    golden set) -> Optuna storage

With the held-out loss as objective, each epoch's loss is reported to Optuna's MedianPruner,
which stops a trial that is already worse than the median of the complete ones at that epoch.

The study lives in Optuna's storage (sqlite `optuna.db` in the project, or a shared database
for several workers), so running the command again adds `sweep.n_trials` more trials to it. A
trial whose worker died is failed by Optuna's heartbeat check and retried once under its old
run name, so training resumes from its checkpoint. Trials are comparable only on the same
training data, base model and objective: the study remembers those and refuses to mix.

The sweep only finds settings; promoting is still the registry gate's job:
`opensem evaluate --adapter <best run>` then `opensem promote`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from typing import Any

import yaml
from rich.console import Console

from opensem.config import Config, SearchDim, with_overrides
from opensem.errors import OpenSEMError
from opensem.io import sha256_file
from opensem.tags import TAG_STUDY, TAG_TRIAL
from opensem.workspace import Sem

console = Console(stderr=True)
out = Console(soft_wrap=True)

DIRECTION = {"eval_loss": "minimize", "judge": "maximize", "dev": "maximize"}


def run(sem: Sem, cfg: Config) -> dict:
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    from opensem import tracking

    s = cfg.sweep
    _check_space(cfg)
    study_name = s.study_name or f"opensem-{sem.name}"
    identity = _identity(sem, cfg)
    url = s.storage or f"sqlite:///{sem.root / 'optuna.db'}"
    expanded = _expand(url)
    with tracking.sqlite_creation_lock(expanded):  # RDBStorage creates the tables of a new database
        storage = RDBStorage(expanded, heartbeat_interval=s.heartbeat_s,
                             heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # we print one line per trial instead
    pruning = s.objective == "eval_loss" and s.prune_after_trials is not None
    # Optuna keeps no pruner in storage: each run of the command (and each worker) passes its own
    pruner = optuna.pruners.MedianPruner(n_startup_trials=s.prune_after_trials) if pruning else optuna.pruners.NopPruner()
    study = optuna.create_study(study_name=study_name, storage=storage, direction=DIRECTION[s.objective],
                                pruner=pruner, load_if_exists=True)
    _claim(study, identity)
    study.sampler = optuna.samplers.TPESampler(seed=_sampler_seed(cfg, len(study.trials)))

    _warn_if_cores_oversubscribed()
    console.print(f"[bold]sweep[/bold] {sem.name}: study {study_name} ({len(study.trials)} trials so far) in {url}, "
                  f"{s.n_trials} more, objective {s.objective} ({DIRECTION[s.objective]})"
                  + (f", pruning after {s.prune_after_trials} complete trials" if pruning else ""))
    with tracking.stage_run(sem, "sweep", cfg, tags={TAG_STUDY: study_name}) as tracked:
        tracked.log_params({"sweep.study_identity": json.dumps(identity)})

        def objective(trial) -> float:
            return _trial(sem, cfg, study_name, trial, pruning)

        study.optimize(objective, n_trials=s.n_trials, catch=(RuntimeError,))
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not done:
            raise OpenSEMError(f"no trial of study {study_name} finished; see the failed trials' runs in MLflow")
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
        best = study.best_trial
        best_run = best.user_attrs["run_name"]
        tracked.log_metrics({"best_value": best.value, "best_trial": best.number, "trials_complete": len(done),
                             "trials_pruned": pruned})
        tracked.log_params({f"best.{k}": v for k, v in best.params.items()} | {"best.run_name": best_run})
        tracked.log_text(_trials_table(study), "sweep/trials.json")

    sets = " ".join(f"--set {k}={v}" for k, v in best.params.items())
    out.print(f"best: trial {best.number} ({best_run}), {s.objective} {best.value:.4f}, of {len(done)} complete trials"
              + (f" ({pruned} pruned)" if pruned else ""))
    out.print(f"  its settings:  {sets}")
    out.print(f"  next:          opensem evaluate --sem {sem.name} --adapter {best_run} && opensem promote --sem {sem.name}")
    return {"study": study_name, "best_trial": best.number, "best_value": best.value, "best_params": best.params,
            "best_run_name": best_run, "trials_complete": len(done), "trials_pruned": pruned}


def _trial(sem: Sem, cfg: Config, study_name: str, trial, pruning: bool) -> float:
    """Train with the proposed values (and judge, for that objective); the value Optuna records.
    With pruning, each epoch's held-out loss is reported and a losing trial stops early."""
    import optuna

    from opensem.judge.evaluate import run_eval
    from opensem.train.stage import run as train

    def should_stop(eval_loss: float, epoch: int) -> bool:
        trial.report(eval_loss, epoch)
        return trial.should_prune()

    values = {key: _suggest(trial, key, dim) for key, dim in cfg.sweep.space.items()}
    # a retried trial inherits its failed original's user attrs, so it resumes that run's checkpoint
    run_name = trial.user_attrs.get("run_name") or f"{study_name}-t{trial.number:03d}"
    trial.set_user_attr("run_name", run_name)
    trial_cfg = with_overrides(cfg, values | {"training.run_name": run_name}, "sweep.space")
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
    console.print(f"[bold]trial {trial.number}[/bold] ({run_name}): {shown}")

    metadata = _finished_metadata(sem, run_name, trial_cfg) or train(sem, trial_cfg, should_stop if pruning else None,
                                                                      title=f"{study_name} · trial {trial.number}")
    _tag_run(metadata["mlflow_run_id"], study_name, trial.number)
    if metadata.get("stopped_early_at_epoch") is not None:
        epoch = metadata["stopped_early_at_epoch"]
        console.print(f"  trial {trial.number}: pruned after epoch {epoch}, held-out loss {metadata['eval_loss']:.4f} "
                      "is worse than the median of the complete trials there")
        raise optuna.TrialPruned(f"after epoch {epoch}")
    adapter = run_name
    if trial_cfg.preference.enabled:  # the trial's adapter is the preference one, trained over this SFT adapter
        adapter = _preference_adapter(sem, trial_cfg, run_name)
    if cfg.sweep.objective == "eval_loss":
        if metadata.get("eval_loss") is None:
            raise OpenSEMError(f"sweep.objective=eval_loss needs held-out pairs in {sem.processed_dir / 'test.jsonl'}; "
                               "run `opensem forge` or use --set sweep.objective=judge")
        value = float(metadata["eval_loss"])
    elif cfg.sweep.objective == "dev":
        import mlflow

        from opensem.judge import dev

        value = dev.accuracy(sem, trial_cfg, adapter)
        mlflow.MlflowClient().log_metric(metadata["mlflow_run_id"], "dev_key_fact_recall", value)
    else:
        result = run_eval(sem, trial_cfg, "evaluate", adapter=adapter)
        _tag_run(result.run_id, study_name, trial.number)
        value = float(result.metrics["key_fact_recall"])  # what the registry gate needs a gain in
    console.print(f"  trial {trial.number}: {cfg.sweep.objective} {value:.4f}")
    return value


def _preference_adapter(sem: Sem, cfg: Config, sft: str) -> str:
    """The preference stage over a trial's SFT adapter (preference.* may be in sweep.space); a
    retried trial finds it finished and takes it as it is."""
    from opensem.preference import run as prefer

    name = f"{sft}-pref"
    if not (sem.adapters_dir / name / "training_metadata.json").is_file():
        prefer(sem, with_overrides(cfg, {"preference.run_name": name}, "sweep"), adapter=sft)
    return name


def _sampler_seed(cfg: Config, trials_so_far: int) -> int:
    """New for each worker process: a resumed study, or a second worker on the same study (on
    another machine or this one), must not propose the same values again."""
    key = f"{cfg.training.seed}:{trials_so_far}:{socket.gethostname()}:{os.getpid()}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")


def _suggest(trial, key: str, dim: SearchDim) -> Any:
    if dim.type == "categorical":
        return trial.suggest_categorical(key, dim.choices)
    if dim.type == "int":
        return trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log)
    return trial.suggest_float(key, dim.low, dim.high, log=dim.log)


def _check_space(cfg: Config) -> None:
    """Every key in sweep.space must be a config key that accepts the space's values: fail before
    the first trial rather than in the middle of the study."""
    if not cfg.sweep.space:
        raise OpenSEMError("sweep.space is empty: add keys to search, e.g. training.learning_rate (see opensem/config.py)")
    for key, dim in cfg.sweep.space.items():
        if key in ("training.run_name", "preference.run_name"):
            raise OpenSEMError(f"sweep.space cannot search {key}: each trial names its own run")
    preference = cfg.preference.enabled or any(k.startswith("preference.") for k in cfg.sweep.space)
    if preference and not cfg.preference.enabled:
        raise OpenSEMError("sweep.space searches preference.* but preference.enabled is false: --set preference.enabled=true")
    if preference and cfg.sweep.objective == "eval_loss":
        raise OpenSEMError("a trial with preference training is scored on its preference adapter, whose held-out loss is "
                           "DPO's, not comparable with an SFT one: --set sweep.objective=dev (or judge)")
    for key, dim in cfg.sweep.space.items():
        for value in (dim.choices if dim.type == "categorical" else [dim.low, dim.high]):
            with_overrides(cfg, {key: int(value) if dim.type == "int" else value}, "sweep.space")


def _identity(sem: Sem, cfg: Config) -> dict:
    """What must be the same for two trials' values to be compared."""
    train_file, test_file = sem.processed_dir / "train.jsonl", sem.processed_dir / "test.jsonl"
    if not train_file.is_file():
        raise OpenSEMError(f"no training data for {sem.name} ({train_file}): run `opensem forge --sem {sem.name}` first")
    identity = {"objective": cfg.sweep.objective, "base_model": cfg.model.base, "train_data": sha256_file(train_file)[:16],
                "held_out": sha256_file(test_file)[:16] if test_file.is_file() else None}
    if cfg.sweep.objective == "judge":
        from opensem.golden import golden_digest, load_golden
        from opensem.judge.evaluate import find_baseline, judge_name, prompt_digest

        identity |= {"golden": golden_digest(load_golden(sem.golden_set)), "judge": judge_name(cfg), "prompt": prompt_digest(cfg),
                     "judge_metric": "key_fact_recall"}
        find_baseline(sem, cfg, identity["golden"], identity["judge"])  # each trial's evaluation needs it: fail now, not after training
    if cfg.sweep.objective == "dev":
        from opensem.golden import golden_digest
        from opensem.judge.dev import load_dev_set
        from opensem.judge.evaluate import answered_on, prompt_digest

        identity |= {"dev": golden_digest(load_dev_set(sem)), "prompt": prompt_digest(cfg), "answered_on": answered_on(cfg)}
    return identity


def _claim(study, identity: dict) -> None:
    """Stamp a new study with what its trials are measured on; refuse an existing one measured
    on something else."""
    stamped = study.user_attrs.get("identity")
    if stamped is None:
        study.set_user_attr("identity", identity)
        return
    differs = sorted(k for k in set(stamped) | set(identity) if stamped.get(k) != identity.get(k))
    if differs:
        raise OpenSEMError(f"study {study.study_name} was measured with other {', '.join(differs)}; its trials are not "
                           f"comparable with new ones: name a new study with --set sweep.study_name=...")


def _finished_metadata(sem: Sem, run_name: str, trial_cfg: Config) -> dict | None:
    """A retried trial whose training had finished before its worker died: reuse, do not retrain."""
    path = sem.adapters_dir / run_name / "training_metadata.json"
    if not path.is_file():
        return None
    trained = yaml.safe_load((path.parent / "resolved_config.yaml").read_text())
    wanted = trial_cfg.model_dump(mode="json")
    if any(trained.get(section) != wanted[section] for section in ("model", "lora", "training")):
        raise OpenSEMError(f"{path.parent} was trained with other settings (a study of the same name that was deleted?); "
                           "name a new study with --set sweep.study_name=... or remove that folder")
    return json.loads(path.read_text())


def _tag_run(run_id: str, study_name: str, number: int) -> None:
    import mlflow

    client = mlflow.MlflowClient()
    client.set_tag(run_id, TAG_STUDY, study_name)
    client.set_tag(run_id, TAG_TRIAL, str(number))


def _trials_table(study) -> str:
    rows = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
             "run_name": t.user_attrs.get("run_name")} for t in study.trials]
    return json.dumps(rows, indent=2)


_SWEEP_COMMAND = re.compile(r"(?:\bopensem\S*\s+sweep|entrypoints/sweep\.py)\b")


def other_workers_here() -> int:
    """Other `opensem sweep` processes on this machine (any user, any way started)."""
    import psutil

    me, count = os.getpid(), 0
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["pid"] != me and _SWEEP_COMMAND.search(cmdline):
            count += 1
    return count


def _warn_if_cores_oversubscribed() -> None:
    """Each torch takes every core: measured on 2 cores, four workers side by side ran 4x slower
    than one alone, and at one worker's speed with OMP_NUM_THREADS=1 each (README, team set-up)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return
    others = other_workers_here()
    if others:
        share = max(1, (os.cpu_count() or 1) // (others + 1))
        console.print(f"[yellow]warning:[/yellow] {others} other sweep worker(s) run on this machine and each would use all "
                      f"{os.cpu_count()} cores: start every worker with OMP_NUM_THREADS={share} (cores / workers)")


def _expand(url: str) -> str:
    """${VARIABLE}s in the storage URL (a password: see SweepConfig.storage), filled in only here."""
    missing = [name for name in re.findall(r"\$\{(\w+)\}", url) if name not in os.environ]
    if missing:
        raise OpenSEMError(f"sweep.storage uses ${{{missing[0]}}}, which is not set: export {missing[0]}=...")
    return os.path.expandvars(url)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
