"""`opensem train` as one process and as N torchrun processes, at the same effective batch.

    python -m bench distributed                       # 1 and 2 processes on this CPU (gloo), ~10 min on 2 cores
    python -m bench distributed --processes 1,2,4,8   # on a GPU node: one process per GPU (NCCL)
    python -m bench distributed --steps 12 --sem legal

The demo's rows (a project copy of the SEM, forged offline, open book), trained for the same
optimizer steps with the same effective batch (--batch rows per step, split evenly over the
processes), each run a real `opensem train` (through `python -m torch.distributed.run` above one
process). Printed for each process count: tokens/s (real, non-padding tokens, from the steps
after the first, as the train stage logs them), the speed-up over one process, the loss at the
last step and its largest gap to one process's loss at any step (the same rows meet in each
step, so the losses should agree), peak memory of rank 0, and the wall time of the command
(start-up included). On a CPU the processes share the same cores (torchrun gives each one
thread by default), so more processes cannot be faster there; the CPU rows check that the
multi-process path costs little, the GPU rows measure scaling. Results: docs/measurements/distributed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import project_copy


def _train(project: Path, sem: str, processes: int, batch: int, steps: int) -> dict:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m"]
                if processes > 1 else [sys.executable, "-m"])
    name = f"p{processes}"
    sets = [f"training.max_steps={steps}", f"training.batch_size={batch // processes}", "training.gradient_accumulation_steps=1",
            "training.logging_steps=1", "training.checkpoint_steps=100000", f"training.run_name={name}", "training.cpt_epochs=0",
            "training.keep_best=false", "training.compile=false"]
    env = dict(os.environ, OPENSEM_HOME=str(project), MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}")
    start = time.perf_counter()
    done = subprocess.run([*launcher, "opensem", "train", "--sem", sem, *sum((["--set", s] for s in sets), [])],
                          cwd=project, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{processes} processes: opensem train failed:\n{done.stderr[-3000:]}")
    metadata = json.loads((project / "models" / sem / "adapters" / name / "training_metadata.json").read_text())
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()

    def history(key: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(metadata["mlflow_run_id"], key), key=lambda m: m.step)]

    speeds = history("tokens_per_second")[1:]  # the first step carries the warm-up
    return {"processes": processes, "batch": batch // processes, "tokens_per_s": sum(speeds) / max(len(speeds), 1),
            "losses": history("loss"), "peak_memory_gb": max(history("peak_memory_gb") or [0.0]), "wall_s": wall}


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0] if Path("/proc/cpuinfo").is_file() else ""
    native = "native bf16 (avx512_bf16)" if "avx512_bf16" in flags or "amx_bf16" in flags else "no native bf16"
    return f"CPU, {len(os.sched_getaffinity(0))} cores, {native}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench distributed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,2", help="process counts to compare, the first is the reference (default 1,2)")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run (default 8)")
    parser.add_argument("--batch", type=int, default=8, help="rows per optimizer step over all processes (default 8)")
    parser.add_argument("--sem", default="legal", help="sample SEM whose forged rows are trained on (default legal)")
    args = parser.parse_args(argv or [])
    counts = [int(n) for n in args.processes.split(",")]
    if any(args.batch % n for n in counts):
        raise SystemExit(f"error: --batch {args.batch} does not split evenly over {counts} processes")

    with tempfile.TemporaryDirectory() as tmp:
        project = project_copy(Path(tmp), args.sem)
        env = dict(os.environ, OPENSEM_HOME=str(project), MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}")
        forged = subprocess.run([sys.executable, "-m", "opensem", "forge", "--sem", args.sem], cwd=project, env=env,
                                capture_output=True, text=True)
        if forged.returncode != 0:
            raise SystemExit(f"forge failed:\n{forged.stderr[-3000:]}")
        print(f"{args.sem}: {args.steps} steps of {args.batch} rows, {_device()}", flush=True)
        results = []
        for n in counts:
            results.append(_train(project, args.sem, n, args.batch, args.steps))
            r = results[-1]
            print(f"  {n} process{'es' if n > 1 else ''} done: {r['tokens_per_s']:.0f} tokens/s", flush=True)

    reference = results[0]
    print(f"\n| processes | rows per process | tokens/s | vs {counts[0]} | loss at step {args.steps} | largest loss gap | "
          f"peak memory, rank 0 (GB) | wall (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        gap = max((abs(a - b) for a, b in zip(r["losses"], reference["losses"])), default=float("nan"))
        print(f"| {r['processes']} | {r['batch']} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / reference['tokens_per_s']:.2f}x | "
              f"{r['losses'][-1]:.3f} | {gap:.3f} | {r['peak_memory_gb']:.1f} | {r['wall_s']:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
