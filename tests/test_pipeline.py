"""`opensem pipeline`: nested stage runs under one parent, resume after a failed stage, and the
baseline reused (locked) across pipelines."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import pytest

import opensem.train
from opensem.config import load_config
from opensem.pipeline import run as pipeline
from opensem.workspace import new_sem

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("bundled_model_dir")]

DOC = """# Widgets

## Colours

A **Zorblat** is a teal widget. A **Frobnit** is an orange widget.

## Sizes

The largest widget weighs 400 grams. Widget makers formed a guild in 1950.
"""
GOLDEN = {"items": [
    {"id": "w1", "question": "What colour is a Zorblat widget?", "answer": "Teal.", "key_facts": ["teal"]},
    {"id": "w2", "question": "When did the widget makers form their guild?", "answer": "In 1950.", "key_facts": ["1950"]},
]}
FAST = ["model.system_prompt=Answer briefly.", "generation.max_new_tokens=12", "training.max_steps=4", "training.batch_size=4",
        "training.logging_steps=1", "training.cpt_epochs=0"]


@pytest.fixture
def widgets(project):
    sem = new_sem("widgets")
    (sem.raw_dir / "widgets.md").write_text(DOC)
    sem.golden_set.write_text(json.dumps(GOLDEN))
    return sem


def stage_runs(stage):
    return mlflow.search_runs(experiment_names=["opensem-widgets"], output_format="list",
                              filter_string=f"tags.`opensem.stage` = '{stage}'")


def test_pipeline_resumes_after_a_failed_stage_and_locks_the_baseline(widgets, monkeypatch):
    real_train = opensem.train.run
    calls = {"n": 0}

    def flaky_train(sem, cfg):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated crash during training")
        return real_train(sem, cfg)

    monkeypatch.setattr(opensem.train, "run", flaky_train)
    cfg = load_config(widgets.root, "widgets", FAST)
    with pytest.raises(RuntimeError, match="simulated crash"):
        pipeline(widgets, cfg)
    parent = stage_runs("pipeline")[0]
    assert parent.info.status == "FAILED"

    # the user runs the command again: a new process, which only resumes the parent run (and
    # has no active experiment: mlflow.set_experiment above exported one to this process's env)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_EXPERIMENT", "MLFLOW_RUN"))}
    rerun = subprocess.run([sys.executable, "-m", "opensem", "pipeline", "--sem", "widgets", *sum((["--set", s] for s in FAST), [])],
                           cwd=widgets.root, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    state = json.loads((widgets.root / "data" / "widgets" / "pipeline.json").read_text())  # forge and baseline are not redone
    assert len(stage_runs("forge")) == 1 and len(stage_runs("baseline")) == 1
    assert len(stage_runs("train")) == 1 and len(stage_runs("evaluate")) == 1 and len(stage_runs("promote")) == 1
    parents = stage_runs("pipeline")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the same parent run, resumed
    for stage in ("forge", "baseline", "train", "evaluate", "promote"):
        assert stage_runs(stage)[0].data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert state["stages"]["promote"]["version"] == "1"
    # what the MLflow UI shows: runs named by SEM and stage, the outcome on the parent, descriptions
    names = {r.data.tags["opensem.stage"]: r.info.run_name for r in mlflow.search_runs(experiment_names=["opensem-widgets"], output_format="list")}
    assert names["pipeline"] == "widgets · pipeline" and names["baseline"] == "widgets · baseline"
    assert names["forge"] == "widgets · forge" and names["evaluate"] == "widgets · evaluate"
    assert names["train"] == f"widgets · train · {state['stages']['train']['run_name']}"
    evaluated = stage_runs("evaluate")[0].data.metrics
    headline = parents[0].data.metrics
    assert headline["key_fact_accuracy"] == evaluated["key_fact_recall"] and headline["key_fact_gain"] == evaluated["recall_gain"]
    assert "baseline_key_fact_accuracy" in headline and headline["promoted"] in (0.0, 1.0)
    assert parents[0].data.tags["mlflow.note.content"].startswith("Key-fact accuracy ")
    # lineage in MLflow's terms: the golden set is each evaluation's dataset input, and the
    # evaluation's metrics hang on the logged model it judged
    for stage in ("baseline", "evaluate"):
        inputs = {(d.dataset.name, next((t.value for t in d.tags if t.key == "mlflow.data.context"), None))
                  for d in stage_runs(stage)[0].inputs.dataset_inputs}
        assert any(name.startswith("widgets-golden-") and context == "evaluation" for name, context in inputs), inputs
    from opensem.tracking import logged_model_id

    judged = mlflow.get_logged_model(logged_model_id(stage_runs("evaluate")[0].data.tags["opensem.candidate_model_uri"]))
    assert {m.key for m in judged.metrics} >= {"key_fact_recall", "mean_score"}
    experiment = mlflow.get_experiment_by_name("opensem-widgets")
    assert "golden set `evals/widgets/golden_set.json`" in experiment.tags["mlflow.note.content"]
    assert experiment.tags["mlflow.experimentKind"] == "finetuning"
    # each judged question is a trace of its evaluation, with the key-fact check and the judge's
    # verdict as assessments: the same numbers as the evaluation's own table
    from opensem.judge.evaluate import load_rows

    for stage in ("baseline", "evaluate"):
        run = stage_runs(stage)[0]
        rows = {row["id"]: row for row in load_rows(run.info.run_id)}
        traces = mlflow.search_traces(run_id=run.info.run_id, locations=[run.info.experiment_id], max_results=1000, return_type="list")
        assert len(traces) == len(rows) > 0, stage
        for trace in traces:
            assessed = {a.name: a for a in trace.info.assessments}
            row = rows[assessed["golden_id"].value]
            assert assessed["key_facts_stated"].value == row["key_fact_recall"] and assessed["judge_score"].value == row["score"]
        assert run.data.metrics["key_facts_stated/mean"] == pytest.approx(run.data.metrics["key_fact_recall"])

    # a new training config: forge is skipped, the baseline is reused, training and what follows run again
    # (this time with a pass over the documents first, which the report describes)
    state = pipeline(widgets, load_config(widgets.root, "widgets", FAST + ["lora.r=4", "training.cpt_epochs=1", "experimental.cpt_mix_pairs=true"]))
    assert len(stage_runs("forge")) == 1 and len(stage_runs("baseline")) == 1
    assert len(stage_runs("train")) == 2 and len(stage_runs("evaluate")) == 2
    assert state["stages"]["promote"]["version"] == "2"

    # the pipeline ends with the report: Markdown and a self-contained HTML page
    from html.parser import HTMLParser

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.ids, self.images, self.links = set(), [], []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if "id" in attrs:
                self.ids.add(attrs["id"])
            if tag == "img":
                self.images.append(attrs.get("src", ""))
            if tag == "a":
                self.links.append(attrs.get("href", ""))

    html = (widgets.reports_dir / "report.html").read_text()
    page = Page()
    page.feed(html)
    assert {"data", "training", "comparison", "decision", "lineage", "rejections", "summary", "per-tag", "gains", "losses",
            "lineage-table"} <= page.ids
    assert len(page.images) == 2 and all(src.startswith("data:image/png;base64,") for src in page.images)
    for stage in ("train", "baseline", "evaluate", "promote"):  # lineage: each run a link to its page in the MLflow UI
        run = stage_runs(stage)[0]  # the newest: the report shows the latest evaluation and what it judged
        link = f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning"
        assert link in page.links and f"]({link})" in (widgets.reports_dir / "report.md").read_text(), stage
    markdown = (widgets.reports_dir / "report.md").read_text()
    assert "Version 2" in html and markdown.startswith("# OpenSEM report: widgets")
    assert "Facts taught (golden set):" in markdown and "Facts taught (golden set):" in html  # from the forge manifest
    assert "(recipe `smollm2/135m_lora_cpu`)" in markdown  # lineage: which recipe trained the adapter
    trained = json.loads((widgets.adapters_dir / state["stages"]["train"]["run_name"] / "training_metadata.json").read_text())
    cpt = trained["cpt"]
    assert (f"Continued pre-training on the documents: {cpt['steps']} steps over {cpt['windows']} windows of text with the "
            f"{trained['examples']} training pairs mixed in, 1 pass, final loss") in markdown
    assert "Continued pre-training on the documents" in html
    assert trained["eval_loss"] is None and "held-out loss" not in markdown  # two documents' pairs: none held out
    assert "headline" in page.ids and "**Key-fact accuracy" in markdown  # the factual number first
    for control in ("echo", "oracle", "shuffled", "term soup"):
        assert f"| control: {control}" in markdown
    index = (widgets.root / "reports" / "index.html").read_text()
    assert "widgets/report.html" in index
    report_run = stage_runs("report")[0]
    assert "report/report.html" in {a.path for a in mlflow.artifacts.list_artifacts(run_id=report_run.info.run_id, artifact_path="report")}


def test_a_placeholder_golden_set_stops_the_pipeline_before_forge(project):
    from typer.testing import CliRunner

    from opensem.cli import app

    sem = new_sem("fresh")  # its golden set is still the example item
    (sem.raw_dir / "widgets.md").write_text(DOC)
    result = CliRunner().invoke(app, ["pipeline", "--sem", "fresh"])
    assert result.exit_code == 2 and "still holds the example item" in result.output
    assert not sem.processed_dir.exists()  # nothing was forged (with a paid teacher: nothing spent)
