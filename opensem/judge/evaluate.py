"""`opensem baseline` and `opensem evaluate`: a model answers the golden set, a judge scores it.

Both stages first check the golden set (golden_lint.py), then use the same prompt format,
decoding and judge, so their numbers are comparable; `evaluate` finds the baseline run with the
same SEM, base model, golden-set digest, judge and prompt, and prints Baseline vs Fine-tuned with
key-fact accuracy first. Every evaluation also scores four controls with the same judge (echo,
oracle, shuffled, term soup: judge/controls.py) and is tagged unreliable when they show the judge
rewards answers that state no fact.
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
from opensem.distributed import shard_map, world
from opensem.errors import OpenSEMError
from opensem.adapters import check_adapter, logged_adapter, read_metadata, resolve_adapter
from opensem.golden import GoldenItem, golden_digest, load_golden_for_scoring
from opensem.judge.references import LABELS as REFERENCE_LABELS, TABLE as REFERENCES_TABLE, cell as reference_cell
from opensem.retrieval import settings as retrieval_settings
from opensem.tags import (
    TAG_ANSWERED_ON, TAG_BASELINE_RUN, TAG_CANDIDATE_URI, TAG_GOLDEN, TAG_GOLDEN_LINT, TAG_JUDGE,
    TAG_JUDGE_FORMAT, TAG_MODEL, TAG_OPEN_BOOK, TAG_PARTIAL, TAG_PROMPT, TAG_UNRELIABLE, TAG_UNRELIABLE_REASON,
)
from opensem.workspace import Sem

console = Console(stderr=True, quiet=not world().main)  # under torchrun, rank 0 speaks for all
out = Console(soft_wrap=True)  # long result lines stay one line (grep-able in logs)

TABLE = "eval/per_question.json"
CONTROLS_TABLE = "eval/controls.json"


def prompt_digest(cfg: Config) -> str:
    """How the model is asked: system prompt, answer length and, when on, the retrieval settings.
    Answers are compared only when asked the same way, so a new system prompt gets a new
    baseline rather than the old one, and an open-book adapter is never compared with a
    closed-book baseline."""
    asked = {"system_prompt": cfg.model.system_prompt, "max_new_tokens": cfg.generation.max_new_tokens}
    if cfg.retrieval.enabled:  # left out when off, so the baselines measured before it stay valid
        asked["retrieval"] = retrieval_settings(cfg)
    if cfg.generation.answer != "free":  # likewise: free answers were all there was before
        asked["answer"] = {"mode": cfg.generation.answer, "quote_sentences": cfg.generation.quote_sentences}
    asked = json.dumps(asked)
    return hashlib.sha256(asked.encode()).hexdigest()[:12]


def answered_on(cfg: Config) -> str:
    """Where and in what precision the answers are generated ("cpu float32", "cuda bfloat16"):
    greedy decoding in 16 bits on a GPU can choose other tokens than fp32 on a CPU, so a baseline
    is compared only with evaluations answered the same way."""
    from opensem.models import answering_placement

    device, dtype = answering_placement(cfg.generation.device)
    return f"{device} {str(dtype).removeprefix('torch.')}"


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


def answer_format(answers: list[str]) -> dict:
    """How the answers are shaped (issue 12's format: a complete sentence, the fact first, one or
    two sentences): share that end as a complete sentence (no trailing fragment), and share of at
    most two sentences (pysbd, as the forge splits)."""
    from opensem.text.words import is_complete_sentence
    from opensem.text.reflow import split_sentences

    sentences = [split_sentences(a.strip()) or [""] for a in answers]
    return {
        "complete_answer_share": _mean([is_complete_sentence(s[-1]) for s in sentences]),
        "short_answer_share": _mean([len(s) <= 2 for s in sentences]),
    }


def run_eval(sem: Sem, cfg: Config, stage: str, *, adapter: str | None = None, model_uri: str | None = None,
             limit: int | None = None, nested: bool = False) -> EvalResult:
    from opensem import tracking
    from opensem.golden_lint import check_sem
    from opensem.judge.controls import unreliable
    from opensem.judge.stats import mean_ci

    items = load_golden_for_scoring(sem.golden_set)
    lint = check_sem(sem, cfg, items, console)  # a golden set that cannot tell right from wrong stops here
    digest = golden_digest(items)  # of the whole set, also when --limit scores only part of it
    if limit is not None:
        if limit < 1:
            raise OpenSEMError("--limit must be at least 1")
        items = items[:limit]
    judge = make_judge(cfg, sem)  # fails fast on a missing key, before any generation
    model_dir = None
    if stage != "baseline" and not model_uri:
        folder = resolve_adapter(sem, adapter)
        check_adapter(folder, cfg)
        adapter = folder.name
    elif model_uri:
        model_dir, logged_adapter = _download_model(model_uri)
        check_adapter(logged_adapter, cfg)
    baseline = find_baseline(sem, cfg, digest, judge.name) if stage == "evaluate" else None  # before generating
    under_test = "base" if stage == "baseline" else (model_uri or f"adapter:{adapter}")
    tags = {TAG_GOLDEN: digest, TAG_JUDGE: judge.name, TAG_PROMPT: prompt_digest(cfg), TAG_ANSWERED_ON: answered_on(cfg),
            TAG_PARTIAL: str(limit is not None).lower(), TAG_MODEL: under_test, TAG_OPEN_BOOK: str(cfg.retrieval.enabled).lower(),
            TAG_GOLDEN_LINT: f"passed, {lint.n_warnings} warnings"}
    if stage == "evaluate":  # the MLflow model `opensem promote` would register
        candidate_uri = model_uri or read_metadata(sem.adapters_dir / adapter / "opensem_run.json").get("model_uri")
        if candidate_uri:
            tags[TAG_CANDIDATE_URI] = candidate_uri

    with tracking.stage_run(sem, stage, cfg, nested=nested, tags=tags) as tracked:
        console.print(f"[bold]{stage}[/bold] {sem.name}: {len(items)} golden questions, model {under_test}, judge {judge.name}")
        retriever = open_book_retriever(sem, cfg)
        answers, seconds, gen_tokens = _answer(sem, cfg, [i.question for i in items], stage, adapter, model_dir, retriever)
        if tracked.follower:  # torchrun: this rank answered its share; rank 0 judges, logs and prints
            return EvalResult("", {}, [])
        golden_dataset = tracking.log_golden_dataset(sem, items, digest)
        judged_model = tracking.logged_model_id(tags.get(TAG_CANDIDATE_URI))
        if not any(a.strip() for a in answers):
            raise OpenSEMError(f"{under_test} answered all {len(items)} golden questions with nothing: its weights are damaged "
                               "or it was not trained for this chat template; nothing was scored")
        verdicts = judge.judge(items, answers)
        control_metrics, control_rows = _score_controls(sem, cfg, judge, items)
        reference_metrics, reference_rows = _score_references(cfg, judge, items, retriever)

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
        metrics = {
            "mean_score": mean, "ci_low": low, "ci_high": high,
            "pass_rate": _mean([s >= cfg.judge.pass_score for s in scored]),
            "key_fact_recall": _mean([r["key_fact_recall"] for r in rows if r["key_fact_recall"] is not None]),
            **control_metrics, **reference_metrics,
            "mean_answer_chars": _mean([len(a) for a in answers]),
            **answer_format(answers),
            "gen_tokens_per_s": gen_tokens / seconds if seconds else 0.0,
            "n_items": len(items), "judge_failures": len(rows) - len(scored),
        }
        baseline_mean = mean if baseline is None else baseline.data.metrics.get("mean_score", float("nan"))
        why_unreliable = unreliable(metrics, baseline_mean)
        tracked.set_tags({TAG_UNRELIABLE: str(bool(why_unreliable)).lower(),
                          TAG_UNRELIABLE_REASON: "; ".join(why_unreliable)[:4000] or "-"})
        # a control that could not run is left out; an evaluation's metrics also go to the model it judged
        tracked.log_metrics({k: v for k, v in metrics.items() if v == v}, model_id=judged_model, dataset=golden_dataset)
        _log_table(tracked, rows)
        _log_judged_questions(items, answers, verdicts, judged_model)
        _log_table(tracked, control_rows, CONTROLS_TABLE)
        _log_table(tracked, reference_rows, REFERENCES_TABLE)
        cost = getattr(judge, "cost_usd", 0.0)
        if cost:
            tracked.log_metrics({"judge_cost_usd": cost})
        if getattr(judge, "response_format_used", None):  # which JSON format an openai-compatible judge took
            tracked.set_tags({TAG_JUDGE_FORMAT: judge.response_format_used})
        result = EvalResult(tracked.run_id, metrics, rows)

        _print_summary(stage, judge.name, metrics, why_unreliable, limit)
        if baseline is not None:
            comparison = compare(baseline, result, cfg, items)
            tracked.log_metrics({k: v for k, v in comparison.items() if isinstance(v, (int, float)) and v == v})
            tracked.set_tags({TAG_BASELINE_RUN: baseline.info.run_id})
    return result


def _score_controls(sem: Sem, cfg: Config, judge, items: list[GoldenItem]) -> tuple[dict, list[dict]]:
    """Score the four controls (judge/controls.py) with the judge under test: their metrics
    (<control>_mean, _pass_rate, _recall) and one row per item and control."""
    from opensem.judge.controls import control_answers

    metrics: dict = {}
    rows: list[dict] = []
    for name, answers in control_answers(items, sem.raw_dir, cfg.generation.max_new_tokens).items():
        if answers is None:  # shuffled needs two items, soup needs the raw documents
            continue
        verdicts = judge.judge(items, answers)
        scores = [v.score for v in verdicts if v]
        metrics[f"{name}_mean"] = _mean(scores)
        metrics[f"{name}_pass_rate"] = _mean([s >= cfg.judge.pass_score for s in scores])
        metrics[f"{name}_recall"] = _mean([v.key_fact_recall for v in verdicts if v])
        rows += [{"control": name, "id": i.id, "answer": a, "score": v.score if v else None,
                  "reason": v.reason if v else "judge failed"} for i, a, v in zip(items, answers, verdicts)]
    return metrics, rows


def _score_references(cfg: Config, judge, items: list[GoldenItem], retriever) -> tuple[dict, list[dict]]:
    """Open book: the copy references (judge/references.py) from the passages the models read,
    scored by the judge under test. Closed book: none."""
    if retriever is None:
        return {}, []
    from opensem.judge.references import copy_answers, score

    return score(judge, items, copy_answers(retriever, [i.question for i in items]), cfg.judge.pass_score)


def open_book_retriever(sem: Sem, cfg: Config):
    """The SEM's retriever when retrieval is on (None otherwise): the one the base model and the
    adapter read from and the copy references quote."""
    if not cfg.retrieval.enabled:
        return None
    from transformers import AutoTokenizer

    from opensem.models import resolve_base_model
    from opensem.retrieval import for_sem

    return for_sem(sem, cfg, AutoTokenizer.from_pretrained(resolve_base_model(cfg.model.base, sem.base_models_dir)))


def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else float("nan")


def _answer(sem: Sem, cfg: Config, questions: list[str], stage: str, adapter: str | None, model_dir: Path | None,
            retriever=None):
    """(answers, seconds spent generating, tokens generated) from the model under test: the
    adapter, or the logged MLflow model in model_dir (see _download_model, which reads its own
    logged passages). Open book: asked with `retriever`'s passages, built here when not given.
    Under torchrun each rank answers its share of the questions and every rank gets all the
    answers back in order (greedy decoding: the same answers one process would give)."""
    g = cfg.generation
    if model_dir:
        import mlflow
        import pandas as pd

        model = mlflow.pyfunc.load_model(str(model_dir))
        start = time.perf_counter()
        answers = shard_map(lambda part: list(model.predict(pd.DataFrame({"question": part}), params={"max_new_tokens": g.max_new_tokens})),
                            questions)
        return answers, time.perf_counter() - start, sum(len(a.split()) for a in answers)

    from opensem.models import load_model_and_tokenizer, resolve_base_model
    from opensem.retrieval import for_sem

    model, tokenizer = load_model_and_tokenizer(resolve_base_model(cfg.model.base, sem.base_models_dir), g.device)
    retriever = retriever or for_sem(sem, cfg, tokenizer)
    if stage != "baseline":
        from peft import PeftModel

        folder = resolve_adapter(sem, adapter)
        model = PeftModel.from_pretrained(model, str(folder))
    start = time.perf_counter()
    answers = shard_map(lambda part: _answer_in_batches(model, tokenizer, cfg, part, retriever), questions)
    seconds = time.perf_counter() - start  # the slowest rank's: the gather waits for it
    tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    return answers, seconds, tokens


def _answer_in_batches(model, tokenizer, cfg: Config, questions: list[str], retriever) -> list[str]:
    from rich.progress import Progress

    from opensem.generate import answer_questions

    g = cfg.generation
    answers: list[str] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("answering", total=len(questions))
        for k in range(0, len(questions), g.batch_size):
            batch = questions[k:k + g.batch_size]
            answers += answer_questions(model, tokenizer, batch, cfg.model.system_prompt, g.max_new_tokens, g.batch_size, retriever,
                                        g.answer, g.quote_sentences)
            progress.advance(task, len(batch))
    return answers


def _download_model(model_uri: str) -> tuple[Path, Path]:
    """A logged OpenSEM model (models:/..., runs:/..., a path) as a local folder, and the adapter
    folder in it, so that the adapter can be checked before the model is loaded."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    except (MlflowException, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OpenSEMError(f"cannot load model {model_uri!r}: {first}; pass a model OpenSEM logged, "
                           "e.g. models:/opensem-legal@champion after `opensem promote --sem legal`") from None
    return local, logged_adapter(local, model_uri)


