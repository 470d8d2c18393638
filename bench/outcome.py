"""`python -m bench outcome [SEM ...]`: does the default pipeline make a better expert, per sample SEM?

Each SEM (legal, written for this project; debian-policy and sqlite, documentation that Debian
ships) runs `opensem pipeline` with every default, in a fresh copy of the project with its own
MLflow store, in a subprocess, as a user would. Printed per SEM: key-fact accuracy baseline ->
fine-tuned with the paired 95% interval, the shuffled and echo controls, the forge's yield
(pairs per KB of text), the registry gate's decision, and minutes.

Target (issue 12): on every SEM a key-fact gain of at least +10 points with its interval above 0,
and the gate promotes. Takes about 5 minutes a SEM on 2 cores; not part of `make bench`'s default set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import project_copy

ROOT = Path(__file__).resolve().parents[1]
SEMS = ["legal", "debian-policy", "sqlite"]
TARGET_POINTS = 10


def measure(sem: str, overrides: list[str] = ()) -> dict:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        root = project_copy(Path(tmp), sem)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        env = {**os.environ, "OPENSEM_HOME": str(root), "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
        env = {k: v for k, v in env.items() if not k.startswith(("MLFLOW_RUN", "MLFLOW_EXPERIMENT"))}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "opensem", "pipeline", "--sem", sem, *overrides], cwd=root, env=env,
                              capture_output=True, text=True)
        minutes = (time.perf_counter() - started) / 60
        if done.returncode != 0:
            return {"sem": sem, "error": (done.stderr or done.stdout).strip().splitlines()[-1:], "minutes": minutes}
        mlflow.set_tracking_uri(uri)
        runs = {r.data.tags.get("opensem.stage"): r for r in mlflow.search_runs(experiment_names=[f"opensem-{sem}"], output_format="list")}
        base, tuned, promote = runs["baseline"].data.metrics, runs["evaluate"].data.metrics, runs["promote"].data.tags
        trained = runs["train"].data.metrics
        manifest = json.loads((root / "data" / sem / "processed" / "manifest.json").read_text())
        # the fine-tuned model's answers, to read after the project copy is gone
        kept = Path(tempfile.gettempdir()) / "opensem-outcome" / f"{sem}-report.md"
        kept.parent.mkdir(exist_ok=True)
        shutil.copy(root / "reports" / sem / "report.md", kept)
        return {
            "sem": sem, "minutes": minutes, "pairs_per_kb": manifest.get("pairs_per_kb"), "pairs": manifest["pairs_kept"],
            "baseline": base["key_fact_recall"], "tuned": tuned["key_fact_recall"], "gain": tuned["recall_gain"],
            "low": tuned["recall_gain_ci_low"], "high": tuned["recall_gain_ci_high"],
            "shuffled_pass": tuned.get("shuffled_pass_rate"), "echo_mean": tuned.get("echo_mean"),
            "unreliable": runs["evaluate"].data.tags.get("opensem.judge_unreliable"), "decision": promote.get("opensem.decision"),
            # held-out loss on the forge's test pairs (chunks no training pair came from): a
            # development measure that does not look at the golden set
            "eval_loss": trained.get("eval_loss_final"), "report": str(kept),
            "complete": tuned.get("complete_answer_share"), "short": tuned.get("short_answer_share"),
        }


def main(args: list[str] | None = None) -> list[dict]:
    """args: SEM names (default: all three) and `--set KEY=VALUE` overrides for every pipeline."""
    args = list(args or [])
    overrides = [a for i, a in enumerate(args) if a == "--set" or (i and args[i - 1] == "--set")]
    sems = [a for a in args if a not in overrides] or SEMS
    results = []
    print("| SEM | key-fact accuracy | gain (95% CI) | controls: shuffled pass, echo mean | pairs per KB | held-out loss | answers: complete, <= 2 sentences | gate | minutes | target |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for sem in sems:
        r = measure(sem, overrides)
        results.append(r)
        print(_row(r), flush=True)
    print(f"overrides: {' '.join(overrides) or 'none'}; the fine-tuned models' answers: {Path(tempfile.gettempdir()) / 'opensem-outcome'}")
    return results


def _row(r: dict) -> str:
    if "error" in r:
        return f"| {r['sem']} | failed: {r['error']} | | | | | | | {r['minutes']:.1f} | no |"
    met = r["low"] > 0 and 100 * r["gain"] >= TARGET_POINTS and r["decision"] == "promoted"
    return (f"| {r['sem']} | {r['baseline']:.0%} -> {r['tuned']:.0%} | {100 * r['gain']:+.0f} points [{100 * r['low']:+.0f}, {100 * r['high']:+.0f}] "
            f"| {r['shuffled_pass']:.0%}, {r['echo_mean']:.2f}{' (judge unreliable)' if r['unreliable'] == 'true' else ''} "
            f"| {r['pairs_per_kb']} ({r['pairs']} pairs) | {r['eval_loss']:.3f} | {r['complete']:.0%}, {r['short']:.0%} | {r['decision']} | {r['minutes']:.1f} | {'met' if met else 'not met'} |")


if __name__ == "__main__":
    main(sys.argv[1:] or None)
