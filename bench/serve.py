"""`python -m bench serve [SEM] [--requests N]`: requests/s and latency of `opensem serve` at 1, 4
and 16 concurrent clients, OpenAI's chat endpoint beside MLflow's /invocations, in one run.

In a throw-away copy of the project, an adapter of the bundled model is trained for one step on
one row with the SEM's open book (its documents; what is measured is serving, not what the
adapter knows), registered as the champion and served by `opensem serve` in its own process.
Clients (threads) then ask the SEM's golden questions, each client one request at a time:
through the `openai` SDK (`/v1/chat/completions`, answers capped at 32 tokens) and as MLflow
`dataframe_records` (`/invocations`, the same cap). Printed per route and concurrency:
requests/s, p50 and p95 latency in seconds. The server answers one request at a time, so
requests/s should stay flat as clients are added while latency grows with the queue. Timings are
from this machine; compare routes and concurrencies within one run (say which CPU: `lscpu`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CONCURRENCY = (1, 4, 16)
MAX_TOKENS = 32


def champion(root: Path, sem_name: str) -> None:
    """A one-step adapter of the SEM, registered and aliased champion in root's MLflow store."""
    import mlflow
    from mlflow import MlflowClient

    from opensem.config import load_config
    from opensem.train import run as train
    from opensem.workspace import open_sem

    sem = open_sem(sem_name, root)
    question = json.loads(sem.golden_set.read_text(encoding="utf-8"))["items"][0]["question"]
    sem.processed_dir.mkdir(parents=True, exist_ok=True)
    row = {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": "An answer."}]}
    (sem.processed_dir / "train.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    cfg = load_config(root, sem_name, ["training.max_steps=1", "training.cpt_epochs=0", "training.run_name=bench-serve"])
    result = train(sem, cfg)
    name = f"{cfg.registry.model_prefix}{sem_name}"
    version = mlflow.register_model(result["model_uri"], name).version
    MlflowClient().set_registered_model_alias(name, "champion", version)


def started(root: Path, sem_name: str, port: int) -> subprocess.Popen:
    env = dict(os.environ, OPENSEM_HOME=str(root), MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow.db")
    server = subprocess.Popen([sys.executable, "-m", "opensem", "serve", "--sem", sem_name, "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
            return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"error: opensem serve stopped: {server.stderr.read()[-1000:]}")
            time.sleep(0.5)
    raise SystemExit("error: opensem serve did not answer /ping within 300 s")


def measure(ask, questions: list[str], clients: int, requests: int) -> dict:
    """requests/s and latency percentiles of `requests` questions asked by `clients` threads."""
    latencies: list[float] = []

    def timed(question: str) -> None:
        start = time.perf_counter()
        ask(question)
        latencies.append(time.perf_counter() - start)

    asked = [questions[i % len(questions)] for i in range(requests)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(timed, asked))
    wall = time.perf_counter() - start
    latencies.sort()
    return {"rps": requests / wall, "p50": latencies[len(latencies) // 2], "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]}


def main(args: list[str] | None = None) -> None:
    import openai
    from rich.console import Console
    from rich.table import Table

    from bench.common import free_port, project_copy

    args = list(args or [])
    requests = int(args[args.index("--requests") + 1]) if "--requests" in args else 32
    sem_name = next((a for a in args if not a.startswith("--") and not a.isdigit()), "legal")
    with tempfile.TemporaryDirectory() as tmp:
        root = project_copy(Path(tmp), sem_name)
        os.environ.update(OPENSEM_HOME=str(root), MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow.db")
        champion(root, sem_name)
        from opensem.workspace import open_sem

        sem = open_sem(sem_name, root)
        questions = [i["question"] for i in json.loads(sem.golden_set.read_text(encoding="utf-8"))["items"]]
        port = free_port()
        server = started(root, sem_name, port)
        try:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)

            def chat(question: str) -> None:
                client.chat.completions.create(model=f"opensem-{sem_name}", max_tokens=MAX_TOKENS,
                                               messages=[{"role": "user", "content": question}])

            def invocations(question: str) -> None:
                body = json.dumps({"dataframe_records": [{"question": question}], "params": {"max_new_tokens": MAX_TOKENS}})
                request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body.encode(),
                                                 headers={"Content-Type": "application/json"})
                urllib.request.urlopen(request, timeout=600).read()

            chat(questions[0])  # warm-up: the first generation pays for lazy initialisation
            table = Table(title=f"opensem serve, {sem_name}: {requests} requests per row, answers of at most {MAX_TOKENS} tokens")
            for column in ("route", "clients", "requests/s", "p50 s", "p95 s"):
                table.add_column(column, justify="left" if column == "route" else "right")
            for route, ask in (("/v1/chat/completions", chat), ("/invocations", invocations)):
                for clients in CONCURRENCY:
                    m = measure(ask, questions, clients, max(requests, clients))
                    table.add_row(route, str(clients), f"{m['rps']:.2f}", f"{m['p50']:.2f}", f"{m['p95']:.2f}")
            Console().print(table)
        finally:
            os.killpg(server.pid, 15)
            server.wait(30)


if __name__ == "__main__":
    main(sys.argv[1:])
