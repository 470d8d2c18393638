"""`python -m bench sweep_workers`: trials per hour, one sweep worker vs four on one shared study.

Starts the team services (`opensem infra up`: PostgreSQL + mlflow server) in a temporary folder,
forges the sample SEM once, then runs the same short study twice against them: one worker doing
N trials, and four workers started together doing N/4 each (`sweep.n_trials` is per worker).
Printed: wall minutes, trials per hour, and the checks that make the number mean something
(every trial COMPLETE, no run name twice, every trial a nested run in the shared MLflow).

Four workers on one machine share its cores, so on a 2-core machine they cannot be 4x faster;
the figure that matters for a cloud sweep (one worker per machine) is that the shared study adds
no loss or duplication and little overhead. Not part of `make bench`'s default set (about 10 min).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import free_port, project_copy

TRIALS = 4
# pruning off: every trial does the same work, so the rows compare like with like
TRIAL_SETTINGS = ["training.max_steps=20", "training.cpt_epochs=0", "training.batch_size=4", "sweep.heartbeat_s=10",
                  "sweep.prune_after_trials=null",
                  "sweep.space={training.learning_rate: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}, "
                  "lora.r: {type: categorical, choices: [4, 8, 16]}}"]


def _sweep(root: Path, env: dict, study: str, workers: int, storage: str) -> tuple[float, list[int]]:
    sets = TRIAL_SETTINGS + [f"sweep.study_name={study}", f"sweep.n_trials={TRIALS // workers}", f"sweep.storage={storage}"]
    cmd = [sys.executable, "-m", "opensem", "sweep", "--sem", "legal", *sum((["--set", s] for s in sets), [])]
    started = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(workers)]
    codes = [p.wait() for p in procs]
    for p, code in zip(procs, codes):
        if code != 0:
            print(f"  a worker failed ({code}): {p.stderr.read()[-500:]}")
    return (time.perf_counter() - started) / 60, codes


def _checks(infra, password: str, study: str) -> str:
    import optuna
    from mlflow import MlflowClient

    trials = optuna.load_study(study_name=study, storage=infra.storage_url(password=password)).trials
    names = [t.user_attrs.get("run_name") for t in trials]
    client = MlflowClient(tracking_uri=infra.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("opensem-legal").experiment_id],
                              filter_string=f"tags.`opensem.study` = '{study}' AND tags.`opensem.stage` = 'train'")
    nested = sum("mlflow.parentRunId" in r.data.tags for r in runs)
    complete = sum(t.state.name == "COMPLETE" for t in trials)
    return f"{complete}/{len(trials)} COMPLETE, {len(set(names))} distinct run names, {nested} nested train runs"


def main(args: list[str] | None = None) -> None:
    from opensem import infra as services

    with tempfile.TemporaryDirectory(prefix="opensem-bench-") as tmp:
        tmp = Path(tmp)
        tmp.chmod(0o755)  # as root, PostgreSQL runs as `postgres`, who must enter this folder
        infra = services.Infra(tmp / "team", free_port(), free_port())
        services.up(infra)
        try:
            password = infra.password_file.read_text().strip()
            root = project_copy(tmp, "legal")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_RUN", "MLFLOW_EXPERIMENT"))}
            env |= {"OPENSEM_HOME": str(root), "MLFLOW_TRACKING_URI": infra.tracking_uri, services.PASSWORD_ENV: password,
                    "MLFLOW_DISABLE_TELEMETRY": "true"}
            forged = subprocess.run([sys.executable, "-m", "opensem", "forge", "--sem", "legal"], cwd=root, env=env,
                                    capture_output=True, text=True)
            if forged.returncode != 0:
                raise SystemExit(f"forge failed: {forged.stderr[-500:]}")
            print(f"| workers | trials | wall minutes | trials per hour | checks |  ({os.cpu_count()} CPU cores, PostgreSQL study, mlflow server)")
            print("| --- | --- | --- | --- | --- |", flush=True)
            # four workers as they start by default (each torch takes every core), then with the
            # cores shared out (OMP_NUM_THREADS), as several workers on one machine should be run
            share = str(max(1, (os.cpu_count() or 1) // 4))
            for workers, threads in ((1, None), (4, None), (4, share)):
                study = f"bench-{workers}w-{threads or 'all'}"
                minutes, codes = _sweep(root, env | ({"OMP_NUM_THREADS": threads} if threads else {}), study, workers,
                                        infra.storage_url())
                rate = TRIALS / (minutes / 60)
                label = f"{workers}" + (f", OMP_NUM_THREADS={threads}" if threads else "")
                print(f"| {label} | {TRIALS} | {minutes:.1f} | {rate:.0f} | {_checks(infra, password, study)}"
                      f"{'' if not any(codes) else ', a worker FAILED'} |", flush=True)
        finally:
            services.down(infra)


if __name__ == "__main__":
    main(sys.argv[1:])