def _log_table(tracked, rows: list[dict], artifact: str = TABLE) -> None:
    """An MLflow table (what comparisons read back) and the same rows as CSV, for people."""
    import csv
    import io

    import mlflow

    if not rows:
        return
    mlflow.log_table(data={k: [r[k] for r in rows] for k in rows[0]}, artifact_file=artifact, run_id=tracked.run_id)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    tracked.log_text(buffer.getvalue(), artifact.removesuffix(".json") + ".csv")


def _log_judged_questions(items: list[GoldenItem], answers: list[str], verdicts: list, model_id: str | None) -> None:
    """Every golden question as an MLflow trace of the active run, with its answer, expectations
    (the golden answer, its key facts) and two assessments, through mlflow.genai.evaluate: the
    offline key-fact check as a scorer (`key_facts_stated`, computed here) and the judge's verdict
    (`judge_score`, the 1-5 score already given: an LLM judge is not paid twice). MLflow's run
    page then lists each answer with its scores under Traces and compares it with the baseline's.
    The table eval/per_question.json stays the record the comparison reads."""
    import contextlib
    import io
    import os

    import mlflow
    from mlflow.entities import Feedback
    from mlflow.genai.scorers import scorer

    from opensem.judge.offline import key_fact_recall

    verdict_of = {item.id: verdict for item, verdict in zip(items, verdicts)}

    @scorer(name="key_facts_stated")
    def key_facts_stated(outputs: str, expectations: dict) -> Feedback:
        facts = expectations["key_facts"]
        recall = key_fact_recall(outputs, facts)
        return Feedback(value=recall, rationale=f"{round(recall * len(facts))} of {len(facts)} key facts: {'; '.join(facts)}")

    @scorer(name="judge_score")
    def judge_score(expectations: dict) -> Feedback:
        verdict = verdict_of[expectations["golden_id"]]
        return Feedback(value=verdict.score, rationale=verdict.reason) if verdict else Feedback(error="the judge failed")

    data = [{"inputs": {"question": item.question}, "outputs": answer,
             "expectations": {"expected_response": item.answer, "key_facts": item.key_facts, "golden_id": item.id}}
            for item, answer in zip(items, answers)]
    # one worker: the scorers cost nothing, and on a SQLite store parallel workers lost traces
    # (25 of 50 logged, measured with MLflow 3.17); MLflow's banner and bar go to a buffer
    chosen = "MLFLOW_GENAI_EVAL_MAX_WORKERS" in os.environ  # a user's own setting wins
    os.environ.setdefault("MLFLOW_GENAI_EVAL_MAX_WORKERS", "1")
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            mlflow.genai.evaluate(data=data, scorers=[key_facts_stated, judge_score], model_id=model_id)
    except Exception as e:  # a view of numbers already logged: a server without tracing loses only the view
        console.print(f"[yellow]warning:[/yellow] per-question traces not logged ({type(e).__name__}: {str(e)[:200]})")
    finally:
        if not chosen:
            os.environ.pop("MLFLOW_GENAI_EVAL_MAX_WORKERS", None)


