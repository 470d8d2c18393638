"""Promptfoo Python assertion: the offline judge's pass rule for one answer.

Passes when the answer states every key fact of the golden item, which is what a score of 4 or
more means for the offline judge (its 5 also needs embedding similarity, left out here so that
each assertion stays cheap). Vars: key_facts (a JSON list of regexes), answer (the golden answer).
"""

from __future__ import annotations


def get_assert(output: str, context: dict) -> dict:
    import json

    from opensem.judge.offline import grade

    vars_ = context.get("vars", {})
    verdict = grade(output or "", json.loads(vars_.get("key_facts") or "[]"), 0.0, vars_.get("answer", ""))
    threshold = int(vars_.get("pass_score", 4))
    return {"pass": verdict.score >= min(threshold, 4), "score": verdict.score / 5, "reason": verdict.reason}
