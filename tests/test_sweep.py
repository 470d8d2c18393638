"""The sweep: a real Optuna study in sqlite storage over real short trainings of the bundled
model, nested MLflow runs, a study resumed and refused, a killed worker's trial retried."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest
from typer.testing import CliRunner

from opensem.cli import app
from opensem.workspace import new_sem

GOLDEN = {"items": [
    {"id": "z1", "question": "What colour is a Zorblat?", "answer": "A Zorblat is teal.", "key_facts": ["teal"]},
    {"id": "z2", "question": "Where do Frobnits live?", "answer": "Frobnits live in Oslo.", "key_facts": ["oslo"]},
]}
PAIRS = [(i["question"], i["answer"]) for i in GOLDEN["items"]] + [("What do Glimmers eat?", "Glimmers eat copper.")]
SPACE = """\
model:
  system_prompt: Answer briefly.
generation:
  max_new_tokens: 12
training:
  max_steps: 4
  cpt_epochs: 0
  batch_size: 3
  warmup_ratio: 0
  logging_steps: 1
sweep:
  space:
    training.learning_rate: {type: float, low: 5.0e-4, high: 3.0e-3, log: true}
    lora.r: {type: categorical, choices: [4, 8]}
"""


def _rows(pairs) -> str:
    return "".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n" for q, a in pairs)


@pytest.fixture
def tiny(project):
    sem = new_sem("tiny")
    sem.golden_set.write_text(json.dumps(GOLDEN))
    (project / "configs" / "sems" / "tiny.yaml").write_text(SPACE)
    sem.processed_dir.mkdir(parents=True)
    (sem.processed_dir / "train.jsonl").write_text(_rows(PAIRS))
    (sem.processed_dir / "test.jsonl").write_text(_rows(PAIRS[:1]))
    return sem


def sweep(*sets: str):
    return CliRunner().invoke(app, ["sweep", "--sem", "tiny", *sum((["--set", s] for s in sets), [])])


def study(sem, name="opensem-tiny"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sem.root / 'optuna.db'}")


@pytest.mark.slow
@pytest.mark.usefixtures("bundled_model_dir")
def test_sweep_trains_nested_trials_resumes_the_study_and_refuses_other_data(tiny):
    first = sweep("sweep.n_trials=2")
    assert first.exit_code == 0, first.output
    assert "best: trial" in first.output and "opensem evaluate --sem tiny --adapter opensem-tiny-t00" in first.output
    trials = study(tiny).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[0].params != trials[1].params

    runs = mlflow.search_runs(experiment_names=["opensem-tiny"], output_format="list")
    parent = next(r for r in runs if r.data.tags["opensem.stage"] == "sweep")
    children = sorted((r for r in runs if r.data.tags["opensem.stage"] == "train"), key=lambda r: int(r.data.tags["opensem.trial"]))
    assert [r.data.tags["mlflow.parentRunId"] for r in children] == [parent.info.run_id] * 2
    for trial, run in zip(trials, children):
        # the trial's value is the held-out loss its training run reports, with the values it proposed
        assert run.data.metrics["eval_loss_final"] == pytest.approx(trial.value)
        assert float(run.data.params["training.learning_rate"]) == pytest.approx(trial.params["training.learning_rate"])
        assert int(run.data.params["lora.r"]) == trial.params["lora.r"]
        assert (tiny.adapters_dir / trial.user_attrs["run_name"] / "adapter_model.safetensors").is_file()
    assert parent.data.metrics["best_value"] == pytest.approx(min(t.value for t in trials))
    assert json.loads(mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/sweep/trials.json"))[1]["state"] == "COMPLETE"

    again = sweep("sweep.n_trials=1")  # the study goes on where it was; a new session proposes new values
    assert again.exit_code == 0, again.output
    trials = study(tiny).trials
    assert len(trials) == 3 and trials[2].params not in (trials[0].params, trials[1].params)

    judged = sweep("sweep.n_trials=1", "sweep.objective=judge", "sweep.study_name=j")  # needs the control first
    assert judged.exit_code == 2 and "opensem baseline --sem tiny" in judged.output
    assert CliRunner().invoke(app, ["baseline", "--sem", "tiny"]).exit_code == 0
    judged = sweep("sweep.n_trials=1", "sweep.objective=judge", "sweep.study_name=j")
    assert judged.exit_code == 0, judged.output
    evaluation = mlflow.search_runs(experiment_names=["opensem-tiny"], output_format="list",
                                    filter_string="tags.`opensem.stage` = 'evaluate' AND tags.`opensem.study` = 'j'")
    assert study(tiny, "j").trials[0].value == pytest.approx(evaluation[0].data.metrics["key_fact_recall"])

    (tiny.processed_dir / "train.jsonl").write_text(_rows(PAIRS[:2]))  # new data: old losses are not comparable
    refused = sweep("sweep.n_trials=1")
    assert refused.exit_code == 2 and "measured with other train_data" in refused.output
    assert len(study(tiny).trials) == 3


@pytest.mark.slow
@pytest.mark.usefixtures("bundled_model_dir")
def test_a_sweep_can_be_scored_on_the_dev_set(tiny):
    missing = sweep("sweep.n_trials=1", "sweep.objective=dev")  # refused before any training
    assert missing.exit_code == 2 and "no dev set at" in missing.output
    assert not tiny.adapters_dir.exists() or not any(tiny.adapters_dir.iterdir())

    dev = {"items": [{"id": "d1", "question": "What do Glimmers eat?", "answer": "Glimmers eat copper.", "key_facts": ["copper"]}]}
    tiny.dev_set.write_text(json.dumps(dev))
    done = sweep("sweep.n_trials=1", "sweep.objective=dev")
    assert done.exit_code == 0, done.output
    s = study(tiny)
    assert s.direction == optuna.study.StudyDirection.MAXIMIZE
    run = mlflow.search_runs(experiment_names=["opensem-tiny"], output_format="list",
                             filter_string="tags.`opensem.stage` = 'train' AND tags.`opensem.trial` = '0'")[0]
    assert run.data.metrics["dev_key_fact_recall"] == pytest.approx(s.trials[0].value)
    assert s.user_attrs["identity"]["objective"] == "dev" and s.user_attrs["identity"]["dev"]


@pytest.mark.slow
@pytest.mark.usefixtures("bundled_model_dir")
def test_a_killed_workers_trial_is_retried_and_resumes_its_checkpoint(tiny):
    sets = ["sweep.n_trials=1", "sweep.heartbeat_s=1", "training.max_steps=30", "training.checkpoint_steps=5", "training.batch_size=1"]
    cmd = [sys.executable, "-m", "opensem", "sweep", "--sem", "tiny", *sum((["--set", s] for s in sets), [])]
    env = os.environ | {"COLUMNS": "400"}  # rich wraps at 80 columns when not on a terminal
    log = tiny.root / "worker.log"
    with log.open("w") as sink:
        worker = subprocess.Popen(cmd, cwd=tiny.root, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    checkpoints = tiny.adapters_dir / "opensem-tiny-t000" / "checkpoints"
    deadline = time.time() + 300
    # killed between checkpoints, not while one is being written
    while not (checkpoints / "checkpoint-5" / "trainer_state.json").is_file() and worker.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert worker.poll() is None, log.read_text()[-2000:]
    os.killpg(worker.pid, signal.SIGKILL)  # no chance to clean up: a lost spot machine
    worker.wait()
    assert study(tiny).trials[0].state.name == "RUNNING"
    time.sleep(3)  # past the grace period (2 heartbeats)

    resumed = subprocess.run(cmd, cwd=tiny.root, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr and "opensem-tiny-t000" in resumed.stderr
    trials = study(tiny).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].params == trials[0].params and trials[1].user_attrs["run_name"] == "opensem-tiny-t000"


@pytest.mark.slow
@pytest.mark.usefixtures("bundled_model_dir")
def test_a_trial_worse_than_the_median_is_pruned_after_its_first_epoch(tiny):
    # two earlier trials (made here, not trained) whose held-out loss no real epoch can match
    earlier = optuna.create_study(study_name="opensem-tiny", storage=f"sqlite:///{tiny.root / 'optuna.db'}")
    distributions = {"training.learning_rate": optuna.distributions.FloatDistribution(5e-4, 3e-3, log=True),
                     "lora.r": optuna.distributions.CategoricalDistribution([4, 8])}
    for n in range(2):
        earlier.add_trial(optuna.trial.create_trial(
            params={"training.learning_rate": 1e-3, "lora.r": 4}, distributions=distributions, value=1e-6,
            intermediate_values={epoch: 1e-6 for epoch in range(1, 5)}, user_attrs={"run_name": f"made-{n}"}))

    result = sweep("sweep.n_trials=1", "sweep.prune_after_trials=2")  # 4 epochs of one step each, if not pruned
    assert result.exit_code == 0, result.output
    trial = study(tiny).trials[2]
    assert trial.state.name == "PRUNED" and list(trial.intermediate_values) == [1]
    assert "pruned after epoch 1" in result.output and "(1 pruned)" in result.output
    metadata = json.loads((tiny.adapters_dir / "opensem-tiny-t002" / "training_metadata.json").read_text())
    assert (metadata["global_step"], metadata["stopped_early_at_epoch"]) == (1, 1)
    assert metadata["eval_loss"] == pytest.approx(trial.intermediate_values[1])
    run = mlflow.get_run(metadata["mlflow_run_id"])
    assert run.data.tags["opensem.stopped_early"] == "after epoch 1" and run.data.tags["opensem.trial"] == "2"

    # without pruning the same kind of trial trains all its epochs
    result = sweep("sweep.n_trials=1", "sweep.prune_after_trials=null")
    assert result.exit_code == 0, result.output
    trial = study(tiny).trials[3]
    assert trial.state.name == "COMPLETE" and trial.intermediate_values == {}
    metadata = json.loads((tiny.adapters_dir / "opensem-tiny-t003" / "training_metadata.json").read_text())
    assert (metadata["global_step"], metadata["stopped_early_at_epoch"]) == (4, None)


@pytest.mark.slow
@pytest.mark.usefixtures("bundled_model_dir")
def test_two_workers_on_one_study_run_different_trials(tiny):
    # as two sky/sweep.yaml workers do, here on one machine (sqlite storage instead of PostgreSQL)
    cmd = [sys.executable, "-m", "opensem", "sweep", "--sem", "tiny", "--set", "sweep.n_trials=1", "--set", "training.max_steps=2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_EXPERIMENT", "MLFLOW_RUN"))}
    workers = [subprocess.Popen(cmd, cwd=tiny.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs[0][-1500:] + outputs[1][-1500:]
    trials = study(tiny).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[0].params != trials[1].params  # each worker proposes its own values
    assert {t.user_attrs["run_name"] for t in trials} == {"opensem-tiny-t000", "opensem-tiny-t001"}
    for trial in trials:
        assert (tiny.adapters_dir / trial.user_attrs["run_name"] / "adapter_model.safetensors").is_file()


def test_bad_sweep_settings_are_one_line_errors(tiny):
    bad_key = sweep("sweep.space={training.lr: {type: float, low: 0.1, high: 1}}")
    assert bad_key.exit_code == 2 and "sweep.space training.lr: unknown key 'training.lr'" in bad_key.output
    bad_value = sweep("sweep.space={lora.r: {type: categorical, choices: [0, 8]}}")
    assert bad_value.exit_code == 2 and "lora.r = 0: input should be greater than 0" in bad_value.output
    no_choices = sweep("sweep.space={lora.alpha: {type: categorical}}")
    assert no_choices.exit_code == 2 and "needs a non-empty `choices` list" in no_choices.output
    inverted = sweep("sweep.space={lora.alpha: {type: int, low: 16, high: 8}}")
    assert inverted.exit_code == 2 and "`low` < `high`" in inverted.output
    (tiny.processed_dir / "train.jsonl").unlink()
    no_data = sweep()
    assert no_data.exit_code == 2 and "run `opensem forge --sem tiny` first" in no_data.output
    assert not (tiny.root / "optuna.db").exists() or study(tiny).trials == []
    for result in (bad_key, bad_value, no_choices, inverted, no_data):
        assert "Traceback" not in result.output


def test_a_storage_password_stays_out_of_the_config(tiny, monkeypatch):
    literal = sweep("sweep.storage=postgresql+psycopg2://sweeper:hunter2@db.internal/optuna")
    assert literal.exit_code == 2 and "holds a password" in literal.output and "${VARIABLE}" in literal.output
    assert "hunter2" not in literal.output
    unset = sweep("sweep.storage=sqlite:///${OPTUNA_TEST_DIR}/o.db")
    assert unset.exit_code == 2 and "export OPTUNA_TEST_DIR=" in unset.output
    from opensem.sweep import _expand

    monkeypatch.setenv("OPTUNA_DB_PASSWORD", "hunter2")
    assert _expand("postgresql://u:${OPTUNA_DB_PASSWORD}@h/o") == "postgresql://u:hunter2@h/o"


def test_other_sweep_workers_on_this_machine_are_counted():
    from opensem.sweep import other_workers_here

    before = other_workers_here()
    # stand-ins whose command lines are a worker's (as typed, and as `mlflow run -e sweep` starts it)
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *argv])
                for argv in (["opensem", "sweep", "--sem", "x"], ["entrypoints/sweep.py", "--sem", "x"], ["opensem", "train"])]
    try:
        time.sleep(0.5)
        assert other_workers_here() == before + 2  # `opensem train` is no sweep worker
    finally:
        for p in sleepers:
            p.kill()
            p.wait()
