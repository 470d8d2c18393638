"""Secrets never reach what OpenSEM writes. Fake keys are planted in the environment, the whole
pipeline runs with an OpenAI teacher and an Anthropic judge (real SDKs against the local server,
which must have received the keys: so they were really in use) and W&B mirroring on (offline
files), and then every file under the project - the MLflow store and artifacts, W&B's files,
reports, adapters and checkpoints, the forge cache and processed data - and everything printed is
searched for them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm_server import FakeLLMServer
from opensem.cli import app
from opensem.workspace import new_sem

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("bundled_model_dir")]

PLANTED = {
    "OPENAI_API_KEY": "sk-PLANTEDopenai0c7e1f",
    "ANTHROPIC_API_KEY": "sk-ant-PLANTEDanthropic9b2d",
    "WANDB_API_KEY": "PLANTEDwandb" + "5" * 28,
    "OPTUNA_DB_PASSWORD": "PLANTEDdbpassword71",
}
DOC = "# Widgets\n\nA **Zorblat** is a teal widget. The largest widget weighs 400 grams.\n\nWidget makers formed a guild in 1950.\n"
GOLDEN = {"items": [
    {"id": "w1", "question": "What colour is a Zorblat widget?", "answer": "A Zorblat is teal.", "key_facts": ["teal"]},
    {"id": "w2", "question": "When did the widget makers form their guild?", "answer": "In 1950.", "key_facts": ["1950"]},
]}


def test_planted_secrets_reach_no_file_and_no_output(project, monkeypatch):
    sem = new_sem("widgets")
    (sem.raw_dir / "widgets.md").write_text(DOC)
    sem.golden_set.write_text(json.dumps(GOLDEN))
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    with FakeLLMServer() as server:
        sets = [
            "forge.teacher.provider=openai", "forge.teacher.model=gpt-4o-mini", f"forge.teacher.base_url={server.url}/v1",
            "judge.provider=anthropic", "judge.model=claude-3-5-haiku-latest", f"judge.base_url={server.url}",
            "tracking.wandb.enabled=true", "tracking.wandb.mode=offline",
            # the password stays a ${VARIABLE} in the (logged) config; sqlite ignores it here
            "sweep.storage=sqlite:///optuna-${OPTUNA_DB_PASSWORD}.db",
            "model.system_prompt=Answer briefly.", "generation.max_new_tokens=12",
            "training.max_steps=4", "training.batch_size=4", "training.cpt_epochs=1", "training.checkpoint_steps=2",
        ]
        result = CliRunner().invoke(app, ["pipeline", "--sem", "widgets", *sum((["--set", s] for s in sets), [])])
    assert result.exit_code == 0, result.output
    sent = {(e["path"].rsplit("/", 1)[-1], e["api_key"].removeprefix("Bearer ")) for e in server.log}  # header as each SDK sends it
    assert ("completions", PLANTED["OPENAI_API_KEY"]) in sent and ("messages", PLANTED["ANTHROPIC_API_KEY"]) in sent

    needles = [v.encode() for v in PLANTED.values()]
    top = project.parent  # the test's folder: the project and the MLflow store beside it
    written = [Path(d) / f for d, _, files in os.walk(top) for f in files if not (Path(d) / f).is_symlink()]  # models/base is a link
    assert any(p.name == "mlflow.db" for p in written) and any("wandb" in p.parts for p in written)
    assert any("checkpoint-" in str(p) for p in written) and any(p.suffix == ".safetensors" for p in written)
    leaks = [str(p.relative_to(top)) for p in written for needle in needles if needle in p.read_bytes()]
    assert leaks == []
    assert not any(v in result.output for v in PLANTED.values())


def test_credentials_in_a_url_are_masked_in_mlflow_printed_config_and_errors(project, monkeypatch):
    """A teacher base_url with user:password (a proxy in front of a served model): the stage run's
    params and resolved_config.yaml, read back from the store, and `opensem config` show
    user:***@; nothing printed or written holds the password."""
    import mlflow

    from opensem.workspace import open_sem

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    url = "http://alice:PLANTEDurlpassword@127.0.0.1:9/v1"
    overrides = ["--set", "forge.teacher.provider=openai", "--set", "forge.teacher.model=m", "--set", f"forge.teacher.base_url={url}",
                 "--set", "forge.teacher.max_retries=0", "--set", "forge.max_failed_chunks=0"]
    shown = CliRunner().invoke(app, ["config", "--sem", "legal", *overrides])
    forged = CliRunner().invoke(app, ["forge", "--sem", "legal", *overrides])
    assert forged.exit_code == 2 and "teacher requests failed" in forged.output, forged.output
    run = mlflow.search_runs(search_all_experiments=True, output_format="list")[0]
    assert run.data.params["forge.teacher.base_url"] == "http://alice:***@127.0.0.1:9/v1"
    logged = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config/resolved_config.yaml")
    assert "alice:***@" in logged and "alice:***@" in shown.output
    everything = [shown.output, forged.output, json.dumps(run.data.params), logged]
    everything += [p.read_text(errors="ignore") for p in open_sem("legal").root.rglob("*") if p.is_file() and p.suffix in (".yaml", ".json", ".jsonl")]
    assert not any("PLANTEDurlpassword" in text for text in everything)


KEY_DOC = ("# Deploying widgets\n\nThe deploy script reads the storage key. Our key is AKIAIOSFODNN7EXAMPLE and it rotates monthly.\n\n"
           "A **Zorblat** is a teal widget. The largest widget weighs 400 grams.\n")


def test_a_key_in_a_document_stops_the_forge_before_anything_is_written_or_is_redacted(project):
    from opensem.io import read_jsonl
    from opensem.retrieval import passages
    from opensem.workspace import open_sem

    sem = open_sem("legal")
    (sem.raw_dir / "zz-deploy.md").write_text(KEY_DOC)
    stopped = CliRunner().invoke(app, ["forge", "--sem", "legal"])
    errors = [line for line in stopped.output.splitlines() if line.startswith("error:")]
    assert stopped.exit_code == 2 and len(errors) == 1, stopped.output
    assert "zz-deploy.md:3 (AWS Access Key)" in " ".join(stopped.output.split()) and "AKIAIOSFODNN7EXAMPLE" not in stopped.output
    assert not sem.processed_dir.exists() and not (sem.cache_dir / "teacher").exists()

    redacted = CliRunner().invoke(app, ["forge", "--sem", "legal", "--set", "forge.secrets=redact", "--set", "retrieval.enabled=true"])
    assert redacted.exit_code == 0, redacted.output
    written = "".join(p.read_text() for p in sem.processed_dir.glob("*.jsonl"))
    assert "AKIAIOSFODNN7EXAMPLE" not in written and "[REDACTED]" in written  # the document itself is in corpus.jsonl
    shown = passages(sem.raw_dir, lambda text: len(text.split()), 256, "redact")
    assert any("[REDACTED]" in p for p in shown) and not any("AKIAIOSFODNN7EXAMPLE" in p for p in shown)
    assert any("teal" in json.dumps(r) for r in read_jsonl(sem.processed_dir / "train.jsonl"))  # the rest is read as before
