"""`opensem pipeline`: forge -> baseline -> train -> [prefer, with preference.enabled] ->
evaluate -> promote -> report, each stage a nested MLflow run under one parent run.

Re-running is cheap and safe. data/<sem>/pipeline.json records, per stage, a key - a digest of
the config sections the stage reads plus what it consumed from the stage before - and what the
stage made. A stage whose key is unchanged is skipped, so a failed stage is re-run without
redoing the finished ones, and changing e.g. the LoRA rank re-runs training and what follows,
not forge. The baseline is the control: when a complete baseline run exists for the same base
model, golden set and judge it is reused, never re-made (locked).

Under torchrun every rank walks the same steps: rank 0 decides what is skipped and tells the
others, runs forge, promote and report alone while they wait, and keeps pipeline.json; the
baseline and evaluation answer in shards and training is data-parallel on every rank.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from rich.console import Console

from opensem.config import Config
from opensem.distributed import barrier, broadcast, world
from opensem.errors import OpenSEMError
from opensem.io import atomic_write_json, sha256_file
from opensem.tags import TAG_BASELINE_RUN, TAG_DECISION
from opensem.workspace import Sem

console = Console(stderr=True, quiet=not world().main)  # under torchrun, rank 0 speaks for all


def _key(cfg: Config, sections: tuple[str, ...], *inputs: str) -> str:
    data = cfg.model_dump(mode="json")
    if "training" in sections:
        data["training"] = {k: v for k, v in data["training"].items() if k != "run_name"}
    if not cfg.retrieval.enabled:  # off: the keys recorded before retrieval existed stay valid
        sections = tuple(s for s in sections if s != "retrieval")
    blob = json.dumps([{s: data[s] for s in sections}, inputs], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run(sem: Sem, cfg: Config) -> dict:
    from opensem import forge, hardware, registry, tracking, train
    from opensem.golden import golden_digest, load_golden_for_scoring
    from opensem.golden_lint import check_sem
    from opensem.judge.evaluate import run_eval

    main = world().main
    if world().distributed and cfg.preference.enabled:
        raise OpenSEMError("preference.enabled: the preference stage runs as one process, and this pipeline runs under "
                           "torchrun; run `opensem prefer` and `opensem evaluate` without torchrun after it, or turn it off")
    hardware.import_unsloth_first(hardware.plan(hardware.detect(), cfg.training, processes=world().size))
    # the golden set is needed from the baseline on: check it before forge spends anything
    items = load_golden_for_scoring(sem.golden_set)
    check_sem(sem, cfg, items, console)
    digest = golden_digest(items)
    path = sem.root / "data" / sem.name / "pipeline.json"
    try:
        state = json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OpenSEMError(f"{path} is damaged (not the JSON the pipeline writes); delete it and run the pipeline again: "
                           "the stages then run anew, the baseline is found again in MLflow") from None
    done: dict = state.setdefault("stages", {})

    def finished(stage: str, key: str, every_rank: bool = True) -> bool:
        """Whether pipeline.json records `stage` done under `key`; rank 0's record decides for
        every rank (every_rank=False: a step rank 0 takes alone, so nobody else is asked)."""
        recorded = done.get(stage, {}).get("key") == key
        if broadcast(recorded) if every_rank else recorded:
            console.print(f"[dim]pipeline: {stage} already done for this config, skipped[/dim]")
            return True
        return False

    def record(stage: str, key: str, **made) -> None:
        done[stage] = {"key": key, **made}
        if main:
            atomic_write_json(path, state)

    def alone(step):
        """A step rank 0 runs while the other ranks wait (a world of one: just the step)."""
        if main:
            step()
        barrier()

    with tracking.stage_run(sem, "pipeline", cfg, run_id=state.get("parent_run_id")) as parent:
        state["parent_run_id"] = parent.run_id
        if main:
            atomic_write_json(path, state)

        # decontamination reads the golden and dev sets: editing either forges again
        key = _key(cfg, ("model", "forge", "retrieval"), _raw_files_digest(sem), *(sha256_file(p) for p in (sem.golden_set, sem.dev_set) if p.is_file()))
        if not finished("forge", key):
            alone(lambda: forge.run(sem, cfg))
            record("forge", key)

        baseline_id = broadcast(_baseline_run_id(sem, cfg, digest) if main else None)
        if baseline_id:
            console.print(f"pipeline: baseline reused (run {baseline_id[:8]}): the control is made once, then locked")
            record("baseline", digest, run_id=baseline_id)
        else:
            result = run_eval(sem, cfg, "baseline")
            record("baseline", digest, run_id=result.run_id)

        key = _key(cfg, ("model", "lora", "training", "retrieval"), sha256_file(sem.processed_dir / "train.jsonl"))
        if not finished("train", key):
            pending = done.get("train", {})
            name = pending.get("run_name") if pending.get("pending") == key else None  # an interrupted run resumes
            name = broadcast(cfg.training.run_name or name or f"pipeline-{datetime.now():%Y%m%d-%H%M%S}")
            done["train"] = {"key": None, "pending": key, "run_name": name}  # recorded before training starts
            if main:
                atomic_write_json(path, state)
            train_cfg = cfg.model_copy(deep=True)
            train_cfg.training.run_name = name
            from opensem.stages import raise_if_interrupted

            raise_if_interrupted(train.run(sem, train_cfg))  # a preempted run is resumed by the next pipeline
            record("train", key, run_name=name)
        adapter = done["train"]["run_name"]

        if cfg.preference.enabled:  # preference training over the SFT adapter; evaluate takes its adapter
            from opensem import preference

            rows = sem.processed_dir / "preference_train.jsonl"  # absent: the stage says how to make it
            key = _key(cfg, ("model", "preference", "training", "retrieval"), adapter, sha256_file(rows) if rows.is_file() else "")
            if not finished("prefer", key):
                prefer_cfg = cfg.model_copy(deep=True)
                prefer_cfg.preference.run_name = cfg.preference.run_name or f"{adapter}-pref"  # a rerun resumes it
                from opensem.stages import raise_if_interrupted

                raise_if_interrupted(preference.run(sem, prefer_cfg, adapter=adapter))
                record("prefer", key, run_name=prefer_cfg.preference.run_name)
            adapter = done["prefer"]["run_name"]

        key = _key(cfg, ("model", "generation", "retrieval", "judge"), adapter, digest)
        if not finished("evaluate", key):
            result = run_eval(sem, cfg, "evaluate", adapter=adapter)
            record("evaluate", key, run_id=result.run_id)
        if not main:  # promote, the headline and the report are rank 0's
            barrier()
            return {}
        eval_run = done["evaluate"]["run_id"]

        key = _key(cfg, ("registry",), eval_run)
        if not finished("promote", key, every_rank=False):
            decision = registry.run(sem, cfg, run=eval_run)
            record("promote", key, version=decision.version, promoted=decision.promoted)

        _headline(parent, eval_run, done["promote"])

        from opensem import report

        report.run(sem, cfg)
    barrier()  # the other ranks end with rank 0
    return state


def _baseline_run_id(sem: Sem, cfg: Config, digest: str) -> str | None:
    """The id of the locked baseline run for this golden set and judge, or None."""
    from opensem.judge.evaluate import find_baseline, judge_name

    try:
        return find_baseline(sem, cfg, digest, judge_name(cfg)).info.run_id
    except OpenSEMError:
        return None


def _headline(parent, eval_run_id: str, promoted: dict) -> None:
    """The outcome on the pipeline's own run, where the runs list shows it: key-fact accuracy base
    -> tuned, the gain with its interval, the copy reference (open book) and the decision, as
    metrics, tags and the run's description."""
    import mlflow

    from opensem.tags import NOTE

    m = mlflow.get_run(eval_run_id).data.metrics
    base = mlflow.get_run(mlflow.get_run(eval_run_id).data.tags[TAG_BASELINE_RUN]).data.metrics
    headline = {"baseline_key_fact_accuracy": base.get("key_fact_recall"), "key_fact_accuracy": m.get("key_fact_recall"),
                "key_fact_gain": m.get("recall_gain"), "key_fact_gain_ci_low": m.get("recall_gain_ci_low"),
                "key_fact_gain_ci_high": m.get("recall_gain_ci_high"), "copy_top1_key_fact_accuracy": m.get("copy_top1_recall"),
                "promoted": float(bool(promoted.get("promoted")))}
    parent.log_metrics({k: v for k, v in headline.items() if v is not None})
    decision = "promoted" if promoted.get("promoted") else "not promoted"
    if None in (headline["baseline_key_fact_accuracy"], headline["key_fact_accuracy"], headline["key_fact_gain"]):
        return
    text = (f"Key-fact accuracy {headline['baseline_key_fact_accuracy']:.0%} -> {headline['key_fact_accuracy']:.0%} "
            f"({100 * headline['key_fact_gain']:+.0f} points, 95% CI [{100 * headline['key_fact_gain_ci_low']:+.0f}, "
            f"{100 * headline['key_fact_gain_ci_high']:+.0f}]); {decision} (model version {promoted.get('version')})")
    if headline["copy_top1_key_fact_accuracy"] is not None:
        text += f"; quoting the top-ranked sentence: {headline['copy_top1_key_fact_accuracy']:.0%}"
    parent.set_tags({TAG_DECISION: decision.replace("not promoted", "refused"), NOTE: text})


def _raw_files_digest(sem: Sem) -> str:
    """Of the raw files' bytes: decides whether forge must run again, before it reads them."""
    h = hashlib.sha256()
    for p in sorted(q for q in sem.raw_dir.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(sem.raw_dir)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()
