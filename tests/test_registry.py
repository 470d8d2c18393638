"""The registry gate on a real MLflow registry, with evaluation runs whose per-question scores
are set by the test: better, worse, tie, inside the noise, mismatched golden set, lower key-fact
recall, and a current champion that the candidate does not beat / does beat."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from opensem.cli import app
from opensem.config import load_config
from opensem.registry import run as promote
from opensem.workspace import new_sem

N = 20


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return list(model_input["question"])


@pytest.fixture
def reg(project):
    sem = new_sem("reg")
    mlflow.set_experiment("opensem-reg")
    return sem


def eval_run(stage, scores, recall=0.5, golden="g1", baseline_id=None, model=True):
    with mlflow.start_run() as run:
        mlflow.set_tags({"opensem.sem": "reg", "opensem.stage": stage, "opensem.golden_digest": golden,
                         "opensem.judge": "offline-keyfact-v1", "opensem.base_model": "B", "opensem.prompt_digest": "p1",
                         "opensem.partial": "false"})
        if baseline_id:
            mlflow.set_tag("opensem.baseline_run_id", baseline_id)
        if model:
            info = mlflow.pyfunc.log_model(name="model", python_model=Echo())
            mlflow.set_tag("opensem.candidate_model_uri", info.model_uri)
        mlflow.log_metrics({"mean_score": sum(scores) / len(scores), "key_fact_recall": recall})
        mlflow.log_table({"id": [f"q{i}" for i in range(len(scores))], "score": scores}, "eval/per_question.json")
    return run.info.run_id


def aliases():
    client = MlflowClient()
    found = {}
    for alias in ("champion", "candidate"):
        try:
            found[alias] = str(client.get_model_version_by_alias("opensem-reg", alias).version)
        except mlflow.exceptions.MlflowException:
            found[alias] = None
    return found


def gate(reg, scores, recall=0.5, golden="g1", baseline_scores=(2,) * N):
    base = gate.baselines.setdefault(tuple(baseline_scores), eval_run("baseline", list(baseline_scores), model=False))
    cand = eval_run("evaluate", list(scores), recall, golden, baseline_id=base)
    return promote(reg, load_config(reg.root, "reg"), run=cand)


@pytest.fixture(autouse=True)
def _fresh_baselines():
    gate.baselines = {}


def test_better_is_promoted_and_the_decision_is_recorded(reg):
    decision = gate(reg, [4] * N)
    assert decision.promoted and aliases() == {"champion": "1", "candidate": "1"}
    version = MlflowClient().get_model_version("opensem-reg", "1")
    assert version.tags["opensem.decision"] == "promoted"
    assert float(version.tags["opensem.baseline_gain"]) == 2.0
    assert version.description.startswith("PROMOTED to champion: gain +2.00 over the baseline")


@pytest.mark.parametrize("scores, recall, golden, why", [
    ([1] * N, 0.5, "g1", "below registry.min_improvement"),                        # worse
    ([2] * N, 0.5, "g1", "below registry.min_improvement"),                        # tie
    ([4] * N, 0.4, "g1", "key-fact recall went down"),                             # better score, fewer facts
    ([4] * N, 0.5, "g2", "not comparable with the baseline: golden_digest"),       # other golden set
])
def test_refused(reg, scores, recall, golden, why):
    decision = gate(reg, scores, recall, golden)
    assert not decision.promoted and why in decision.reasons[0]
    assert aliases() == {"champion": None, "candidate": "1"}
    assert MlflowClient().get_model_version("opensem-reg", "1").tags["opensem.decision"] == "refused"


def test_a_gain_inside_the_noise_is_refused(reg):
    baseline = [1] * 5 + [3] * 15
    candidate = [5] * 5 + [2] * 14 + [3]  # mean gain +0.3, but most questions got worse
    decision = gate(reg, candidate, baseline_scores=baseline)
    assert not decision.promoted and "inside the judge's noise" in decision.reasons[0]


def test_champion_not_beaten_stays(reg):
    assert gate(reg, [4] * N).promoted
    second = gate(reg, [4] * N)  # beats the baseline, ties the champion
    assert not second.promoted and "over the champion" in second.reasons[1]
    assert aliases() == {"champion": "1", "candidate": "2"}


def test_champion_beaten_moves(reg):
    assert gate(reg, [3] * N).promoted
    assert gate(reg, [5] * N).promoted
    assert aliases() == {"champion": "2", "candidate": "2"}


def test_cli_refuses_partial_and_missing_runs(reg):
    result = CliRunner().invoke(app, ["promote", "--sem", "reg"])
    assert result.exit_code == 2 and "no finished evaluate run" in result.output
