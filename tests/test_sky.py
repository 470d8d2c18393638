"""The sky/*.yaml tasks. There is no cloud here, so: SkyPilot's own parser reads them (in its
own venv, .venv-sky from `make setup-sky`: its pins conflict with ours), SkyPilot's own upload
filter decides what of the workdir reaches a node, and each task's `run` step is executed with
stand-ins for the commands a node would run (mlflow, opensem), which record how they were called."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

SKY_PYTHON = REPO / ".venv-sky" / "bin" / "python"
TASKS = ["sky/train.yaml", "sky/sweep.yaml", "sky/pipeline.yaml", "sky/outcome.yaml", "sky/serve.yaml"]
needs_skypilot = pytest.mark.skipif(not SKY_PYTHON.exists(), reason="SkyPilot's venv is missing: run `make setup-sky`")

PARSE = """
import json, sys
import sky, yaml
out = {}
for path in sys.argv[1:]:
    config = yaml.safe_load(open(path))
    task = sky.Task.from_yaml_config(config, env_overrides=[("CHECKPOINT_BUCKET", "s3://b/opensem"), ("OPTUNA_STORAGE", "sqlite:///s.db"),
                                                                  ("MLFLOW_TRACKING_URI", "https://mlflow.example.org")])
    out[path] = {"name": task.name, "workdir": task.workdir, "setup": task.setup, "run": task.run,
                 "mounts": {k: [v.source, v.mode.value] for k, v in (task.storage_mounts or {}).items()},
                 "spot": sorted({r.use_spot for r in task.resources})}
