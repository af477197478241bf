"""Accuracy, AUROC, PGR and bootstrap intervals: small pure functions."""
from __future__ import annotations

import math

import numpy as np


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(-1) == labels).mean()) if len(labels) else float("nan")


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney U with average ranks for ties; NaN when one class is absent."""
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = np.asarray(scores)[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i: j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pgr(weak: float, w2s: float, ceiling: float) -> float:
    """(w2s - weak) / (ceiling - weak); NaN when the ceiling does not beat the weak model."""
    gap = ceiling - weak
    return (w2s - weak) / gap if gap > 0 else float("nan")


def bootstrap_ci(values, stat=np.median, n: int = 2000, level: float = 0.95, seed: int = 0):
    """Percentile bootstrap CI of `stat` over the rows (pairs x seeds)."""
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    stats = stat(v[rng.integers(0, len(v), size=(n, len(v)))], axis=1)
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
