"""`opensem infra`: a real PostgreSQL and a real `mlflow server` started by the command, then the
pipeline, the registry and two sweep workers (one killed with -9) run against them, and the
database password is nowhere it should not be."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from opensem.infra import Infra, pg_bin
from opensem.workspace import new_sem

pytestmark = [pytest.mark.slow]

DOC = """# Widgets

## Colours

A **Zorblat** is a teal widget. A **Frobnit** is an orange widget. Zorblats are sold in boxes of twelve.

## Sizes

The largest widget weighs 400 grams. Widget makers formed a guild in 1950.
"""
GOLDEN = {"items": [
    {"id": "w1", "question": "What colour is a Zorblat widget?", "answer": "Teal.", "key_facts": ["teal"]},
    {"id": "w2", "question": "When did the widget makers form their guild?", "answer": "In 1950.", "key_facts": ["1950"]},
]}
PLANTED = {"OPENAI_API_KEY": "sk-PLANTEDteamopenai4d1", "ANTHROPIC_API_KEY": "sk-ant-PLANTEDteamanthropic8e",
           "WANDB_API_KEY": "PLANTEDteamwandb" + "7" * 24}
FAST = ["model.system_prompt=Answer briefly.", "generation.max_new_tokens=12", "training.max_steps=4", "training.batch_size=4",
        "training.logging_steps=1", "training.cpt_epochs=0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def opensem(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "opensem", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def services():
    """`opensem infra up` once for this file; `down` after it. The folder is one that the
    `postgres` user can enter (as root, PostgreSQL runs as that user)."""
    try:
        pg_bin("initdb")
    except Exception as exc:  # noqa: BLE001 - the message says what to install
        pytest.skip(str(exc))
    top = Path(tempfile.mkdtemp(prefix="opensem-infra-"))
    top.chmod(0o755)
    infra = Infra(top / "team", _free_port(), _free_port())
    ports = ["--dir", str(infra.dir), "--pg-port", str(infra.pg_port), "--mlflow-port", str(infra.mlflow_port)]
    up = opensem("infra", "up", *ports, timeout=300)
    assert up.returncode == 0, up.stderr[-3000:]
    yield infra, up, ports
    opensem("infra", "down", *ports)
    shutil.rmtree(top, ignore_errors=True)


def test_up_prints_what_to_export_keeps_the_password_private_and_is_idempotent(services):
    infra, up, ports = services
    password = infra.password_file.read_text().strip()
    assert len(password) >= 24 and (infra.password_file.stat().st_mode & 0o777) == 0o600
    assert f"export MLFLOW_TRACKING_URI={infra.tracking_uri}" in up.stdout
    assert f"sweep.storage={infra.storage_url()}" in up.stdout and "${OPENSEM_DB_PASSWORD}" in up.stdout
    assert password not in up.stdout + up.stderr
    again = opensem("infra", "up", *ports, timeout=120)  # already running: nothing made twice
    assert again.returncode == 0, again.stderr
    status = opensem("infra", "status", *ports)
    assert status.returncode == 0 and "PostgreSQL: running" in status.stdout and "mlflow server: running" in status.stdout
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=infra.pg_port, user="opensem", password=password, dbname="optuna")
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'studies'")
        assert cur.fetchone()[0] == 1  # Optuna's tables are made by `up`, not raced for by workers
    conn.close()
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host="127.0.0.1", port=infra.pg_port, user="opensem", password="wrong", dbname="mlflow")


@pytest.mark.usefixtures("bundled_model_dir")
def test_pipeline_and_registry_run_through_the_server(services, project, monkeypatch):
    """With paid-provider keys planted and in use (an OpenAI teacher and an Anthropic judge, the
    real SDKs against the local test server) and W&B mirroring on, offline."""
    import mlflow
    from mlflow import MlflowClient

    from llm_server import FakeLLMServer

    infra, _, _ = services
    monkeypatch.setenv("MLFLOW_TRACKING_URI", infra.tracking_uri)
    sem = new_sem("widgets")
    (sem.raw_dir / "widgets.md").write_text(DOC)
    sem.golden_set.write_text(json.dumps(GOLDEN))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_EXPERIMENT", "MLFLOW_RUN"))} | PLANTED
    with FakeLLMServer() as server:
        paid = ["forge.teacher.provider=openai", "forge.teacher.model=gpt-4o-mini", f"forge.teacher.base_url={server.url}/v1",
                "judge.provider=anthropic", "judge.model=claude-3-5-haiku-latest", f"judge.base_url={server.url}",
                "tracking.wandb.enabled=true", "tracking.wandb.mode=offline"]
        sets = sum((["--set", s] for s in FAST + paid), [])
        for stage in (["forge"], ["baseline"], ["train"], ["evaluate"], ["promote"]):  # a 2-item golden set: no --limit needed
            done = opensem(*stage, "--sem", "widgets", *sets, cwd=project, env=env)
            assert done.returncode == 0, f"{stage}: {done.stderr[-3000:]}"
            assert not any(v in done.stdout + done.stderr for v in PLANTED.values())
    assert {e["api_key"].removeprefix("Bearer ") for e in server.log} == {PLANTED["OPENAI_API_KEY"], PLANTED["ANTHROPIC_API_KEY"]}
    assert not (project / "mlflow.db").exists() and not (project / "mlruns").exists()  # nothing went to a local store
    files = [p for p in project.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any("wandb" in p.parts for p in files)
    assert [str(p) for p in files for v in PLANTED.values() if v.encode() in p.read_bytes()] == []

    client = MlflowClient(tracking_uri=infra.tracking_uri)
    stages = {r.data.tags["opensem.stage"] for r in client.search_runs([client.get_experiment_by_name("opensem-widgets").experiment_id])}
    assert {"forge", "baseline", "train", "evaluate", "promote"} <= stages
    version = client.get_registered_model("opensem-widgets").latest_versions[0]
    assert version.version == "1"
    # the registered adapter comes back through the server's artifact proxy, from the folder `up` made
    mlflow.set_tracking_uri(infra.tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/opensem-widgets/{version.version}", dst_path=str(project / "back")))
    assert any(p.name == "adapter_model.safetensors" for p in local.rglob("*"))
    assert any(p.name == "adapter_model.safetensors" for p in (infra.dir / "artifacts").rglob("*"))


@pytest.mark.usefixtures("bundled_model_dir")
def test_two_workers_on_one_postgres_study_and_a_killed_one_retried(services, project, monkeypatch):
    from mlflow import MlflowClient
    import optuna

    infra, _, _ = services
    password = infra.password_file.read_text().strip()
    study_name = f"pg-{time.time_ns()}"
    sem = new_sem("tiny")
    sem.golden_set.write_text(json.dumps(GOLDEN))
    rows = [{"messages": [{"role": "user", "content": g["question"]}, {"role": "assistant", "content": g["answer"]}]} for g in GOLDEN["items"]]
    sem.processed_dir.mkdir(parents=True)
    (sem.processed_dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 3))
    (sem.processed_dir / "test.jsonl").write_text(json.dumps(rows[0]) + "\n")
    sets = FAST + ["sweep.n_trials=1", "sweep.heartbeat_s=1", f"sweep.study_name={study_name}",
                   "sweep.space={training.learning_rate: {type: float, low: 5.0e-4, high: 3.0e-3, log: true}}",
                   f"sweep.storage={infra.storage_url()}"]  # ${OPENSEM_DB_PASSWORD}, filled in by the worker
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_EXPERIMENT", "MLFLOW_RUN"))}
    env |= {"MLFLOW_TRACKING_URI": infra.tracking_uri, "OPENSEM_DB_PASSWORD": password, "COLUMNS": "400"}
    slow = ["--set", "training.max_steps=30", "--set", "training.checkpoint_steps=5", "--set", "training.batch_size=1"]
    cmd = [sys.executable, "-m", "opensem", "sweep", "--sem", "tiny", *sum((["--set", s] for s in sets), [])]
    logs = [project / f"worker{i}.log" for i in range(2)]
    workers = []
    for i, log in enumerate(logs):  # started together, as two cloud workers would be
        with log.open("w") as sink:
            workers.append(subprocess.Popen(cmd + (slow if i == 0 else []), cwd=project, env=env, stdout=sink,
                                            stderr=subprocess.STDOUT, start_new_session=True))
    storage = infra.storage_url(password=password)
    deadline = time.time() + 400
    checkpoint = None
    while checkpoint is None and workers[0].poll() is None and time.time() < deadline:
        time.sleep(0.2)
        checkpoint = next(iter(sem.adapters_dir.glob("*/checkpoints/checkpoint-5/trainer_state.json")), None)
    assert workers[0].poll() is None and checkpoint, logs[0].read_text()[-2000:]
    killed_run = checkpoint.parents[2].name
    os.killpg(workers[0].pid, signal.SIGKILL)  # a lost spot machine: no clean-up
    workers[0].wait()
    assert workers[1].wait(timeout=600) == 0, logs[1].read_text()[-2000:]
    time.sleep(3)  # past the heartbeat's grace period

    resumed = subprocess.run(cmd + slow, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr and killed_run in resumed.stderr
    trials = optuna.load_study(study_name=study_name, storage=storage).trials
    states = sorted(t.state.name for t in trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL"], states
    complete = [t.user_attrs["run_name"] for t in trials if t.state.name == "COMPLETE"]
    assert len(set(complete)) == 2 and killed_run in complete  # none lost, none run twice

    client = MlflowClient(tracking_uri=infra.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("opensem-tiny").experiment_id])
    parents = {r.info.run_id for r in runs if r.data.tags["opensem.stage"] == "sweep"}
    trained = [r for r in runs if r.data.tags["opensem.stage"] == "train" and r.data.tags.get("opensem.study") == study_name]
    assert {r.data.tags["opensem.run_name"] for r in trained if r.info.status == "FINISHED"} == set(complete)
    assert {r.info.run_name for r in trained} <= {f"{study_name} · trial {t.number}" for t in trials}  # named as trials
    assert all(r.data.tags["mlflow.parentRunId"] in parents for r in trained)


RACE = """
import sys, time
from pathlib import Path
import mlflow
from opensem.tracking import log_jsonl_dataset
mlflow.set_tracking_uri(sys.argv[1])
# the id set_experiment returns, as tracking.start_stage_run uses it: MLflow 3.17's set_experiment,
# when it loses the race to create the experiment, returns it without making it the active one
with mlflow.start_run(experiment_id=mlflow.set_experiment(sys.argv[3]).experiment_id):
    while time.time() < float(sys.argv[4]):
        time.sleep(0.001)
    log_jsonl_dataset(Path(sys.argv[2]), "race-train", "training")
