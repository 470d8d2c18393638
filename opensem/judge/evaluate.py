"""`opensem baseline` and `opensem evaluate`: a model answers the golden set, a judge scores it.

Both stages use the same prompt format, decoding and judge, so their numbers are comparable;
`evaluate` then finds the baseline run with the same SEM, base model, golden-set digest and
judge, and prints Baseline vs Fine-tuned. Every evaluation also scores two controls with the
same judge: the question echoed back (the floor a model must clear) and the golden answer
itself (the ceiling).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from opensem.config import Config
from opensem.errors import OpenSEMError
from opensem.golden import GoldenItem, golden_digest, load_golden_for_scoring
from opensem.workspace import Sem

console = Console(stderr=True)
out = Console(soft_wrap=True)  # long result lines stay one line (grep-able in logs)

TAG_GOLDEN = "opensem.golden_digest"
TAG_JUDGE = "opensem.judge"
TAG_PARTIAL = "opensem.partial"
TAG_MODEL = "opensem.model_under_test"
TAG_PROMPT = "opensem.prompt_digest"
TABLE = "eval/per_question.json"
UNRELIABLE_ECHO = 3.0


def prompt_digest(cfg: Config) -> str:
    """How the model is asked: system prompt and answer length. Answers are compared only when
    asked the same way, so a new system prompt gets a new baseline rather than the old one."""
    asked = json.dumps({"system_prompt": cfg.model.system_prompt, "max_new_tokens": cfg.generation.max_new_tokens})
    return hashlib.sha256(asked.encode()).hexdigest()[:12]


@dataclass
class EvalResult:
    run_id: str
    metrics: dict
    rows: list[dict]


def judge_name(cfg: Config) -> str:
    """The name a judge tags its runs with, known without loading it."""
    from opensem.judge.offline import NAME

    return NAME if cfg.judge.provider == "offline" else f"llm:{cfg.judge.provider}:{cfg.judge.model}"


def make_judge(cfg: Config, sem: Sem):
    if cfg.judge.provider == "offline":
        from opensem.judge.offline import OfflineJudge

        return OfflineJudge()
    from opensem.judge.llm_judge import LLMJudge

    return LLMJudge(cfg, sem.cache_dir / "judge")


def run_eval(sem: Sem, cfg: Config, stage: str, *, adapter: str | None = None, model_uri: str | None = None,
             limit: int | None = None, nested: bool = False) -> EvalResult:
    from opensem import tracking
    from opensem.judge.stats import mean_ci

    items = load_golden_for_scoring(sem.golden_set)
    digest = golden_digest(items)  # of the whole set, also when --limit scores only part of it
    if limit is not None:
        if limit < 1:
            raise OpenSEMError("--limit must be at least 1")
        items = items[:limit]
    judge = make_judge(cfg, sem)  # fails fast on a missing key, before any generation
    if stage != "baseline" and not model_uri:
        folder = resolve_adapter(sem, adapter)
        _check_same_base(folder, cfg)
        adapter = folder.name
    under_test = "base" if stage == "baseline" else (model_uri or f"adapter:{adapter}")
    tags = {TAG_GOLDEN: digest, TAG_JUDGE: judge.name, TAG_PROMPT: prompt_digest(cfg),
            TAG_PARTIAL: str(limit is not None).lower(), TAG_MODEL: under_test}
    if stage == "evaluate":  # the MLflow model `opensem promote` would register
        candidate_uri = model_uri or _read_json(sem.adapters_dir / adapter / "opensem_run.json").get("model_uri")
        if candidate_uri:
            tags["opensem.candidate_model_uri"] = candidate_uri

    with tracking.stage_run(sem, stage, cfg, nested=nested, tags=tags) as tracked:
        console.print(f"[bold]{stage}[/bold] {sem.name}: {len(items)} golden questions, model {under_test}, judge {judge.name}")
        answers, seconds, gen_tokens = _answer(sem, cfg, [i.question for i in items], stage, adapter, model_uri)
        verdicts = judge.judge(items, answers)
        echo = judge.judge(items, [i.question for i in items])
        oracle = judge.judge(items, [i.answer for i in items])

        rows = []
        for item, answer, verdict in zip(items, answers, verdicts):
            rows.append({
                "id": item.id, "question": item.question, "golden_answer": item.answer, "answer": answer,
                "score": verdict.score if verdict else None, "reason": verdict.reason if verdict else "judge failed",
                "key_fact_recall": verdict.key_fact_recall if verdict else None, "tags": ",".join(item.tags),
                "seconds": round(seconds / max(len(items), 1), 3),
            })
        scored = [r["score"] for r in rows if r["score"] is not None]
        r = cfg.registry
        mean, low, high = mean_ci(scored, r.confidence, r.bootstrap_resamples)
        echo_mean = _mean([v.score for v in echo if v])
        metrics = {
            "mean_score": mean, "ci_low": low, "ci_high": high,
            "pass_rate": _mean([s >= cfg.judge.pass_score for s in scored]),
            "key_fact_recall": _mean([r["key_fact_recall"] for r in rows if r["key_fact_recall"] is not None]),
            "echo_mean": echo_mean, "oracle_mean": _mean([v.score for v in oracle if v]),
            "mean_answer_chars": _mean([len(a) for a in answers]),
            "gen_tokens_per_s": gen_tokens / seconds if seconds else 0.0,
            "n_items": len(items), "judge_failures": len(rows) - len(scored),
        }
        unreliable = echo_mean >= UNRELIABLE_ECHO
        tracked.set_tags({"opensem.judge_unreliable": str(unreliable).lower()})
        tracked.log_metrics(metrics)
        _log_table(tracked, rows)
        cost = getattr(judge, "cost_usd", 0.0)
        if cost:
            tracked.log_metrics({"judge_cost_usd": cost})
        result = EvalResult(tracked.run_id, metrics, rows)

        _print_summary(stage, judge.name, metrics, unreliable, limit)
        if stage == "evaluate":
            baseline = find_baseline(sem, cfg, digest, judge.name)
            comparison = compare(baseline, result, cfg, items)
            tracked.log_metrics({k: v for k, v in comparison.items() if isinstance(v, (int, float))})
            tracked.set_tags({"opensem.baseline_run_id": baseline.info.run_id})
    return result


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else float("nan")


def _answer(sem: Sem, cfg: Config, questions: list[str], stage: str, adapter: str | None, model_uri: str | None):
    """(answers, seconds spent generating, tokens generated) from the model under test."""
    from rich.progress import Progress

    g = cfg.generation
    if model_uri:
        import mlflow
        import pandas as pd

        model = mlflow.pyfunc.load_model(model_uri)
        start = time.perf_counter()
        answers = list(model.predict(pd.DataFrame({"question": questions}), params={"max_new_tokens": g.max_new_tokens}))
        return answers, time.perf_counter() - start, sum(len(a.split()) for a in answers)

    from opensem.generate import answer_questions
    from opensem.models import load_model_and_tokenizer, resolve_base_model

    model, tokenizer = load_model_and_tokenizer(resolve_base_model(cfg.model.base, sem.base_models_dir))
    if stage != "baseline":
        from peft import PeftModel

        folder = resolve_adapter(sem, adapter)
        model = PeftModel.from_pretrained(model, str(folder))
    answers: list[str] = []
    start = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("answering", total=len(questions))
        for k in range(0, len(questions), g.batch_size):
            batch = questions[k:k + g.batch_size]
            answers += answer_questions(model, tokenizer, batch, cfg.model.system_prompt, g.max_new_tokens, g.batch_size)
            progress.advance(task, len(batch))
    seconds = time.perf_counter() - start
    tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    return answers, seconds, tokens


def resolve_adapter(sem: Sem, name: str | None) -> Path:
    """The named adapter, or the newest finished one."""
    if name:
        folder = sem.adapters_dir / name
        if not (folder / "adapter_config.json").is_file():
            known = ", ".join(sorted(p.name for p in sem.adapters_dir.glob("*") if (p / "adapter_config.json").is_file())) or "none"
            raise OpenSEMError(f"no adapter {name!r} in {sem.adapters_dir} (trained: {known})")
        return folder
    finished = sorted(sem.adapters_dir.glob("*/training_metadata.json"), key=lambda p: json.loads(p.read_text())["finished"])
    if not finished:
        raise OpenSEMError(f"no trained adapter for {sem.name}: run `opensem train --sem {sem.name}` first, or pass --model models:/...")
    return finished[-1].parent


def _check_same_base(folder: Path, cfg: Config) -> None:
    """An adapter only fits the base it was trained on, and the baseline it is compared with must
    be that base too: refuse to evaluate it under another model.base (another recipe)."""
    trained = _read_json(folder / "training_metadata.json")
    base = trained.get("base_model")
    if base and base != cfg.model.base:
        how = f"--set recipe={trained['recipe']}" if trained.get("recipe") else f"--set model.base={base}"
        raise OpenSEMError(f"adapter {folder.name!r} was trained on {base}, but model.base here is {cfg.model.base}; "
                           f"evaluate it with the config it was trained with: {how}")


def _log_table(tracked, rows: list[dict]) -> None:
    import csv
    import io

    import mlflow

    columns = {k: [r[k] for r in rows] for k in rows[0]} if rows else {}
    mlflow.log_table(data=columns, artifact_file=TABLE, run_id=tracked.run_id)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["id"])
    writer.writeheader()
    writer.writerows(rows)
    tracked.log_text(buffer.getvalue(), "eval/per_question.csv")


def find_baseline(sem: Sem, cfg: Config, digest: str, judge_name: str):
    """The newest complete baseline run for this SEM, base model, golden set, judge and prompt; a
    clear error naming what differs when only incomparable ones exist."""
    from opensem.tracking import TAG_BASE_MODEL, configure, stage_runs

    configure(cfg, sem.root)
    runs = stage_runs(sem, "baseline", f" AND tags.`{TAG_PARTIAL}` = 'false'")
    if not runs:
        raise OpenSEMError(f"no complete baseline run for SEM {sem.name}: run `opensem baseline --sem {sem.name}` first")
    wanted = {TAG_BASE_MODEL: cfg.model.base, TAG_GOLDEN: digest, TAG_JUDGE: judge_name, TAG_PROMPT: prompt_digest(cfg)}
    for run in runs:
        if all(run.data.tags.get(k) == v for k, v in wanted.items()):
            return run
    newest = runs[0]
    differs = [f"{k.split('.')[-1]} {newest.data.tags.get(k)!r} vs {v!r}" for k, v in wanted.items() if newest.data.tags.get(k) != v]
    raise OpenSEMError(
        f"the baseline runs for {sem.name} are not comparable with this evaluation (newest baseline {newest.info.run_id[:8]}: "
        f"{'; '.join(differs)}); re-run `opensem baseline --sem {sem.name}` with the same settings"
    )


def load_rows(run_id: str) -> list[dict]:
    import mlflow

    # The run's own experiment, named: the fluent default is the process's active experiment,
    # which is not set when this process only resumed a run (a re-run pipeline)
    experiment_id = mlflow.get_run(run_id).info.experiment_id
    frame = mlflow.MlflowClient().load_table(experiment_id, TABLE, run_ids=[run_id])
    return frame.drop(columns=[c for c in ("run_id",) if c in frame.columns]).to_dict("records")


def compare(baseline_run, result: EvalResult, cfg: Config, items: list[GoldenItem]) -> dict:
    """Print Baseline vs Fine-tuned and return the comparison numbers."""
    from opensem.judge.stats import paired_diff_ci

    base_rows = {r["id"]: r for r in load_rows(baseline_run.info.run_id)}
    pairs = [(base_rows[r["id"]], r) for r in result.rows if r["id"] in base_rows and r["score"] is not None
             and base_rows[r["id"]]["score"] is not None]
    if not pairs:
        raise OpenSEMError("the baseline and this evaluation share no scored question; re-run the baseline")
    b_scores = [float(b["score"]) for b, _ in pairs]
    f_scores = [float(f["score"]) for _, f in pairs]
    diff, low, high = paired_diff_ci(f_scores, b_scores, cfg.registry.confidence, cfg.registry.bootstrap_resamples)
    bm = baseline_run.data.metrics
    fm = result.metrics
    better = sum(f > b for b, f in zip(b_scores, f_scores))
    worse = sum(f < b for b, f in zip(b_scores, f_scores))

    table = Table(title="Baseline vs Fine-tuned")
    for column in ("", "Baseline", "Fine-tuned"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row("mean score (95% CI)", f"{bm['mean_score']:.2f} [{bm['ci_low']:.2f}, {bm['ci_high']:.2f}]",
                  f"{fm['mean_score']:.2f} [{fm['ci_low']:.2f}, {fm['ci_high']:.2f}]")
    table.add_row("pass rate (score >= %d)" % cfg.judge.pass_score, f"{bm['pass_rate']:.0%}", f"{fm['pass_rate']:.0%}")
    table.add_row("key-fact recall", f"{bm['key_fact_recall']:.0%}", f"{fm['key_fact_recall']:.0%}")
    table.add_row("echo control / oracle", f"{bm['echo_mean']:.2f} / {bm['oracle_mean']:.2f}", f"{fm['echo_mean']:.2f} / {fm['oracle_mean']:.2f}")
    tag_names = sorted({t for i in items for t in i.tags})
    by_id = {i.id: i for i in items}
    for tag in tag_names:
        ids = [b["id"] for b, _ in pairs if tag in by_id[b["id"]].tags]
        if ids:
            bt = _mean(float(base_rows[i]["score"]) for i in ids)
            ft = _mean(float(next(r["score"] for r in result.rows if r["id"] == i)) for i in ids)
            table.add_row(f"  tag {tag} ({len(ids)})", f"{bt:.2f}", f"{ft:.2f}")
    out.print(table)
    b_mean, f_mean = _mean(b_scores), _mean(f_scores)
    rel_mean = (f_mean - b_mean) / b_mean * 100 if b_mean else float("nan")
    verdict = "Accuracy improved by" if f_mean > b_mean else "Accuracy did not improve:"
    out.print(f"{verdict} {rel_mean:+.1f}% (mean judge score {b_mean:.2f} -> {f_mean:.2f}; pass rate "
              f"{bm['pass_rate']:.0%} -> {fm['pass_rate']:.0%}; key-fact recall {bm['key_fact_recall']:.0%} -> {fm['key_fact_recall']:.0%})")
    out.print(f"Paired difference {diff:+.2f}, {cfg.registry.confidence:.0%} CI [{low:+.2f}, {high:+.2f}]; "
              f"{better} questions better, {worse} worse, {len(pairs) - better - worse} unchanged")
    return {"delta_mean": diff, "delta_ci_low": low, "delta_ci_high": high, "improvement_pct": rel_mean,
            "n_better": better, "n_worse": worse, "n_same": len(pairs) - better - worse}


def _print_summary(stage: str, judge: str, m: dict, unreliable: bool, limit: int | None) -> None:
    line = (f"{stage}: mean {m['mean_score']:.2f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}], pass rate {m['pass_rate']:.0%}, "
            f"key-fact recall {m['key_fact_recall']:.0%} | controls: echo {m['echo_mean']:.2f}, oracle {m['oracle_mean']:.2f} | judge {judge}")
    out.print(line)
    if unreliable:
        out.print(f"[bold red]judge unreliable:[/bold red] the echo control (question restated) averages {m['echo_mean']:.2f} >= {UNRELIABLE_ECHO}")
    if m["judge_failures"]:
        out.print(f"[yellow]{m['judge_failures']} answers could not be judged (refused or malformed every time)[/yellow]")
    if limit is not None:
        out.print(f"[yellow]partial run (--limit {limit}): tagged partial, never used by the registry gate[/yellow]")


def run(sem: Sem, cfg: Config, adapter: str | None = None, model: str | None = None, limit: int | None = None,
        promptfoo: bool = False) -> EvalResult:
    if adapter and model:
        raise OpenSEMError("pass --adapter or --model, not both")
    result = run_eval(sem, cfg, "evaluate", adapter=adapter, model_uri=model, limit=limit)
    if promptfoo:
        from opensem.judge.promptfoo import run_promptfoo

        adapter_name = None if model else (adapter or resolve_adapter(sem, None).name)
        answers = {r["question"]: r["answer"] for r in result.rows}
        run_promptfoo(sem, cfg, adapter=adapter_name, model_uri=model, eval_run_id=result.run_id, answers=answers)
    return result
