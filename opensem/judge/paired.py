"""Two evaluations on the same golden set, item by item: what the comparison table and the
registry gate both read, so they can never disagree on which items count.

An item the judge failed to score (None, or NaN once MLflow's table has been through pandas) in
either evaluation is left out of both, before any mean or interval is taken: a NaN reaching a
comparison makes every test False, which once let a candidate through the gate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def is_scored(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


@dataclass
class Paired:
    ids: list[str]
    reference: list[float]  # judge scores, 1-5
    candidate: list[float]
    reference_recall: list[float]  # key-fact recall per item, 0-1
    candidate_recall: list[float]
    failed_reference: int  # items the judge failed to score in each evaluation
    failed_candidate: int
    n_reference: int
    n_candidate: int
    excluded: int  # items in both evaluations, left out of both because one has no score

    def failure_shares(self) -> tuple[float, float]:
        return (self.failed_reference / self.n_reference if self.n_reference else 0.0,
                self.failed_candidate / self.n_candidate if self.n_candidate else 0.0)

    def score_gain(self, confidence: float, resamples: int) -> tuple[float, float, float]:
        from opensem.judge.stats import paired_diff_ci

        return paired_diff_ci(self.candidate, self.reference, confidence, resamples)

    def recall_gain(self, confidence: float, resamples: int) -> tuple[float, float, float]:
        from opensem.judge.stats import paired_diff_ci

        return paired_diff_ci(self.candidate_recall, self.reference_recall, confidence, resamples)

    def means(self) -> dict[str, float]:
        def mean(values):
            return sum(values) / len(values) if values else float("nan")

        return {"reference_score": mean(self.reference), "candidate_score": mean(self.candidate),
                "reference_recall": mean(self.reference_recall), "candidate_recall": mean(self.candidate_recall)}

    def counts(self) -> tuple[int, int, int]:
        """(better, worse, unchanged) by judge score."""
        better = sum(c > r for r, c in zip(self.reference, self.candidate))
        worse = sum(c < r for r, c in zip(self.reference, self.candidate))
        return better, worse, len(self.ids) - better - worse


def _recall(row: dict) -> float:
    value = row.get("key_fact_recall")
    return float(value) if is_scored(value) else 0.0


def pair(reference_rows: list[dict], candidate_rows: list[dict]) -> Paired:
    """Items scored in both evaluations, in the candidate's order."""
    ref = {r["id"]: r for r in reference_rows}
    both = [(ref[c["id"]], c) for c in candidate_rows if c["id"] in ref]
    kept = [(r, c) for r, c in both if is_scored(r.get("score")) and is_scored(c.get("score"))]
    return Paired(
        ids=[c["id"] for _, c in kept],
        reference=[float(r["score"]) for r, _ in kept], candidate=[float(c["score"]) for _, c in kept],
        reference_recall=[_recall(r) for r, _ in kept], candidate_recall=[_recall(c) for _, c in kept],
        failed_reference=sum(not is_scored(r.get("score")) for r in reference_rows),
        failed_candidate=sum(not is_scored(c.get("score")) for c in candidate_rows),
        n_reference=len(reference_rows), n_candidate=len(candidate_rows), excluded=len(both) - len(kept),
    )