"""


def test_workers_logging_one_dataset_at_the_same_moment_all_succeed(services, tmp_path):
    """MLflow's server adds a dataset by check-then-insert; six processes logging the same new one at
    the same moment collide on its unique key (seen in CI with two sweep workers) and must not fail."""
    from mlflow import MlflowClient

    infra, _, _ = services
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"}]}) + "\n" for i in range(5)))
    experiment, go = f"race-{time.time_ns()}", time.time() + 25  # after every process has imported mlflow
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_EXPERIMENT", "MLFLOW_RUN"))}
    procs = [subprocess.Popen([sys.executable, "-c", RACE, infra.tracking_uri, str(data), experiment, str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(6)]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, "\n".join(o[-1500:] for o in outputs)
    client = MlflowClient(tracking_uri=infra.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 6, "\n".join(o[-1500:] for o in outputs)
    assert all(r.inputs.dataset_inputs[0].dataset.name == "race-train" for r in runs)


def test_no_secret_is_in_any_log_artifact_or_table(services, tmp_path):
    """Runs after the tests above have used the services (file order): the database password and
    the planted API keys, searched for in every file under the services' folder (server logs,
    artifacts; the cluster's own files hold only the password's hash) and a dump of the MLflow
    database."""
    infra, _, _ = services
    password = infra.password_file.read_text().strip()
    dump = tmp_path / "mlflow.sql"
    done = subprocess.run([pg_bin("pg_dump"), "-h", "127.0.0.1", "-p", str(infra.pg_port), "-U", "opensem", "-f", str(dump), "mlflow"],
                          env=os.environ | {"PGPASSWORD": password}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    dumped = dump.read_text()
    secrets = [password, *PLANTED.values()]
    assert "experiments" in dumped and "opensem-widgets" in dumped  # the tests above did write here
    assert [s for s in secrets if s in dumped] == []
    hits = [str(p) for p in infra.dir.rglob("*") if p.is_file() and p != infra.password_file
            for s in secrets if s.encode() in p.read_bytes()]
    assert hits == []


def test_down_stops_the_server_and_the_database(services):
    infra, _, ports = services
    server_pid = int(infra.mlflow_pid_file.read_text())
    down = opensem("infra", "down", *ports)
    assert down.returncode == 0 and "mlflow server" in down.stdout and "PostgreSQL" in down.stdout, down.stderr
    for port in (infra.pg_port, infra.mlflow_port):
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    group = subprocess.run(["pgrep", "-g", str(server_pid)], capture_output=True, text=True)
    assert group.stdout.strip() == ""  # no worker of the server's process group left behind
    status = opensem("infra", "status", *ports)
    assert status.returncode == 1 and "stopped" in status.stdout
