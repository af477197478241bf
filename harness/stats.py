"""Test-aware intervals for weak-to-strong results (docs: the report's "How to read" section).

PGR = (w2s − weak) / (ceiling − weak) divides by a gap that, on a few hundred test items, is often noise.
So every interval here comes from one paired bootstrap over the run:

- per seed, a matrix of per-item correctness (test item × stage) built from each stage's stored test
  predictions; the weak supervisor, the student and the ceiling are resampled on the *same* items;
- with several seeds, the seeds are resampled too (nested: draw seeds with replacement, then the items of
  each drawn seed), so both test-set noise and seed noise are in the interval;
- without per-item predictions (old results), the seeds alone are resampled; with one seed and no items
  there is no interval at all ("—" and why), never [v, v].

A resample of n items with replacement only changes how often each distinct correctness pattern occurs,
so it is drawn as one multinomial over the distinct rows (exact, and fast for thousands of replicates).

A pair's gap (ceiling − weak) is *resolved* when its 95% CI lies above 0; only then is its PGR a number.
An accuracy is *at chance* when its CI contains the majority-class rate of the test items."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

N_BOOT = 2000
LEVEL = 0.95


def role(kind: str, model: str, weak, half: str, loss: str) -> str:
    """A stage's place in the sweep, the same for every seed (its key differs per seed)."""
    if kind in ("transfer", "chain"):      # a chain step's `weak` is the chain so far (harness.chains)
        return f"{kind}:{weak}:{model}:{loss}"
    return f"gt:{model}:{half}"


@dataclass
class Boot:
    """Per-seed point accuracies (S × m) and bootstrap replicates at slot level (B × S × m): slot j of
    replicate b holds the accuracies of the seed drawn into that slot, on its resampled items."""
    roles: list[str]
    seeds: list
    point: np.ndarray
    reps: np.ndarray
    majority: float = float("nan")
    n_items: dict = field(default_factory=dict)
    no_interval: str = ""            # why there is no interval ("" = there is one)

    def col(self, r: str) -> int:
        return self.roles.index(r)


