"""Several processes through torchrun (gloo on this CPU): data-parallel training that matches one
process at the same effective batch, one MLflow run and one adapter, resume after a rank is
killed, sharded answering that gives the one-process table, a rank-aware pipeline, and the
stages that run once refused under torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import psutil
import pytest

from opensem.distributed import World, shard_map, world
from opensem.judge.evaluate import load_rows

from test_pipeline import FAST as PIPELINE_FAST, widgets  # noqa: F401  (a fixture)
from test_train import FAST, tiny  # noqa: F401  (a fixture)

TRAIN = FAST + ["training.lr_scheduler=constant", "training.warmup_ratio=0"]


def opensem(root, *args, processes: int = 1, check: bool = True, **popen) -> subprocess.CompletedProcess:
    """`opensem ARGS` as one process, or under torchrun as `processes` (a free port each time)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m"] if processes > 1 else [sys.executable, "-m"]
    env = dict(os.environ, OPENSEM_HOME=str(root))
    done = subprocess.run([*launcher, "opensem", *args], env=env, capture_output=True, text=True, timeout=900, **popen)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def sets(*values: str) -> list[str]:
    return sum((["--set", v] for v in values), [])


def train_run(sem, name: str):
    state = json.loads((sem.adapters_dir / name / "opensem_run.json").read_text())
    return mlflow.get_run(state["mlflow_run_id"])


def losses(run_id: str) -> list[float]:
    return [m.value for m in sorted(mlflow.MlflowClient().get_metric_history(run_id, "loss"), key=lambda m: m.step)]


