"""harness.stats: the paired, test-aware bootstrap on constructed predictions whose answer is known."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness import stats


def sweep(correct: dict[str, list[np.ndarray]], labels: np.ndarray | None = None):
    """stages + items for weak W -> strong S (xent): correct[name][seed] is the per-item 0/1 vector of the
    stage `name` in {weak, student, ceiling}."""
    stages, items = [], []
    spec = {"weak": ("gt", "W", None, "train1", "xent", "weak"), "ceiling": ("gt", "S", None, "train2", "xent", "ceiling"),
            "student": ("transfer", "S", "W", "train2", "xent", "")}
    for name, per_seed in correct.items():
        kind, model, weak, half, loss, roles = spec[name]
        for seed, c in enumerate(per_seed):
            key = f"{name}{seed}"
            stages.append({"kind": kind, "model": model, "weak": weak, "half": half, "loss": loss, "seed": seed,
                           "roles": roles, "test_acc": float(np.mean(c)), "key": key})
            lab = labels if labels is not None else np.arange(len(c)) % 2
            items.append(pd.DataFrame({"key": key, "id": [f"i{i}" for i in range(len(c))], "label": lab,
                                       "correct": np.asarray(c, dtype=np.int8)}))
    return pd.DataFrame(stages), pd.concat(items, ignore_index=True)


def exact(n: int, acc: float, rng) -> np.ndarray:
    """A 0/1 vector with exactly round(acc * n) ones, in random positions."""
    v = np.zeros(n, dtype=int)
    v[rng.choice(n, int(round(acc * n)), replace=False)] = 1
    return v


def test_identical_predictions_give_a_zero_width_gap_and_no_pgr():
    rng = np.random.default_rng(0)
    same = exact(500, 0.7, rng)
    st, it = sweep({"weak": [same], "ceiling": [same.copy()], "student": [exact(500, 0.72, rng)]})
    t = stats.analyze(st, it)
    p = t["pairs"].iloc[0]
    assert p["gap"] == 0 and p["gap_ci_low"] == 0 and p["gap_ci_high"] == 0
    assert not p["resolved"] and math.isnan(p["pgr"])
    assert p["note"] == "unresolved (gap 0.000 ± 0.000)"
    s = t["summary"].iloc[0]
    assert s["n"] == 0 and s["pairs_left_out"] == 1 and math.isnan(s["median_pgr"]) and s["note"] == "no resolved pair"


def test_large_clean_gap_ci_covers_the_true_pgr():
    """Items drawn from a population where weak 60 %, student 75 %, ceiling 90 % (true PGR 0.5)."""
    rng = np.random.default_rng(1)
    n = 1500
    u = rng.random(n)                      # nested correctness: the ceiling is right wherever the student is
    corr = {"weak": [(u < 0.60).astype(int)], "student": [(u < 0.75).astype(int)], "ceiling": [(u < 0.90).astype(int)]}
    p = stats.analyze(*sweep(corr))["pairs"].iloc[0]
    assert p["resolved"] and p["gap_ci_low"] > 0.25
    assert p["pgr_ci_low"] < 0.5 < p["pgr_ci_high"] and p["pgr_ci_high"] - p["pgr_ci_low"] < 0.15
    assert abs(p["pgr"] - 0.5) < 0.05


def test_coverage_over_repeated_test_sets():
    """The 95 % interval covers the true PGR in most of 40 independent test sets (a real check of the
    paired resampling: an unpaired one would be far too wide, a seeds-only one would not exist)."""
    covered, widths = 0, []
    for k in range(40):
        rng = np.random.default_rng(100 + k)
        u, v = rng.random(400), rng.random(400)
        w = (u < 0.65).astype(int)
        c = np.where(rng.random(400) < 0.5, (u < 0.85), (v < 0.85)).astype(int)   # partly independent errors
        t = (u < 0.75).astype(int)
        # population: weak .65, ceiling .85, student .75 -> PGR 0.5
        p = stats.analyze(*sweep({"weak": [w], "student": [t], "ceiling": [c]}), n_boot=500)["pairs"].iloc[0]
        covered += p["pgr_ci_low"] <= 0.5 <= p["pgr_ci_high"]
        widths.append(p["pgr_ci_high"] - p["pgr_ci_low"])
    assert covered >= 34, covered
    assert np.median(widths) < 0.6


def test_no_interval_from_one_value():
    """One seed and no per-item predictions: no interval at all, with the reason."""
    st, _ = sweep({"weak": [np.array([1, 0, 1, 0])], "student": [np.array([1, 1, 1, 0])], "ceiling": [np.array([1, 1, 1, 1])]})
    t = stats.analyze(st, None)
    p = t["pairs"].iloc[0]
    assert math.isnan(p["pgr_ci_low"]) and not p["resolved"] and math.isnan(p["pgr"])
    assert p["note"] == "one seed and no per-item test predictions"
    a = t["accuracy"]
    assert a["acc_ci_low"].isna().all() and a["seed_std"].isna().all()
    assert stats.ci(np.array([0.3])) != (0.3, 0.3) and math.isnan(stats.ci(np.array([0.3]))[0])


def test_seeds_are_resampled_when_there_are_several():
    """Three seeds that disagree widen the interval beyond the single-seed item interval."""
    rng = np.random.default_rng(2)
    one = {"weak": [exact(800, 0.6, rng)], "student": [exact(800, 0.7, rng)], "ceiling": [exact(800, 0.9, rng)]}
    three = {k: v + [exact(800, a, rng) for a in (acc1, acc2)] for (k, v), (acc1, acc2) in
             zip(one.items(), [(0.6, 0.6), (0.62, 0.85), (0.9, 0.9)])}
    p1 = stats.analyze(*sweep(one))["pairs"].iloc[0]
    p3 = stats.analyze(*sweep(three))["pairs"].iloc[0]
    assert p3["seeds"] == 3 and p3["resolved"]
    assert (p3["pgr_ci_high"] - p3["pgr_ci_low"]) > (p1["pgr_ci_high"] - p1["pgr_ci_low"])


def test_at_chance_flag_and_summary_counts_only_resolved_pairs():
    rng = np.random.default_rng(3)
    labels = np.array([0] * 300 + [1] * 300)
    coin = exact(600, 0.5, rng)
    st, it = sweep({"weak": [coin], "student": [exact(600, 0.52, rng)], "ceiling": [exact(600, 0.51, rng)]}, labels)
    t = stats.analyze(st, it)
    assert t["accuracy"]["at_chance"].all() and t["accuracy"]["majority"].iloc[0] == 0.5
    assert not t["pairs"].iloc[0]["resolved"] and t["pairs"].iloc[0]["w2s_at_chance"]
    assert t["summary"].iloc[0]["pairs_left_out"] == 1


def test_a_ceiling_at_chance_gives_no_pgr_even_with_a_resolved_gap():
    """A supervisor well below the majority rate and a ceiling at it: the gap is real, but there is nothing
    to recover, so no PGR (the boolq rows of the offline tier)."""
    rng = np.random.default_rng(5)
    labels = np.array([0] * 400 + [1] * 600)             # majority class 0.6
    st, it = sweep({"weak": [exact(1000, 0.50, rng)], "student": [exact(1000, 0.55, rng)],
                    "ceiling": [exact(1000, 0.60, rng)]}, labels)
    p = stats.analyze(st, it)["pairs"].iloc[0]
    assert p["gap_ci_low"] > 0                             # the gap alone would count as resolved
    assert not p["resolved"] and math.isnan(p["pgr"])
    assert stats.pgr_cell(p.to_dict()).startswith("ceiling at chance (0.600; majority class 0.600)")