def resample(mats: list[np.ndarray], n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """mats: per seed an (items × m) array of correctness in [0, 1], NaN columns = stage absent in that seed.
    Returns B × S × m slot-level replicate accuracies (seeds drawn with replacement when S > 1)."""
    rng = np.random.default_rng(seed)
    S, m = len(mats), mats[0].shape[1]
    draw = rng.integers(0, S, size=(n_boot, S)) if S > 1 else np.zeros((n_boot, 1), dtype=int)
    out = np.full((n_boot, S, m), np.nan)
    for k, X in enumerate(mats):
        present = np.where(~np.isnan(X).all(axis=0))[0]
        rows = X[:, present]
        uniq, counts = np.unique(rows, axis=0, return_counts=True)
        n = len(rows)
        for j in range(S):
            idx = np.where(draw[:, j] == k)[0]
            if len(idx) == 0 or n == 0:
                continue
            c = rng.multinomial(n, counts / n, size=len(idx))
            out[np.ix_(idx, [j], present)] = (c @ uniq / n)[:, None, :]
    return out


def from_items(stages: pd.DataFrame, items: pd.DataFrame | None, n_boot: int = N_BOOT, seed: int = 0) -> Boot:
    """stages: the results' stages table (kind, model, weak, half, loss, seed, test_acc, key); items: key, id,
    label, correct per test item (None or empty: seeds-only bootstrap from test_acc)."""
    st = stages.copy()
    st["role"] = [role(r.kind, r.model, r.weak, r.half, r.loss) for r in st.itertuples()]
    roles = list(dict.fromkeys(st["role"]))
    seeds = sorted(st["seed"].unique().tolist())
    have = items is not None and len(items) and set(st["key"]) <= set(items["key"])
    mats, n_items, majority = [], {}, []
    for s in seeds:
        ss = st[st["seed"] == s]
        X = np.full((1, len(roles)), np.nan)
        if have:
            it = items[items["key"].isin(ss["key"])].merge(ss[["key", "role"]], on="key")
            wide = it.pivot_table(index="id", columns="role", values="correct", aggfunc="first").dropna()
            labels = it.drop_duplicates("id").set_index("id")["label"].reindex(wide.index)
            X = np.full((len(wide), len(roles)), np.nan)
            for r in wide.columns:
                X[:, roles.index(r)] = wide[r].to_numpy(dtype=float)
            n_items[s] = len(wide)
            if len(labels):
                majority.append(labels.value_counts(normalize=True).max())
        else:
            for r in ss.itertuples():
                X[0, roles.index(r.role)] = r.test_acc
        mats.append(X)
    point = np.vstack([_quiet_nanmean(X, axis=0) if len(X) else np.full(len(roles), np.nan) for X in mats])
    why = ""
    if not have and len(seeds) < 2:
        why = "one seed and no per-item test predictions"
    elif have and len(seeds) < 2 and max(n_items.values(), default=0) < 2:
        why = "fewer than two test items"
    return Boot(roles, seeds, point, resample(mats, n_boot, seed), float(np.mean(majority)) if majority else float("nan"),
                n_items, why)


def ci(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _quiet_nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """nanmean where an all-NaN slice (a seed or replicate that lacks the stage, by design) is NaN, not news."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def _mean_slots(x: np.ndarray) -> np.ndarray:
    """Seed mean within each replicate (slots that lack the stage are ignored)."""
    return _quiet_nanmean(x, axis=1)


def accuracy(b: Boot, r: str) -> dict:
    """Seed-mean accuracy of one stage role with its CI and the at-chance flag."""
    j = b.col(r)
    point = float(np.nanmean(b.point[:, j]))
    lo, hi = (float("nan"),) * 2 if b.no_interval else ci(_mean_slots(b.reps[:, :, j]))
    chance = (not math.isnan(lo)) and not math.isnan(b.majority) and lo <= b.majority <= hi
    below = (not math.isnan(hi)) and not math.isnan(b.majority) and hi < b.majority
    return {"acc": point, "acc_ci_low": lo, "acc_ci_high": hi, "at_chance": bool(chance or below)}


def pgr_of(w, t, c):
    """Elementwise PGR; NaN where the ceiling does not beat the supervisor."""
    gap = c - w
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(gap > 0, (t - w) / np.where(gap > 0, gap, 1.0), np.nan)


def pair(b: Boot, weak: str, student: str, ceiling: str) -> dict:
    """A pair's seed-mean accuracies, its gap and PGR (ratio of seed means) with paired CIs."""
    jw, jt, jc = b.col(weak), b.col(student), b.col(ceiling)
    keep = ~np.isnan(b.point[:, [jw, jt, jc]]).any(axis=1)     # seeds where all three stages finished
    w, t, c = (float(np.mean(b.point[keep, j])) for j in (jw, jt, jc))
    out = {"seeds": int(keep.sum()), "weak_acc": w, "w2s_acc": t, "ceiling_acc": c, "gap": c - w,
           "pgr_raw": float(pgr_of(np.array(w), np.array(t), np.array(c))),
           "gap_ci_low": float("nan"), "gap_ci_high": float("nan"), "pgr_ci_low": float("nan"),
           "pgr_ci_high": float("nan"), "resolved": False, "note": b.no_interval}
    if b.no_interval:
        out["pgr"] = float("nan")
        return out
    rw, rt, rc = (_mean_slots(b.reps[:, :, j]) for j in (jw, jt, jc))
    out["gap_ci_low"], out["gap_ci_high"] = ci(rc - rw)
    out["pgr_ci_low"], out["pgr_ci_high"] = ci(pgr_of(rw, rt, rc))
    # A ceiling that cannot be told from the majority class leaves nothing to recover: the "gap" is then
    # a supervisor below chance, and a PGR of it would describe noise (boolq on small encoders).
    ceiling_chance = accuracy(b, ceiling)["at_chance"]
    out["resolved"] = bool(out["gap_ci_low"] > 0) and not ceiling_chance
    if not out["resolved"]:
        out["note"] = ("ceiling below supervisor" if out["gap_ci_high"] < 0 else
                       f"unresolved (gap {c - w:.3f} ± {(out['gap_ci_high'] - out['gap_ci_low']) / 2:.3f})"
                       if out["gap_ci_low"] <= 0 else f"ceiling at chance ({c:.3f}; majority class {b.majority:.3f})")
    out["pgr"] = out["pgr_raw"] if out["resolved"] else float("nan")
    return out


def rows_summary(b: Boot, triples: list[tuple[str, str, str]], fn) -> tuple[float, float, float, int]:
    """`fn` (median or mean) over the (pair, seed) PGR rows of the given pairs, with its bootstrap CI;
    returns (value, low, high, rows). No interval from fewer than two rows."""
    if not triples:
        return float("nan"), float("nan"), float("nan"), 0
    idx = np.array([[b.col(x) for x in tr] for tr in triples])           # P × 3
    p = b.point[:, idx]                                                  # S × P × 3
    rows = pgr_of(p[..., 0], p[..., 1], p[..., 2]).ravel()
    rows = rows[np.isfinite(rows)]
    value = float(fn(rows)) if len(rows) else float("nan")
    if len(rows) < 2 or b.no_interval:
        return value, float("nan"), float("nan"), len(rows)
    r = b.reps[:, :, idx]                                                # B × S × P × 3
    reps = pgr_of(r[..., 0], r[..., 1], r[..., 2]).reshape(len(r), -1)
    with np.errstate(invalid="ignore"):
        stat = np.array([fn(x[np.isfinite(x)]) if np.isfinite(x).any() else np.nan for x in reps])
    lo, hi = ci(stat)
    return value, lo, hi, len(rows)


def pair_roles(stages: pd.DataFrame) -> list[tuple[str, str, str, str, str, str]]:
    """(weak, strong, loss, weak role, student role, ceiling role) for every transfer in the sweep."""
    gt = stages[stages["kind"] == "gt"]
    has = gt["roles"].fillna("").astype(str)
    out = []
    tr = stages[stages["kind"] == "transfer"].drop_duplicates(["weak", "model", "loss"])
    for r in tr.itertuples():
        w = gt[(gt["model"] == r.weak) & has.str.contains("weak")]
        c = gt[(gt["model"] == r.model) & has.str.contains("ceiling")]
        if len(w) and len(c):
            out.append((r.weak, r.model, r.loss, role("gt", r.weak, None, w["half"].iloc[0], ""),
                        role("transfer", r.model, r.weak, r.half, r.loss), role("gt", r.model, None, c["half"].iloc[0], "")))
    return out


def analyze(stages: pd.DataFrame, items: pd.DataFrame | None, pgr_rows: pd.DataFrame | None = None,
            n_boot: int = N_BOOT, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The report's statistics: `accuracy` per stage role, `pairs` per (weak, strong, loss), `summary` per loss
    (median / mean PGR over the (pair, seed) rows of resolved pairs only)."""
    if stages is None or not len(stages):
        return {"accuracy": pd.DataFrame(), "pairs": pd.DataFrame(), "summary": pd.DataFrame()}
    b = from_items(stages, items, n_boot, seed)
    st = stages.assign(role=[role(r.kind, r.model, r.weak, r.half, r.loss) for r in stages.itertuples()])
    acc = []
    for r, g in st.groupby("role", sort=False):
        first = g.iloc[0]
        wl = g["weak_label_acc"].mean() if "weak_label_acc" in g else float("nan")
        acc.append({"role": r, "kind": first["kind"], "model": first["model"], "weak": first["weak"],
                    "half": first["half"], "loss": first["loss"], "roles": first["roles"], "seeds": int(g["seed"].nunique()),
                    **accuracy(b, r), "seed_std": float(g["test_acc"].std(ddof=0)) if g["seed"].nunique() > 1 else float("nan"),
                    "weak_label_acc": wl, "majority": b.majority,
                    "n_items": int(np.mean(list(b.n_items.values()))) if b.n_items else 0, "note": b.no_interval})
    pairs, by_loss = [], {}
    for w, s, loss, rw, rt, rc in pair_roles(stages):
        row = {"weak": w, "strong": s, "loss": loss, **pair(b, rw, rt, rc)}
        row["w2s_at_chance"] = accuracy(b, rt)["at_chance"]
        if pgr_rows is not None and len(pgr_rows) and "agreement_test" in pgr_rows:
            g = pgr_rows[(pgr_rows["weak"] == w) & (pgr_rows["strong"] == s) & (pgr_rows["loss"] == loss)]
            row["agreement_test"] = float(pd.to_numeric(g["agreement_test"], errors="coerce").mean()) if len(g) else np.nan
        pairs.append(row)
        by_loss.setdefault(loss, []).append((row["resolved"], (rw, rt, rc)))
    summary = []
    for loss, lst in by_loss.items():
        res = [tr for ok, tr in lst if ok]
        med, mlo, mhi, n = rows_summary(b, res, np.median)
        mean, alo, ahi, _ = rows_summary(b, res, np.mean)
        why = b.no_interval or ("no resolved pair" if not res else "fewer than two resolved rows" if n < 2 else "")
        summary.append({"loss": loss, "n": n, "pairs_resolved": len(res), "pairs_left_out": len(lst) - len(res),
                        "median_pgr": med, "median_ci_low": mlo, "median_ci_high": mhi, "mean_pgr": mean,
                        "mean_ci_low": alo, "mean_ci_high": ahi, "note": why})
    return {"accuracy": pd.DataFrame(acc), "pairs": pd.DataFrame(pairs), "summary": pd.DataFrame(summary)}


# -- cells: how the report and the terminal print these numbers ------------------------------------
def _nan(x) -> bool:
    return x is None or (isinstance(x, (float, np.floating)) and math.isnan(x))


def ci_cell(v, lo, hi, why: str = "", nd: int = 3) -> str:
    """"0.512 [0.41, 0.60]"; "—" with the reason when there is no value or no interval."""
    if _nan(v):
        return f"— ({why})" if why else "—"
    if _nan(lo) or _nan(hi):
        return f"{v:.{nd}f} (no CI: {why or 'fewer than two values'})"
    return f"{v:.{nd}f} [{lo:.{nd}f}, {hi:.{nd}f}]"


def acc_cell(r: dict, prefix: str = "acc") -> str:
    cell = ci_cell(r[prefix], r.get(f"{prefix}_ci_low"), r.get(f"{prefix}_ci_high"), r.get("note", ""))
    return cell + (" **at chance**" if r.get("at_chance") else "")


def pgr_cell(r: dict) -> str:
    """A pair's PGR only when its gap is resolved; otherwise what is known about the gap."""
    if r.get("resolved"):
        return ci_cell(r["pgr"], r["pgr_ci_low"], r["pgr_ci_high"])
    return r.get("note") or "unresolved"


def fmt(x, nd=4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else ""
    return f"{x:.{nd}f}" if isinstance(x, (float, np.floating)) else str(x)


def md_table(df: pd.DataFrame, cols: list[str], headers: list[str] | None = None) -> str:
    head = "| " + " | ".join(headers or cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "".join("| " + " | ".join(fmt(r[c]) for c in cols) + " |\n" for r in df.to_dict("records"))