print(json.dumps(out))
"""


@needs_skypilot
def test_tasks_parse_under_skypilot():
    done = subprocess.run([str(SKY_PYTHON), "-c", PARSE, *TASKS], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    tasks = json.loads(done.stdout)
    assert [tasks[t]["name"] for t in TASKS] == ["opensem-train", "opensem-sweep", "opensem-pipeline", "opensem-outcome", "opensem-serve"]
    for task in tasks.values():
        assert task["workdir"] == "." and "make setup-gpu" in task["setup"]
    # checkpoints on the bucket in SkyPilot's mode for them; spot instances for the resumable tasks
    assert tasks["sky/train.yaml"]["mounts"] == {"/checkpoints": ["s3://b/opensem", "MOUNT_CACHED"]}
    assert tasks["sky/train.yaml"]["spot"] == [True] and tasks["sky/sweep.yaml"]["spot"] == [True]


@needs_skypilot
def test_the_upload_carries_forged_pairs_but_not_venvs_or_run_outputs(tmp_path):
    # SkyPilot uploads the workdir less what .skyignore (or, without it, .gitignore) lists
    shutil.copy(REPO / ".skyignore", tmp_path / ".skyignore")
    files = ["data/legal/processed/train.jsonl", "data/legal/raw/a.txt", "data/legal/cache/teacher/x", ".venv/bin/python",
             "mlruns/0/meta.yaml", "models/legal/adapters/r/x", "mlflow.db", "opensem/__pycache__/x.pyc", "opensem/cli.py"]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    script = "import json, sys; from sky.data import storage_utils; print(json.dumps(storage_utils.get_excluded_files(sys.argv[1])))"
    done = subprocess.run([str(SKY_PYTHON), "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    excluded = [p.rstrip("/") for p in json.loads(done.stdout)]

    def uploaded(name: str) -> bool:
        return not any(name == p or name.startswith(p + "/") for p in excluded)

    assert uploaded("data/legal/processed/train.jsonl") and uploaded("data/legal/raw/a.txt") and uploaded("opensem/cli.py")
    for name in files[2:-1]:
        assert not uploaded(name), name


STAND_IN = """#!/usr/bin/env bash
# stand-in for a node's command: records its arguments, one per line, then a blank line
{ basename "$0"; printf '%s\n' "$@"; echo; } >> "$CALLS"
"""


def _run_step(task: str, tmp_path, env: dict, forged: bool) -> list[list[str]]:
    """Execute the task's `run` script as a node would, in a copy of the workdir's relevant parts."""
    work = tmp_path / "node"
    (work / "sky").mkdir(parents=True)
    for script in ("prepare.sh", "launch.sh"):
        shutil.copy(REPO / "sky" / script, work / "sky" / script)
    bin_dir = work / "fakebin"
    bin_dir.mkdir()
    for name in ("opensem", "mlflow", "torchrun"):
        (bin_dir / name).write_text(STAND_IN)
        (bin_dir / name).chmod(0o755)
    (work / ".venv" / "bin").mkdir(parents=True)
    (work / ".venv" / "bin" / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    (work / "lora.target_modules=q").write_text("")  # an unquoted [q,v] would glob-match this file
    if forged:
        (work / "data" / "legal" / "processed").mkdir(parents=True)
        (work / "data" / "legal" / "processed" / "train.jsonl").write_text('{"messages": []}\n')
    calls = tmp_path / "calls.txt"
    run = yaml.safe_load((REPO / task).read_text())["run"]
    done = subprocess.run(["bash", "-c", run], cwd=work, capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "CALLS": str(calls), "SEM": "legal", **env})
    assert done.returncode == 0, done.stdout + done.stderr
    return [block.splitlines() for block in calls.read_text().strip().split("\n\n")]


@pytest.mark.parametrize("task", ["sky/train.yaml", "sky/sweep.yaml"])
def test_train_and_sweep_tasks_forge_when_the_upload_has_no_pairs(task, tmp_path):
    env = {"OVERRIDES": "training.epochs=1 lora.target_modules=[q,v]", "SKYPILOT_TASK_ID": "sky-managed-7_opensem-train_1-0",
           "OPTUNA_STORAGE": "sqlite:///s.db"}
    calls = _run_step(task, tmp_path, env, forged=False)
    stage = "train" if "train" in task else "sweep"
    assert calls[0] == ["opensem", "doctor", "--sem", "legal", "--set", "training.epochs=1", "--set", "lora.target_modules=[q,v]"]
    assert calls[1][:4] == ["mlflow", "run", ".", "-e"] and calls[1][4] == "forge"
    assert "overrides=training.epochs=1 lora.target_modules=[q,v]" in calls[1]
    assert calls[2][4] == stage and len(calls) == 3
    overrides = next(a for a in calls[2] if a.startswith("overrides="))
    if stage == "train":
        # one SEM level in the checkpoint path (the train stage adds <sem>/<run name> itself)
        assert "training.checkpoint_dir=/checkpoints " in overrides
        assert "training.run_name=sky-managed-7_opensem-train_1-0" in overrides

    again = _run_step(task, tmp_path / "second", env, forged=True)
    assert [c[4] if c[0] == "mlflow" else c[1] for c in again] == ["doctor", stage]  # pairs uploaded: no forge


def test_serve_task_serves_the_alias_through_vllm_on_the_open_port(tmp_path):
    calls = _run_step("sky/serve.yaml", tmp_path, {"ALIAS": "candidate"}, forged=False)
    assert calls == [["opensem", "serve", "--sem", "legal", "--alias", "candidate", "--engine", "vllm", "--host", "0.0.0.0",
                      "--port", "5001"]]
    task = yaml.safe_load((REPO / "sky" / "serve.yaml").read_text())
    assert task["resources"]["ports"] == 5001 and "use_spot" not in task["resources"] and "make setup-vllm" in task["setup"]


MULTI_NODE = """
import json, sys
import sky, yaml
task = sky.Task.from_yaml_config(yaml.safe_load(open(sys.argv[1])), env_overrides=[("CHECKPOINT_BUCKET", "s3://b/opensem")])
task.num_nodes = 2                                       # sky jobs launch --num-nodes 2 --gpus H100:8
task.set_resources_override({"accelerators": "H100:8"})
print(json.dumps({"nodes": task.num_nodes, "accelerators": [r.accelerators for r in task.resources]}))
"""


@needs_skypilot
@pytest.mark.parametrize("task", ["sky/train.yaml", "sky/pipeline.yaml"])
def test_two_nodes_of_eight_gpus_start_torchrun_with_skypilots_node_list_and_rank(task, tmp_path):
    done = subprocess.run([str(SKY_PYTHON), "-c", MULTI_NODE, task], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    parsed = json.loads(done.stdout)
    assert parsed["nodes"] == 2 and all(a == {"H100": 8} for a in parsed["accelerators"])
    # what SkyPilot sets on the second node of such a task
    env = {"SKYPILOT_NUM_NODES": "2", "SKYPILOT_NUM_GPUS_PER_NODE": "8", "SKYPILOT_NODE_RANK": "1",
           "SKYPILOT_NODE_IPS": "10.0.0.7\n10.0.0.9", "SKYPILOT_TASK_ID": "t2", "OVERRIDES": "lora.target_modules=[q,v]"}
    calls = _run_step(task, tmp_path, env, forged=True)
    torchrun = [c for c in calls if c[0] == "torchrun"]
    assert len(torchrun) == 1 and not any(c[0] == "mlflow" for c in calls)  # forged pairs uploaded: no forge
    stage = "train" if "train" in task else "pipeline"
    head = ["torchrun", "--nnodes", "2", "--nproc_per_node", "8", "--node_rank", "1", "--master_addr", "10.0.0.7",
            "--master_port", "29500", "-m", "opensem", stage, "--sem", "legal"]
    assert torchrun[0][:len(head)] == head
    sets = torchrun[0][len(head):]
    assert sets[-2:] == ["--set", "lora.target_modules=[q,v]"]
    if stage == "train":
        assert sets[:4] == ["--set", "training.run_name=t2", "--set", "training.checkpoint_dir=/checkpoints"]


def test_a_single_gpu_pipeline_runs_through_mlflow_as_before(tmp_path):
    calls = _run_step("sky/pipeline.yaml", tmp_path, {"OVERRIDES": "training.epochs=1"}, forged=False)
    assert calls == [["mlflow", "run", ".", "-e", "pipeline", "--env-manager", "local", "-P", "sem=legal", "-P", "overrides=training.epochs=1"]]


def test_without_overrides_doctor_gets_none(tmp_path):
    calls = _run_step("sky/train.yaml", tmp_path, {"SKYPILOT_TASK_ID": "t1"}, forged=True)
    assert calls[0] == ["opensem", "doctor", "--sem", "legal"]


# -- sky/outcome.yaml: vLLM needs a GPU, so a stand-in serves the tests' local OpenAI-compatible
# server on the port vLLM was given; forge is the real one, through the real openai SDK; the
# bench (hours of training) is a stand-in that records how it was called and what it found.
VLLM_STAND_IN = """#!/usr/bin/env bash
{{ basename "$0"; printf '%s\\n' "$@"; echo; }} >> "$CALLS"
while [ $# -gt 0 ]; do [ "$1" = --port ] && port="$2"; shift; done
exec {python} {server} 0 "$port"
"""
VLLM_THAT_FAILS = """#!/usr/bin/env bash
echo "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB" >&2
exit 1
"""
BENCH_STAND_IN = """#!/usr/bin/env bash
{ basename "$0"; printf '%s\\n' "$@"; echo; } >> "$CALLS"
if curl -sf "http://127.0.0.1:${TEACHER_PORT:-8000}/v1/models" > /dev/null; then up=up; else up=down; fi
entries=$(find data/legal/cache/teacher -type f 2>/dev/null | wc -l)
{ echo "state"; echo "server $up"; echo "teacher cache files $entries"; echo "TMPDIR $TMPDIR"; echo; } >> "$CALLS"
echo "| legal | 42 | 33% -> 50% |"
"""


def _outcome_run(project, tmp_path, vllm: str, env: dict) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """sky/outcome.yaml's run step in a project copy, as a node would run it."""
    (project / "sky").mkdir()
    shutil.copy(REPO / "sky" / "outcome.sh", project / "sky" / "outcome.sh")
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir(parents=True)
    scripts = {"vllm": vllm, "python": BENCH_STAND_IN, "opensem": f'#!/usr/bin/env bash\nexec {sys.executable} -m opensem "$@"\n'}
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (project / ".venv" / "bin").mkdir(parents=True)
    (project / ".venv" / "bin" / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    calls = tmp_path / "calls.txt"
    calls.write_text("")
    run = yaml.safe_load((REPO / "sky" / "outcome.yaml").read_text())["run"]
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "OPENSEM_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY", "HF_HUB_OFFLINE")}
    done = subprocess.run(["bash", "-c", run], cwd=project, capture_output=True, text=True, timeout=600,
                          env={**keep, "CALLS": str(calls), "VLLM": str(bin_dir / "vllm"), **env})
    return done, [block.splitlines() for block in calls.read_text().strip().split("\n\n") if block]


