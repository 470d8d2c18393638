"""`opensem report`: one Markdown and one self-contained HTML page per SEM, plus a summary of all SEMs.

    reports/<sem>/report.md, report.html, *.png    (also logged to the stage's MLflow run)
    reports/index.md, index.html                   (every SEM: baseline, fine-tuned, decision)

Sections: data (documents, pairs kept and rejected by reason, teacher cost), training (loss
curve), baseline vs fine-tuned (key-fact accuracy with its paired interval first, the judge's
validity controls, score distributions, per-tag table, biggest gains and losses with the answers
side by side), the registry decision, and lineage (dataset digests, run ids, git commit).
Everything is read from what the stages left: the forge manifest, the adapter folder, and the
MLflow runs.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from rich.console import Console

from opensem.config import Config
from opensem.errors import OpenSEMError
from opensem.tags import TAG_BASELINE_RUN, TAG_BASE_MODEL, TAG_DECISION, TAG_GOLDEN, TAG_JUDGE, TAG_MODEL, TAG_MODEL_VERSION
from opensem.workspace import Sem, known_sems

console = Console(stderr=True)
TEMPLATES = Path(__file__).parent / "templates"


def _latest(sem: Sem, stage: str, extra: str = ""):
    from opensem.tracking import stage_runs

    runs = stage_runs(sem, stage, extra, max_results=1)
    return runs[0] if runs else None


def checked_manifest(processed: Path) -> tuple[dict, list[str]]:
    """The forge manifest with its counts checked against the files beside it: the numbers of
    train and test rows and of rejections by reason are counted in the files, and where the
    manifest says otherwise (edited, or from another forge run) the report shows the counted
    numbers and says where they disagree. ({}, []) without a manifest."""
    from collections import Counter

    path = processed / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}, [f"{path.name} is damaged: its numbers are not shown"]
    if not isinstance(manifest, dict) or not manifest:
        return {}, []

    def lines(name: str) -> list[str] | None:
        file = processed / name
        return [x for x in file.read_text(encoding="utf-8").splitlines() if x.strip()] if file.is_file() else None

    counted: dict = {}
    for key in ("train", "test"):
        rows = lines(f"{key}.jsonl")
        if rows is not None:
            counted[key] = len(rows)
    if "train" in counted and "test" in counted:
        counted["pairs_kept"] = counted["train"] + counted["test"]
    rejected = lines("rejected.jsonl")
    if rejected is not None:
        counted["rejected"] = dict(Counter(json.loads(r).get("reason", "unknown") for r in rejected))
    disagreements = [f"{key}: manifest.json says {manifest.get(key)}, the files hold {value}"
                     for key, value in counted.items() if manifest.get(key) != value]
    return manifest | counted, disagreements


def gather(sem: Sem, cfg: Config) -> dict:
    """Everything the report shows, as plain data."""
    import mlflow

    from opensem.judge.evaluate import load_rows

    evaluation = _latest(sem, "evaluate", " AND tags.`opensem.partial` = 'false'")
    if evaluation is None:
        raise OpenSEMError(f"nothing to report for {sem.name} yet: run `opensem pipeline --sem {sem.name}` (or evaluate) first")
    baseline = mlflow.get_run(evaluation.data.tags[TAG_BASELINE_RUN])
    manifest, disagreements = checked_manifest(sem.processed_dir)
    adapter = evaluation.data.tags.get(TAG_MODEL, "").removeprefix("adapter:")
    metadata_path = sem.adapters_dir / adapter / "training_metadata.json"
    training = json.loads(metadata_path.read_text()) if metadata_path.is_file() else {}
    promote = _latest(sem, "promote", f" AND tags.`opensem.eval_run_id` = '{evaluation.info.run_id}'")

    base_rows = {r["id"]: r for r in load_rows(baseline.info.run_id)}
    tuned_rows = load_rows(evaluation.info.run_id)
    side_by_side = []
    for row in tuned_rows:
        before = base_rows.get(row["id"])
        if before and row["score"] is not None and before["score"] is not None:
            side_by_side.append({"id": row["id"], "question": row["question"], "golden": row["golden_answer"],
                                 "before": before["answer"], "after": row["answer"], "before_score": int(before["score"]),
                                 "after_score": int(row["score"]), "delta": int(row["score"]) - int(before["score"]), "tags": row["tags"],
                                 "before_recall": before["key_fact_recall"] or 0.0, "after_recall": row["key_fact_recall"] or 0.0})
    side_by_side.sort(key=lambda r: r["delta"])
    tags = sorted({t for r in side_by_side for t in str(r["tags"]).split(",") if t})
    per_tag = []
    for tag in tags:
        rows = [r for r in side_by_side if tag in str(r["tags"]).split(",")]
        per_tag.append({"tag": tag, "n": len(rows), "baseline": sum(r["before_score"] for r in rows) / len(rows),
                        "tuned": sum(r["after_score"] for r in rows) / len(rows),
                        "baseline_recall": sum(r["before_recall"] for r in rows) / len(rows),
                        "tuned_recall": sum(r["after_recall"] for r in rows) / len(rows)})
    decision = None
    if promote is not None:
        decision = {"decision": promote.data.tags.get(TAG_DECISION), "version": promote.data.tags.get(TAG_MODEL_VERSION),
                    "reasons": mlflow.artifacts.load_text(f"runs:/{promote.info.run_id}/promote/decision.txt").strip().splitlines()}
    from opensem.judge.evaluate import CONTROL_LABELS, control_cell
    from opensem.tags import TAG_UNRELIABLE, TAG_UNRELIABLE_REASON

    bm, em = baseline.data.metrics, evaluation.data.metrics
    controls = [{"label": label, "baseline": control_cell(bm, name), "tuned": control_cell(em, name)}
                for name, label in CONTROL_LABELS.items() if f"{name}_mean" in em]
    from opensem.judge.references import LABELS, cell

    references = [{"label": label, "baseline": cell(bm, name), "tuned": cell(em, name)}
                  for name, label in LABELS.items() if f"{name}_recall" in em]
    headline = None
    if "recall_gain" in em:
        headline = {k: em[k] for k in ("recall_gain", "recall_gain_ci_low", "recall_gain_ci_high", "delta_mean", "delta_ci_low", "delta_ci_high")}
    unreliable = [run.data.tags.get(TAG_UNRELIABLE_REASON) for run in (baseline, evaluation)
                  if run.data.tags.get(TAG_UNRELIABLE) == "true"]
    return {
        "controls": controls, "references": references, "headline": headline, "unreliable": unreliable, "selection_note": cfg.golden.selection_note,
        "sem": sem.name, "base_model": evaluation.data.tags.get(TAG_BASE_MODEL, cfg.model.base),
        "recipe": training.get("recipe"), "manifest": manifest, "manifest_disagrees": disagreements, "training": training, "adapter": adapter,
        "baseline": {"run_id": baseline.info.run_id, **baseline.data.metrics},
        "tuned": {"run_id": evaluation.info.run_id, **evaluation.data.metrics},
        "judge": evaluation.data.tags.get(TAG_JUDGE), "golden_digest": evaluation.data.tags.get(TAG_GOLDEN),
        "per_tag": per_tag, "losses": [r for r in side_by_side if r["delta"] < 0][:5],
        "gains": [r for r in reversed(side_by_side) if r["delta"] > 0][:5],
        "scores": {"baseline": [r["before_score"] for r in side_by_side], "tuned": [r["after_score"] for r in side_by_side]},
        "decision": decision, "promote_run_id": promote.info.run_id if promote else None,
        "git_commit": evaluation.data.tags.get("mlflow.source.git.commit") or "unknown",
        "ui": mlflow_ui(), "store": mlflow.get_tracking_uri(),
        "links": {name: run_link(run_id) for name, run_id in (
            ("train", training.get("mlflow_run_id")), ("baseline", baseline.info.run_id),
            ("evaluate", evaluation.info.run_id), ("promote", promote.info.run_id if promote else None)) if run_id},
    }


def mlflow_ui() -> str:
    """Where the runs can be looked at: the tracking server itself, or for a store on this
    machine the address `mlflow ui` serves it on by default."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"


