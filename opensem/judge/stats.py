"""Confidence intervals for judge scores: scipy's bootstrap, seeded so reruns agree."""

from __future__ import annotations

import numpy as np


def mean_ci(scores: list[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of the mean, by percentile bootstrap. A constant sample has a zero-width interval."""
    from scipy.stats import bootstrap

    data = np.asarray(scores, dtype=float)
    if data.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(data.mean())
    if data.size == 1 or np.all(data == data[0]):
        return mean, mean, mean
    res = bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=resamples, method="percentile",
                    rng=np.random.default_rng(seed))
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_diff_ci(candidate: list[float], reference: list[float], confidence: float = 0.95, resamples: int = 2000,
                   seed: int = 0) -> tuple[float, float, float]:
    """(mean difference, low, high) of candidate - reference over the same items."""
    diffs = np.asarray(candidate, dtype=float) - np.asarray(reference, dtype=float)
    return mean_ci(list(diffs), confidence, resamples, seed)