def test_outcome_task_forges_with_the_served_teacher_then_benches_from_its_cache(project, tmp_path):
    from bench.common import free_port

    port = free_port()
    vllm = VLLM_STAND_IN.format(python=sys.executable, server=REPO / "tests" / "llm_server.py")
    env = {"TEACHER_MODEL": "Qwen/Qwen2.5-7B-Instruct", "TEACHER_PORT": str(port), "SEMS": "legal", "SEEDS": "42",
           "OVERRIDES": "forge.teacher.timeout_s=30"}
    done, calls = _outcome_run(project, tmp_path, vllm, env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert calls[0] == ["vllm", "serve", "Qwen/Qwen2.5-7B-Instruct", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "8192"]
    # the real forge asked the served teacher, and its replies are cached
    manifest = json.loads((project / "data" / "legal" / "processed" / "manifest.json").read_text())
    assert manifest["teacher"] == "openai:Qwen/Qwen2.5-7B-Instruct" and manifest["requests"] == manifest["chunks"] > 0
    url = f"http://127.0.0.1:{port}/v1"
    assert calls[1] == ["python", "-m", "bench", "outcome", "legal", "--seeds", "42", "--set", "forge.teacher.provider=openai",
                        "--set", f"forge.teacher.base_url={url}", "--set", "forge.teacher.model=Qwen/Qwen2.5-7B-Instruct",
                        "--set", "forge.teacher.timeout_s=30"]
    # by the time the bench trains, the server has stopped (the GPU is free) and the cache is there
    state = calls[2]
    assert state[:2] == ["state", "server down"] and int(state[2].split()[-1]) > 0
    assert state[3] == f"TMPDIR {project / 'outcome' / 'tmp'}"
    assert (project / "outcome" / "outcome.md").read_text() == "| legal | 42 | 33% -> 50% |\n"


def test_outcome_task_stops_when_the_teacher_server_dies_and_runs_extractive_without_one(project, tmp_path):
    env = {"TEACHER_MODEL": "Qwen/Qwen2.5-7B-Instruct", "TEACHER_PORT": "1", "SEMS": "legal"}
    done, calls = _outcome_run(project, tmp_path, VLLM_THAT_FAILS, env)
    assert done.returncode == 1 and calls == []  # no forge, no bench
    assert "the teacher server (vllm serve Qwen/Qwen2.5-7B-Instruct) exited" in done.stderr
    assert "CUDA out of memory" in done.stderr  # the end of its log, shown

    shutil.rmtree(project / "sky")
    shutil.rmtree(project / ".venv")
    done, calls = _outcome_run(project, tmp_path / "again", VLLM_THAT_FAILS, {"TEACHER_MODEL": "", "SEMS": "legal debian-policy"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert calls[0] == ["python", "-m", "bench", "outcome", "legal", "debian-policy", "--seeds", "42,43,44"]