def find_baseline(sem: Sem, cfg: Config, digest: str, judge_name: str):
    """The newest complete baseline run for this SEM, base model, golden set, judge and prompt; a
    clear error naming what differs when only incomparable ones exist."""
    from opensem.tags import TAG_BASE_MODEL
    from opensem.tracking import configure, stage_runs

    configure(cfg, sem.root)
    runs = stage_runs(sem, "baseline", f" AND tags.`{TAG_PARTIAL}` = 'false'")
    if not runs:
        raise OpenSEMError(f"no complete baseline run for SEM {sem.name}: run `opensem baseline --sem {sem.name}` first")
    wanted = {TAG_BASE_MODEL: cfg.model.base, TAG_GOLDEN: digest, TAG_JUDGE: judge_name, TAG_PROMPT: prompt_digest(cfg),
              TAG_ANSWERED_ON: answered_on(cfg)}
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
    """An evaluation's per-question rows as logged; a failed judgment reads back as None, never NaN."""
    import mlflow

    from opensem.judge.paired import is_scored

    # The run's own experiment, named: the fluent default is the process's active experiment,
    # which is not set when this process only resumed a run (a re-run pipeline)
    experiment_id = mlflow.get_run(run_id).info.experiment_id
    frame = mlflow.MlflowClient().load_table(experiment_id, TABLE, run_ids=[run_id])
    rows = frame.drop(columns=[c for c in ("run_id",) if c in frame.columns]).to_dict("records")
    for row in rows:
        for key in ("score", "key_fact_recall"):
            if key in row and not is_scored(row[key]):
                row[key] = None
    return rows