def run_link(run_id: str) -> str:
    """The run's page in the MLflow UI (the experiment id looked up from the run), in the UI's
    "Model training" layout: its default GenAI layout has an "Evaluation runs" page that counts
    every run that logs no model (forge, promote, report, the pipeline) as an evaluation."""
    import mlflow

    experiment_id = mlflow.get_run(run_id).info.experiment_id
    return f"{mlflow_ui()}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def _score_plot(scores: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.38
    for offset, (label, values) in zip((-width / 2, width / 2), (("baseline", scores["baseline"]), ("fine-tuned", scores["tuned"]))):
        counts = Counter(values)
        ax.bar([s + offset for s in range(1, 6)], [counts.get(s, 0) for s in range(1, 6)], width, label=label)
    ax.set_xlabel("judge score")
    ax.set_ylabel("questions")
    ax.set_xticks(range(1, 6))
    ax.legend()
    ax.set_title("Score distribution on the golden set")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def write_report(sem: Sem, data: dict) -> Path:
    folder = sem.reports_dir
    folder.mkdir(parents=True, exist_ok=True)
    _score_plot(data["scores"], folder / "scores.png")
    images = {"scores": "scores.png"}
    loss = sem.adapters_dir / data["adapter"] / "loss_curve.png"
    if loss.is_file():
        (folder / "loss_curve.png").write_bytes(loss.read_bytes())
        images["loss"] = "loss_curve.png"
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    from opensem.io import atomic_write_text

    atomic_write_text(folder / "report.md", env.get_template("report.md.jinja").render(d=data, images=images))
    embedded = {k: _data_uri(folder / v) for k, v in images.items()}
    atomic_write_text(folder / "report.html", env.get_template("report.html.jinja").render(d=data, images=embedded))
    return folder


