"""`python -m bench outcome_task` (`make check-outcome-task`): sky/outcome.yaml's run step on
this machine, before anyone pays for a cloud GPU.

vLLM needs a GPU, so llama-cpp-python's server on the bundled GGUF (SmolLM2-135M-Instruct) stands
in for it: a small script takes `vllm serve MODEL --host H --port P --max-model-len N` and
starts `python -m llama_cpp.server` with the same address. Everything else is the task's own
sky/outcome.sh in a copy of the project (bench/, sky/, configs/, evals/, legal's documents), so
your data/ is not touched: the served teacher forges legal's pairs, the server is stopped, and
`python -m bench outcome legal --seeds 42` trains and judges, its forge answered from the
teacher's cache. Printed: the requests the forge sent, whether the bench's run came through
with the server stopped (its forge can only have answered from the cache), and its row. A 135M teacher writes few and
poor pairs: this checks that the task's steps fit together, not what a 7B teacher gives.
About 9 minutes on 2 cores, after `make check-llama-server`'s venv (.venv-llama) exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import ROOT, bundled_gguf, free_port, llama_server_python

# What the task's `vllm serve` call becomes: the same port, llama.cpp's server, the bundled GGUF.
SHIM = """#!/usr/bin/env bash
while [ $# -gt 0 ]; do
  case "$1" in --host) host="$2";; --port) port="$2";; --max-model-len) ctx="$2";; esac; shift
done
exec {server_python} -m llama_cpp.server --model {gguf} --host "$host" --port "$port" --n_ctx "$ctx"
"""
# llama.cpp's server answers one request at a time and a 135M model needs no long replies
OVERRIDES = "forge.teacher.max_tokens=400 forge.teacher.max_concurrency=1 forge.teacher.timeout_s=300"


def main(args: list[str] | None = None) -> None:
    server_python = llama_server_python()
    if not server_python.exists():  # a set-up step missing: exit 2, as for bad input
        print(f"error: no llama-cpp-python at {server_python}: run `make check-outcome-task` (it builds .venv-llama)", file=sys.stderr)
        sys.exit(2)
    gguf = bundled_gguf()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "project"
        for folder in ("bench", "sky", "configs", "evals", "data/legal/raw"):
            shutil.copytree(ROOT / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
        (ROOT / "models" / "base").mkdir(parents=True, exist_ok=True)
        (work / "models").mkdir()
        os.symlink(ROOT / "models" / "base", work / "models" / "base")
        shim = work / "vllm"
        shim.write_text(SHIM.format(server_python=server_python, gguf=gguf))
        shim.chmod(0o755)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_RUN", "MLFLOW_EXPERIMENT"))}
        env |= {"PATH": f"{Path(sys.executable).parent}:{env['PATH']}", "OPENSEM_HOME": str(work),
                "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "MLFLOW_DISABLE_TELEMETRY": "true",
                "VLLM": str(shim), "TEACHER_MODEL": "smollm2-135m", "TEACHER_PORT": str(port), "TEACHER_MAX_LEN": "4096",
                "SEMS": "legal", "SEEDS": "42", "OVERRIDES": OVERRIDES}
        done = subprocess.run(["bash", "sky/outcome.sh"], cwd=work, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"sky/outcome.sh failed ({done.returncode}): {done.stderr[-2000:]}")
        manifest = json.loads((work / "data" / "legal" / "processed" / "manifest.json").read_text())
        rows = [line for line in (work / "outcome" / "outcome.md").read_text().splitlines() if line.startswith("| legal |")]
        print(f"forge with the served teacher: {manifest['requests']} requests, {manifest['pairs_kept']} pairs kept "
              f"({manifest['teacher_response_format']})")
        # the server is stopped before the bench starts, so a bench forge that asked it would fail its row
        ok = rows and not any("failed" in line for line in rows)
        print(f"bench after the server stopped, its forge answered from the teacher cache: {'ok' if ok else 'FAILED'}")
        print("\n".join(rows) or done.stdout[-2000:])


if __name__ == "__main__":
    main(sys.argv[1:])
