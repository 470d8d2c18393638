"""`opensem promote`: register the evaluated adapter; move alias `champion` only when it wins.

The registered model is `<registry.model_prefix><sem>` (opensem-legal). Every promote registers
the candidate as a new version with alias `candidate`; `champion` moves to it only when its
evaluation beats the baseline AND the current champion (if any), each by this rule:

    1. both evaluations used the same golden-set digest, judge, base model and prompt
    2. the judge is reliable in both: its validity controls passed (judge/controls.py)
    3. the judge failed to score at most judge.max_failures of the items in each; failed items
       are left out of both arms before any statistic (judge/paired.py)
    4. a factual gain: key-fact accuracy rose, and the lower bound of its paired bootstrap
       interval is above 0
    5. mean judge score gain >= registry.min_improvement, and its interval's lower bound above 0
    6. open book (registry.beat_copy_top1, on by default): key-fact accuracy above copy-top1's,
       the top-ranked sentence of the passages it read, quoted verbatim (judge/references.py)
A tie, a gain the judge's noise can explain, or a gain in on-topic wording with no more facts
(1 -> 2 scores) is never promoted. The decision, its reasons and its numbers are printed and
written to the version's tags and description.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console

from opensem.config import Config
from opensem.errors import OpenSEMError
from opensem.tags import (
    COMPARABLE, TAG_BASELINE_RUN, TAG_CANDIDATE_URI, TAG_DECISION, TAG_DECISION_REASONS, TAG_EVAL_RUN,
    TAG_MODEL_VERSION,
)
from opensem.workspace import Sem

out = Console(soft_wrap=True)


@dataclass
class Verdict:
    passed: bool
    reason: str
    numbers: dict = field(default_factory=dict)


@dataclass
class Decision:
    promoted: bool
    version: str
    reasons: list[str]


def beats(candidate_run, reference_run, cfg: Config, what: str) -> Verdict:
    """Apply the rule to two evaluation runs (the candidate's and the baseline's or champion's)."""
    from opensem.judge.evaluate import load_rows
    from opensem.tags import TAG_UNRELIABLE, TAG_UNRELIABLE_REASON
    from opensem.judge.paired import pair

    for tag in COMPARABLE:
        a, b = candidate_run.data.tags.get(tag), reference_run.data.tags.get(tag)
        if a != b:
            return Verdict(False, f"not comparable with the {what}: {tag.split('.')[-1]} {a!r} vs {b!r}")
    for run, whose in ((candidate_run, "this evaluation"), (reference_run, f"the {what}'s evaluation")):
        state = run.data.tags.get(TAG_UNRELIABLE)
        if state is None:
            return Verdict(False, f"{whose} (run {run.info.run_id[:8]}) has no validity controls; re-run it with this version")
        if state != "false":
            return Verdict(False, f"judge unreliable in {whose}: {run.data.tags.get(TAG_UNRELIABLE_REASON, '?')}")
    paired = pair(load_rows(reference_run.info.run_id), load_rows(candidate_run.info.run_id))
    allowed = cfg.judge.failures_allowed()
    for share, whose in zip(paired.failure_shares(), (f"the {what}'s evaluation", "this evaluation")):
        if share > allowed:
            return Verdict(False, f"the judge failed to score {share:.0%} of the items in {whose} "
                                  f"(judge.max_failures {allowed:.0%}); fix the judge and evaluate again")
    if not paired.ids:
        return Verdict(False, f"no question scored in both this evaluation and the {what}'s")
    r = cfg.registry
    gain, low, high = paired.score_gain(r.confidence, r.bootstrap_resamples)
    rgain, rlow, rhigh = paired.recall_gain(r.confidence, r.bootstrap_resamples)
    means = paired.means()
    numbers = {f"{what}_gain": gain, f"{what}_gain_ci_low": low, f"{what}_gain_ci_high": high,
               f"{what}_recall_gain": rgain, f"{what}_recall_gain_ci_low": rlow, f"{what}_recall_gain_ci_high": rhigh,
               f"{what}_key_fact_recall": means["reference_recall"], "key_fact_recall": means["candidate_recall"]}
    summary = (f"key-fact accuracy {means['reference_recall']:.0%} -> {means['candidate_recall']:.0%} over the {what} "
               f"({100 * rgain:+.0f} points, CI [{100 * rlow:+.0f}, {100 * rhigh:+.0f}]), mean score gain {gain:+.2f} "
               f"(CI [{low:+.2f}, {high:+.2f}]) on {len(paired.ids)} questions")
    if rhigh < 0:
        return Verdict(False, f"{summary}: worse than the {what}, fewer key facts (the key-fact accuracy interval lies below 0)", numbers)
    if rlow <= 0:
        return Verdict(False, f"{summary}: no factual gain (the key-fact accuracy interval reaches 0)", numbers)
    if gain < r.min_improvement:
        return Verdict(False, f"{summary}: mean score gain below registry.min_improvement {r.min_improvement}", numbers)
    if low <= 0:
        return Verdict(False, f"{summary}: mean score gain inside the judge's noise (interval reaches 0)", numbers)
    return Verdict(True, summary, numbers)


def beats_copy_top1(candidate_run) -> Verdict:
    """Rule 6: does the candidate state more key facts than quoting the top-ranked sentence of the
    passages it read? Both numbers come from the candidate's own evaluation (same items, judge and
    passages)."""
    m = candidate_run.data.metrics
    if "copy_top1_recall" not in m:
        return Verdict(False, f"evaluate run {candidate_run.info.run_id[:8]} has no copy references (open book); "
                              "re-run `opensem evaluate` with this version, or --set registry.beat_copy_top1=false")
    tuned, top1 = m["key_fact_recall"], m["copy_top1_recall"]
    numbers = {"copy_top1_key_fact_recall": top1, "copy_top1_margin": tuned - top1}
    summary = f"key-fact accuracy {tuned:.0%} against {top1:.0%} for quoting the top-ranked sentence (copy-top1)"
    if tuned <= top1:
        how = "worse than" if tuned < top1 else "no better than"
        return Verdict(False, f"{summary}: reads {how} quoting the top-ranked sentence "
                              "(registry.beat_copy_top1; --set registry.beat_copy_top1=false judges without it)", numbers)
    return Verdict(True, summary, numbers)


def _open_book(evaluation_run) -> bool:
    """Was the candidate asked with passages? (Its evaluation says; one from before the tag
    existed says so by its copy-reference metrics.)"""
    from opensem.tags import TAG_OPEN_BOOK

    return evaluation_run.data.tags.get(TAG_OPEN_BOOK) == "true" or "copy_top1_recall" in evaluation_run.data.metrics


def find_candidate_eval(sem: Sem, run_id: str | None):
    import mlflow

    from opensem.tags import TAG_PARTIAL, TAG_SEM, TAG_STAGE
    from opensem.tracking import stage_runs

    if run_id:
        try:
            run = mlflow.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            raise OpenSEMError(f"no run with id {run_id!r} in {mlflow.get_tracking_uri()}: pass an evaluate run's id "
                               f"(the evaluate stage prints it; or leave --run out for the newest)") from None
        if run.data.tags.get(TAG_STAGE) != "evaluate" or run.data.tags.get(TAG_SEM) != sem.name:
            raise OpenSEMError(f"run {run_id} is not an evaluate run of SEM {sem.name}")
    else:
        runs = stage_runs(sem, "evaluate", max_results=1)
        if not runs:
            raise OpenSEMError(f"no finished evaluate run for SEM {sem.name}: run `opensem evaluate --sem {sem.name}` first")
        run = runs[0]
    if run.data.tags.get(TAG_PARTIAL) == "true":
        raise OpenSEMError(f"evaluate run {run.info.run_id[:8]} scored only part of the golden set (--limit); evaluate in full to promote")
    if not run.data.tags.get(TAG_CANDIDATE_URI):
        raise OpenSEMError(f"evaluate run {run.info.run_id[:8]} records no model to register; evaluate a trained adapter")
    return run


def run(sem: Sem, cfg: Config, run: str | None = None) -> Decision:
    from opensem import tracking

    tracking.configure(cfg, sem.root)
    candidate = find_candidate_eval(sem, run)
    with tracking.stage_run(sem, "promote", cfg, tags={TAG_EVAL_RUN: candidate.info.run_id}) as tracked:
        decision = _decide(sem, cfg, candidate)
        tracked.set_tags({TAG_DECISION: "promoted" if decision.promoted else "refused",
                          TAG_MODEL_VERSION: decision.version})
        tracked.log_text("\n".join(decision.reasons) + "\n", "promote/decision.txt")
    return decision


def _decide(sem: Sem, cfg: Config, candidate) -> Decision:
    import mlflow
    from mlflow import MlflowClient

    baseline_id = candidate.data.tags.get(TAG_BASELINE_RUN)
    if not baseline_id:
        raise OpenSEMError(f"evaluate run {candidate.info.run_id[:8]} has no baseline to compare with")
    verdicts = [beats(candidate, mlflow.get_run(baseline_id), cfg, "baseline")]
    if cfg.registry.beat_copy_top1 and _open_book(candidate):
        verdicts.append(beats_copy_top1(candidate))

    client = MlflowClient()
    name = f"{cfg.registry.model_prefix}{sem.name}"
    champion = _alias(client, name, "champion")
    if champion is not None and champion.tags.get(TAG_EVAL_RUN):
        verdicts.append(beats(candidate, mlflow.get_run(champion.tags[TAG_EVAL_RUN]), cfg, "champion"))

    promoted = all(v.passed for v in verdicts)
    reasons = [v.reason for v in verdicts]
    version = mlflow.register_model(candidate.data.tags[TAG_CANDIDATE_URI], name).version
    client.set_registered_model_alias(name, "candidate", version)
    tags = {TAG_EVAL_RUN: candidate.info.run_id, TAG_BASELINE_RUN: baseline_id,
            TAG_DECISION: "promoted" if promoted else "refused", TAG_DECISION_REASONS: " | ".join(reasons)}
    for v in verdicts:
        tags.update({f"opensem.{k}": f"{x:.4f}" for k, x in v.numbers.items()})
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    verb = "PROMOTED to champion" if promoted else "not promoted"
    client.update_model_version(name, version, description=f"{verb}: " + "; ".join(reasons))
    if promoted:
        client.set_registered_model_alias(name, "champion", version)

    colour = "green" if promoted else "yellow"
    out.print(f"[bold {colour}]{name} version {version} {verb}[/bold {colour}]")
    for reason in reasons:
        out.print(f"  {reason}")
    if champion is not None and not promoted:
        out.print(f"  champion stays version {champion.version}")
    return Decision(promoted, str(version), reasons)


def _alias(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def registered_version(sem: Sem, cfg: Config, alias: str):
    """The model version `alias` names in the SEM's registered model (what serve and export
    use), or one line saying there is none yet."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from opensem.tracking import configure

    configure(cfg, sem.root)
    name = f"{cfg.registry.model_prefix}{sem.name}"
    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        raise OpenSEMError(f"{name} has no version with alias {alias!r} yet: run `opensem pipeline --sem {sem.name}` "
                           "(or evaluate + promote) until one is promoted, or name another with --alias") from None