def write_index(root: Path, cfg: Config) -> Path:
    """reports/index.{md,html}: one line per SEM that has a report."""
    rows = []
    for name in known_sems(root):
        summary = root / "reports" / name / "summary.json"
        if summary.is_file():
            rows.append(json.loads(summary.read_text()))
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    from opensem.io import atomic_write_text

    atomic_write_text(root / "reports" / "index.md", env.get_template("index.md.jinja").render(rows=rows))
    atomic_write_text(root / "reports" / "index.html", env.get_template("index.html.jinja").render(rows=rows))
    return root / "reports" / "index.html"


def run(sem: Sem, cfg: Config) -> Path:
    from opensem import tracking
    from opensem.io import atomic_write_json

    tracking.configure(cfg, sem.root)
    data = gather(sem, cfg)
    for disagreement in data["manifest_disagrees"]:
        console.print(f"[yellow]forge manifest disagrees with its files, {disagreement}: the report shows what the files hold[/yellow]")
    with tracking.stage_run(sem, "report", cfg) as tracked:
        folder = write_report(sem, data)
        atomic_write_json(folder / "summary.json", {
            "sem": sem.name, "baseline": data["baseline"]["mean_score"], "tuned": data["tuned"]["mean_score"],
            "baseline_recall": data["baseline"].get("key_fact_recall"), "tuned_recall": data["tuned"].get("key_fact_recall"),
            "decision": (data["decision"] or {}).get("decision", "not promoted yet"), "report": f"{sem.name}/report.html"})
        index = write_index(sem.root, cfg)
        for name in ("report.md", "report.html", "scores.png"):
            tracked.log_artifact(folder / name, "report")
    console.print(f"report: {folder / 'report.html'} (all SEMs: {index})")
    return folder
