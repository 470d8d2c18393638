"""A real HTTP request to the served champion returns an answer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from opensem.cli import app
from opensem.config import load_config
from opensem.train import run as train
from opensem.workspace import new_sem

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("bundled_model_dir")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_over_http_with_the_champion(project, tmp_path):
    sem = new_sem("srv")
    sem.processed_dir.mkdir(parents=True)
    row = {"messages": [{"role": "user", "content": "What colour is a Zorblat?"}, {"role": "assistant", "content": "A Zorblat is teal."}]}
    (sem.processed_dir / "train.jsonl").write_text(json.dumps(row) + "\n")
    cfg = load_config(sem.root, "srv", ["training.max_steps=12", "training.batch_size=1", "training.cpt_epochs=0", "training.learning_rate=2e-3",
                                        "training.lr_scheduler=constant", "training.warmup_ratio=0", "model.system_prompt=Answer briefly."])
    result = train(sem, cfg)

    missing = CliRunner().invoke(app, ["serve", "--sem", "srv"])
    assert missing.exit_code == 2 and "no version with alias 'champion'" in missing.output

    version = mlflow.register_model(result["model_uri"], "opensem-srv").version
    MlflowClient().set_registered_model_alias("opensem-srv", "champion", version)
    port = free_port()
    env = dict(os.environ, OPENSEM_HOME=str(sem.root))
    server = subprocess.Popen([sys.executable, "-m", "opensem", "serve", "--sem", "srv", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()[-2000:]
                time.sleep(0.5)
        body = json.dumps({"dataframe_records": [{"question": "What colour is a Zorblat?"}], "params": {"max_new_tokens": 12}})
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=120).read())["predictions"][0]
        assert "teal" in answer.lower(), answer
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)


def test_the_logged_expert_is_portable(project, tmp_path, monkeypatch):
    """The registered model holds the adapter and nothing else, names no path of the machine that
    trained it, pins its requirements, and loads and answers elsewhere: downloaded into another
    folder, with the training project moved away, from a folder that is no project."""
    sem = new_sem("port")
    sem.processed_dir.mkdir(parents=True)
    row = {"messages": [{"role": "user", "content": "What colour is a Zorblat?"}, {"role": "assistant", "content": "A Zorblat is teal."}]}
    (sem.processed_dir / "train.jsonl").write_text(json.dumps(row) + "\n")
    cfg = load_config(sem.root, "port", ["training.max_steps=12", "training.batch_size=1", "training.cpt_epochs=0", "training.learning_rate=2e-3",
                                         "training.lr_scheduler=constant", "training.warmup_ratio=0", "model.system_prompt=Answer briefly.",
                                         "training.checkpoint_steps=4", "training.run_name=p1"])
    result = train(sem, cfg)
    version = mlflow.register_model(result["model_uri"], "opensem-port").version
    MlflowClient().set_registered_model_alias("opensem-port", "candidate", version)

    elsewhere = tmp_path / "elsewhere"
    logged = mlflow.artifacts.download_artifacts("models:/opensem-port@candidate", dst_path=str(elsewhere / "model"))
    from pathlib import Path

    logged = Path(logged)
    adapter_dir = sem.adapters_dir / "p1"
    assert (adapter_dir / "checkpoints").is_dir()  # the run kept checkpoints; the logged model does not
    adapter_bytes = sum(p.stat().st_size for p in adapter_dir.iterdir() if p.is_file())
    logged_bytes = sum(p.stat().st_size for p in logged.rglob("*") if p.is_file())
    assert logged_bytes < 1.5 * adapter_bytes, (logged_bytes, adapter_bytes)
    assert not any("checkpoint" in str(p.relative_to(logged)) for p in logged.rglob("*"))
    machine = str(project)
    for path in logged.rglob("*"):
        if path.is_file() and path.suffix in ("", ".json", ".yaml", ".txt", ".jinja"):
            text = path.read_text(errors="ignore")
            if path.name == "MLmodel":  # its artifact_path is MLflow's record of where its store keeps the model
                text = "\n".join(line for line in text.splitlines() if not line.startswith("artifact_path:"))
            assert machine not in text, f"{path.name} names {machine}"
    requirements = (logged / "requirements.txt").read_text().split()
    assert requirements and all("==" in r for r in requirements) and not any(r.startswith("opensem") for r in requirements)

    # the training project is gone; the model loads from its own folder, run from a folder that is no project
    moved = project.rename(tmp_path / "moved-away")
    (elsewhere / "models").mkdir()
    os.symlink(moved / "models" / "base", elsewhere / "models" / "base")  # the bundled base, built once per machine
    monkeypatch.delenv("OPENSEM_HOME")
    monkeypatch.chdir(elsewhere)
    import pandas as pd

    answer = mlflow.pyfunc.load_model(str(logged)).predict(pd.DataFrame({"question": ["What colour is a Zorblat?"]}),
                                                           params={"max_new_tokens": 12})[0]
    assert "teal" in answer.lower(), answer