def test_a_world_of_one_needs_no_launcher(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert world() == World(0, 0, 1) and world().main and not world().distributed
    assert shard_map(lambda part: [q.upper() for q in part], ["a", "b", "c"]) == ["A", "B", "C"]
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert world() == World(3, 1, 4) and not world().main


SHARDS = """
import json, os, sys
from opensem.distributed import shard_map
seen = []
gathered = shard_map(lambda part: seen.extend(part) or [q.upper() for q in part], list("abcde"))
open(os.path.join(sys.argv[1], os.environ["RANK"] + ".json"), "w").write(json.dumps({"seen": seen, "gathered": gathered}))
"""


def test_two_ranks_answer_their_own_shares_and_both_get_every_answer_in_order(tmp_path):
    """shard_map under real torchrun (gloo): rank r works on items r, r+2, ... only, and each rank
    gets all the results back in the items' order."""
    script = tmp_path / "shards.py"
    script.write_text(SHARDS)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["seen"] == ["a", "c", "e"] and ranks[1]["seen"] == ["b", "d"]
    assert ranks[0]["gathered"] == ranks[1]["gathered"] == ["A", "B", "C", "D", "E"]


@pytest.mark.parametrize("stage", ["forge", "promote", "report", "sweep", "prefer"])
def test_a_stage_that_runs_once_is_refused_under_torchrun(tiny, stage):
    """As torchrun's rank 0 would see it: one line, exit 2, before anything is read or written."""
    env = dict(os.environ, OPENSEM_HOME=str(tiny.root), WORLD_SIZE="2", RANK="0", LOCAL_RANK="0")
    done = subprocess.run([sys.executable, "-m", "opensem", stage, "--sem", "tiny"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"`opensem {stage}` runs as one process" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3  # one line, wrapped by the terminal width at most


@pytest.mark.slow
def test_two_processes_train_as_one_does_at_the_same_effective_batch(tiny):
    """2 processes x batch 2 against 1 process x batch 4: the same losses step by step (the same
    rows meet in each optimizer step, gradients averaged over both), one MLflow run, one adapter,
    written by rank 0, with the world size and effective batch logged."""
    steps = TRAIN + ["training.max_steps=3", "training.checkpoint_steps=100"]
    opensem(tiny.root, "train", "--sem", "tiny", *sets(*steps, "training.batch_size=4", "training.run_name=one"))
    done = opensem(tiny.root, "train", "--sem", "tiny", *sets(*steps, "training.batch_size=2", "training.run_name=two"), processes=2)
    assert "2 processes (torchrun): data-parallel (DDP)" in done.stderr
    assert done.stderr.count("trained two: 3 steps") == 1  # rank 0 speaks for both

    one, two = train_run(tiny, "one"), train_run(tiny, "two")
    assert two.info.status == "FINISHED"
    assert two.data.params["processes"] == "2" and two.data.params["effective_batch_size"] == "4"
    assert one.data.params["effective_batch_size"] == "4"
    assert len(losses(one.info.run_id)) == len(losses(two.info.run_id)) == 3
    for a, b in zip(losses(one.info.run_id), losses(two.info.run_id)):
        assert abs(a - b) <= 0.01 * abs(a), (losses(one.info.run_id), losses(two.info.run_id))
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`opensem.run_name` = 'two'", output_format="list")
    assert len(runs) == 1  # no second run from rank 1
    assert (tiny.adapters_dir / "two" / "adapter_model.safetensors").is_file()
    assert json.loads((tiny.adapters_dir / "two" / "training_metadata.json").read_text())["global_step"] == 3
    assert {p.name for p in tiny.adapters_dir.iterdir()} == {"one", "two"}


@pytest.mark.slow
def test_killing_one_rank_then_the_same_command_resumes_from_the_checkpoint_in_the_same_run(tiny):
    """kill -9 on rank 1 mid-training: torchrun stops the job; the same command again resumes from
    the newest complete checkpoint, in the same MLflow run, and finishes every step."""
    args = ["train", "--sem", "tiny", *sets(*TRAIN, "training.batch_size=2", "training.max_steps=12",
                                            "training.checkpoint_steps=2", "training.run_name=k9")]
    checkpoints = tiny.adapters_dir / "k9" / "checkpoints"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "opensem"]
    env = dict(os.environ, OPENSEM_HOME=str(tiny.root))
    job = subprocess.Popen([*launcher, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (checkpoints / "checkpoint-4" / "trainer_state.json").exists() and time.time() < deadline and job.poll() is None:
        time.sleep(0.05)
    workers = [p for p in psutil.Process(job.pid).children(recursive=True) if "opensem" in " ".join(p.cmdline())]
    rank1 = [p for p in workers if p.environ().get("RANK") == "1"]
    assert len(rank1) == 1, [p.cmdline() for p in workers]
    rank1[0].send_signal(signal.SIGKILL)
    assert job.wait(timeout=180) != 0  # torchrun ends the job when a rank dies
    state = json.loads((tiny.adapters_dir / "k9" / "opensem_run.json").read_text())
    assert not (tiny.adapters_dir / "k9" / "adapter_model.safetensors").exists()

    done = opensem(tiny.root, *args, processes=2)
    assert "resuming from" in done.stderr
    metadata = json.loads((tiny.adapters_dir / "k9" / "training_metadata.json").read_text())
    assert metadata["global_step"] == 12 and metadata["mlflow_run_id"] == state["mlflow_run_id"]
    assert mlflow.get_run(state["mlflow_run_id"]).info.status == "FINISHED"


@pytest.mark.slow
def test_fsdp_with_keep_best_is_refused_on_every_rank_before_training(tiny):
    done = opensem(tiny.root, "train", "--sem", "tiny", *sets(*TRAIN, "training.fsdp=true", "training.keep_best=true"),
                   processes=2, check=False)
    assert done.returncode != 0
    assert done.stderr.count("training.fsdp and training.keep_best do not go together") == 2  # each rank, one line
    assert "[rank0]: Traceback" not in done.stderr and "[rank1]: Traceback" not in done.stderr  # torchrun's own report stays
    assert not tiny.adapters_dir.exists() or not any(tiny.adapters_dir.iterdir())


@pytest.mark.slow
def test_sharded_answering_gives_the_table_one_process_gives(project):
    """The baseline on 5 golden questions (an odd count: the ranks' shares differ) answered by 1
    and by 2 processes: the same answers in the same order, the same scores, one run each."""
    opensem(project, "baseline", "--sem", "legal", "--limit", "5", *sets("generation.max_new_tokens=24"))
    done = opensem(project, "baseline", "--sem", "legal", "--limit", "5", *sets("generation.max_new_tokens=24"), processes=2)
    assert (done.stdout + done.stderr).count("baseline: key-fact accuracy") == 1
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`opensem.stage` = 'baseline'",
                              order_by=["attributes.start_time ASC"], output_format="list")
    assert len(runs) == 2
    one, two = (load_rows(r.info.run_id) for r in runs)
    assert [(r["id"], r["answer"], r["score"]) for r in one] == [(r["id"], r["answer"], r["score"]) for r in two]
    assert runs[0].data.metrics["mean_score"] == runs[1].data.metrics["mean_score"]


@pytest.mark.slow
def test_the_pipeline_under_torchrun_makes_each_stage_once(widgets):  # noqa: F811
    """forge, promote and report on rank 0 alone, baseline and evaluate sharded, training
    data-parallel: one run per stage under one parent, a registered version, one report."""
    opensem(widgets.root, "pipeline", "--sem", "widgets", *sets(*PIPELINE_FAST), processes=2)
    for stage in ("pipeline", "forge", "baseline", "train", "evaluate", "promote"):
        runs = mlflow.search_runs(experiment_names=["opensem-widgets"], output_format="list",
                                  filter_string=f"tags.`opensem.stage` = '{stage}'")
        assert len(runs) == 1 and runs[0].info.status == "FINISHED", (stage, [r.info.status for r in runs])
    state = json.loads((widgets.root / "data" / "widgets" / "pipeline.json").read_text())
    assert set(state["stages"]) >= {"forge", "baseline", "train", "evaluate", "promote"}
    assert mlflow.MlflowClient().search_model_versions("name = 'opensem-widgets'")
    assert (widgets.reports_dir / "report.html").is_file()