def compare(baseline_run, result: EvalResult, cfg: Config, items: list[GoldenItem]) -> dict:
    """Print Baseline vs Fine-tuned - key-fact accuracy first - and return the comparison numbers.
    Items the judge failed on in either run are left out of both (judge/paired.py)."""
    from opensem.judge.paired import pair

    paired = pair(load_rows(baseline_run.info.run_id), result.rows)
    if not paired.ids:
        raise OpenSEMError("the baseline and this evaluation share no scored question; re-run the baseline")
    r = cfg.registry
    gain, low, high = paired.score_gain(r.confidence, r.bootstrap_resamples)
    rgain, rlow, rhigh = paired.recall_gain(r.confidence, r.bootstrap_resamples)
    means = paired.means()
    better, worse, same = paired.counts()
    bm, fm = baseline_run.data.metrics, result.metrics

    table = Table(title="Baseline vs Fine-tuned", caption="tag rows: key-fact accuracy")
    for column in ("", "Baseline", "Fine-tuned"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row("key-fact accuracy", f"{means['reference_recall']:.0%}", f"{means['candidate_recall']:.0%}")
    table.add_row("mean judge score, 1-5", f"{means['reference_score']:.2f}", f"{means['candidate_score']:.2f}")
    table.add_row("pass rate (score >= %d)" % cfg.judge.pass_score, f"{bm['pass_rate']:.0%}", f"{fm['pass_rate']:.0%}")
    for name, label in CONTROL_LABELS.items():
        if f"{name}_mean" in fm:
            table.add_row(f"control: {label}", control_cell(bm, name), control_cell(fm, name))
    for name, label in REFERENCE_LABELS.items():
        if f"{name}_recall" in fm:
            table.add_row(f"reference: {label}", reference_cell(bm, name), reference_cell(fm, name))
    tag_names = sorted({t for i in items for t in i.tags})
    by_id = {i.id: i for i in items}
    for tag in tag_names:
        picked = [k for k, item_id in enumerate(paired.ids) if tag in by_id[item_id].tags]
        if picked:
            table.add_row(f"  tag {tag} ({len(picked)})",
                          f"{_mean(paired.reference_recall[k] for k in picked):.0%}", f"{_mean(paired.candidate_recall[k] for k in picked):.0%}")
    out.print(table)
    points = 100 * rgain
    out.print(f"Key-fact accuracy {means['reference_recall']:.0%} -> {means['candidate_recall']:.0%} ({points:+.0f} points, "
              f"{r.confidence:.0%} CI [{100 * rlow:+.0f}, {100 * rhigh:+.0f}]) on {len(paired.ids)} questions")
    out.print(f"Mean judge score {means['reference_score']:.2f} -> {means['candidate_score']:.2f} on the 1-5 scale "
              f"({gain:+.2f}, {r.confidence:.0%} CI [{low:+.2f}, {high:+.2f}]); pass rate {bm['pass_rate']:.0%} -> {fm['pass_rate']:.0%}; "
              f"{better} questions better, {worse} worse, {same} unchanged")
    if "copy_top1_recall" in fm:
        top1, tuned = fm["copy_top1_recall"], fm["key_fact_recall"]
        verdict = "reads better than" if tuned > top1 else "reads worse than"
        out.print(f"Copy reference: quoting the top-ranked sentence states {top1:.0%} of the key facts, the top two "
                  f"{fm['copy_top2_recall']:.0%}; the fine-tuned model ({tuned:.0%}) {verdict} quoting the top-ranked sentence")
    if paired.excluded:
        out.print(f"[yellow]{paired.excluded} questions left out of both: the judge failed to score them in one of the runs[/yellow]")
    if cfg.golden.selection_note:
        out.print(f"[yellow]Selection effect:[/yellow] {cfg.golden.selection_note}", highlight=False)
    return {"recall_gain": rgain, "recall_gain_ci_low": rlow, "recall_gain_ci_high": rhigh,
            "delta_mean": gain, "delta_ci_low": low, "delta_ci_high": high,
            "n_better": better, "n_worse": worse, "n_same": same, "n_excluded": paired.excluded}


CONTROL_LABELS = {"echo": "echo (question restated)", "oracle": "oracle (golden answer)",
                  "shuffled": "shuffled (another item's answer)", "soup": "term soup (section's words)"}


def control_cell(metrics: dict, name: str) -> str:
    if f"{name}_mean" not in metrics:
        return "-"
    return f"mean {metrics[f'{name}_mean']:.2f}, pass {metrics[f'{name}_pass_rate']:.0%}"


def _print_summary(stage: str, judge: str, m: dict, why_unreliable: list[str], limit: int | None) -> None:
    controls = ", ".join(f"{name} {m[f'{name}_mean']:.2f} (pass {m[f'{name}_pass_rate']:.0%})" for name in CONTROL_LABELS if f"{name}_mean" in m)
    references = ", ".join(f"{name.replace('_', '-')} {m[f'{name}_recall']:.0%}" for name in REFERENCE_LABELS if f"{name}_recall" in m)
    out.print(f"{stage}: key-fact accuracy {m['key_fact_recall']:.0%}, mean score {m['mean_score']:.2f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}], "
              f"pass rate {m['pass_rate']:.0%} | controls: {controls}{f' | copy references: {references}' if references else ''} | judge {judge}")
    for why in why_unreliable:
        out.print(f"[bold red]judge unreliable:[/bold red] {why}; its scores are not evidence and the registry gate will refuse")
    if m["judge_failures"]:
        out.print(f"[yellow]{m['judge_failures']} answers could not be judged (refused or malformed every time); "
                  f"they are left out of every comparison[/yellow]")
    if limit is not None:
        out.print(f"[yellow]partial run (--limit {limit}): tagged partial, never used by the registry gate[/yellow]")


def run(sem: Sem, cfg: Config, adapter: str | None = None, model: str | None = None, limit: int | None = None,
        promptfoo: bool = False) -> EvalResult:
    if adapter and model:
        raise OpenSEMError("pass --adapter or --model, not both")
    result = run_eval(sem, cfg, "evaluate", adapter=adapter, model_uri=model, limit=limit)
    if promptfoo and world().main:
        from opensem.judge.promptfoo import run_promptfoo

        adapter_name = None if model else (adapter or resolve_adapter(sem, None).name)
        answers = {r["question"]: r["answer"] for r in result.rows}
        run_promptfoo(sem, cfg, adapter=adapter_name, model_uri=model, eval_run_id=result.run_id, answers=answers)
    return result
