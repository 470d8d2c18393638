"""Peak resident memory of each stage of the demo's pipeline, and of the pipeline as one process.

    python -m bench memory              # legal, each stage in its own process, then the pipeline (~20 min on 2 cores)
    python -m bench memory sqlite
    python -m bench memory --stages     # the stages only
    python -m bench memory --set generation.batch_size=4   # an override for every command

A project copy of the SEM (bench.common.project_copy); `opensem forge`, `baseline`, `train`,
`evaluate`, `promote` and `report` run one after the other, each in its own process, as a user
would type them, and then (unless --stages) `opensem pipeline` in a fresh copy, as `make demo`
runs it: one process for every stage, so what one stage leaves in memory counts for the next.
Printed per command: seconds and peak resident set size (the kernel's high-water mark for the
process, ru_maxrss of the finished child), and whether it is within the 4 GB an 8 GB laptop can
spare (issue 48's target). Results: docs/measurements/memory.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import project_copy

TARGET_GB = 4.0
STAGES = ["forge", "baseline", "train", "evaluate", "promote", "report"]

# Runs in a child process: the command, then its peak RSS. RUSAGE_CHILDREN's ru_maxrss is the
# largest of the children waited for, so a fresh wrapper per command measures that command alone.
MEASURE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, done.returncode)
"""


def measured(command: list[str], project: Path, log: Path) -> tuple[float, float]:
    """(seconds, peak RSS in GB) of one command run in `project`; its output goes to `log`."""
    env = dict(os.environ, OPENSEM_HOME=str(project), MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}")
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, "-c", MEASURE, *command], cwd=project, env=env, stdout=subprocess.PIPE,
                              stderr=out, text=True)
    seconds = time.perf_counter() - start
    peak_kib, rc = done.stdout.strip().splitlines()[-1].split()
    if int(rc) != 0:
        raise SystemExit(f"{' '.join(command[2:])} failed (exit {rc}); its output: {log}")
    scale = 1024**2 if sys.platform != "darwin" else 1024**3
    return seconds, int(peak_kib) / scale


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("sem", nargs="?", default="legal")
    parser.add_argument("--stages", action="store_true", help="the stages in their own processes only, not the pipeline")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="a config override for every command")
    args = parser.parse_args(argv or [])
    sets = sum((["--set", s] for s in args.sets), [])
    opensem = [sys.executable, "-m", "opensem"]
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        project = project_copy(Path(tmp) / "stages", args.sem)
        logs = Path(tmp) / "logs"
        logs.mkdir()
        for stage in STAGES:
            extra = sets if stage not in ("promote", "report") else []
            seconds, peak = measured([*opensem, stage, "--sem", args.sem, *extra], project, logs / f"{stage}.log")
            rows.append((stage, seconds, peak))
            print(f"  {stage}: {seconds:.0f} s, peak {peak:.2f} GB", flush=True)
        if not args.stages:
            whole = project_copy(Path(tmp) / "pipeline", args.sem)
            seconds, peak = measured([*opensem, "pipeline", "--sem", args.sem, *sets], whole, logs / "pipeline.log")
            rows.append(("pipeline (one process)", seconds, peak))
            print(f"  pipeline: {seconds:.0f} s, peak {peak:.2f} GB", flush=True)

    print(f"\n{args.sem}{' ' + ' '.join(args.sets) if args.sets else ''}: peak resident memory per command")
    print(f"\n| command | seconds | peak RSS (GB) | within {TARGET_GB:g} GB |")
    print("| --- | --- | --- | --- |")
    for name, seconds, peak in rows:
        print(f"| {name} | {seconds:.0f} | {peak:.2f} | {'yes' if peak <= TARGET_GB else 'no'} |")


if __name__ == "__main__":
    main(sys.argv[1:])
