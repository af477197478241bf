"""`w2s report`: a markdown report and plots (PNG + PDF) from a results dir written by `w2s run`
(<output.dir>/<name>/: stages.csv, pgr.csv, results.json, items.parquet), with test-aware intervals
(harness.stats), and `--compare`: a check of those
results against an expected-numbers YAML (format: experiments/expected/README.md)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from . import stats
from .stats import fmt, md_table  # noqa: F401 - the report's cells (also used by report_chains)

METRICS = {"gt_acc", "ceiling_acc", "weak_acc", "w2s_acc", "pgr", "agreement_test",
           "median_pgr", "mean_pgr", "pgr_reference"}


@dataclass
class Results:
    name: str
    dataset: str
    stages: pd.DataFrame
    pgr: pd.DataFrame
    summary: pd.DataFrame
    source: Path
    meta: dict = field(default_factory=dict)
    items: pd.DataFrame | None = None
    pairs: pd.DataFrame = field(default_factory=pd.DataFrame)
    accuracy: pd.DataFrame = field(default_factory=pd.DataFrame)


def load_results(d: Path) -> Results:
    """A results dir, with the test-aware statistics recomputed (harness.stats; deterministic)."""
    d = Path(d)
    if not (d / "stages.csv").exists():
        raise FileNotFoundError(f"{d}: no stages.csv; give the results dir that `w2s run` printed "
                                f"(<output.dir>/<name>/), a manifest, or a parent run id")
    meta = {}
    if (d / "results.json").exists():
        meta = json.loads((d / "results.json").read_text()).get("meta") or {}

    def csv(n):
        p = d / f"{n}.csv"
        return pd.read_csv(p) if p.exists() and p.stat().st_size > 1 else pd.DataFrame()
    r = Results(meta.get("name") or d.name, meta.get("dataset") or "unknown", csv("stages"), csv("pgr"),
                csv("summary"), d, meta)
    r.items = load_items(d, r.stages)
    if len(r.stages):
        from .results import summarize

        gt = r.stages[r.stages["kind"] == "gt"]
        has = gt["roles"].fillna("").astype(str)
        weak = {(x.model, x.seed): x.test_acc for x in gt[has.str.contains("weak")].itertuples()}
        ceil = {(x.model, x.seed): x.test_acc for x in gt[has.str.contains("ceiling")].itertuples()}
        t = summarize(r.stages, r.pgr.copy(), r.items, weak, ceil)
        r.summary, r.pairs, r.accuracy = t["summary"], t["pairs"], t["accuracy"]
    return r


def load_items(d: Path, stages: pd.DataFrame) -> pd.DataFrame | None:
    """items.parquet, or (results written before it existed) the stages' own test predictions in the
    stage store next to the results dir (<output.dir>/stages/<key>/predictions_test.parquet)."""
    if (d / "items.parquet").exists():
        return pd.read_parquet(d / "items.parquet")
    parts = []
    for key in stages.get("key", []):
        f = d.parent / "stages" / str(key) / "predictions_test.parquet"
        if not f.exists():
            return None
        p = pd.read_parquet(f, columns=["id", "hard_label", "analysis_gt_label"])
        parts.append(pd.DataFrame({"key": key, "id": p["id"].astype(str), "label": p["analysis_gt_label"].astype(int),
                                   "correct": (p["hard_label"] == p["analysis_gt_label"]).astype("int8")}))
    return pd.concat(parts, ignore_index=True) if parts else None


# -- numbers --------------------------------------------------------------------------------------
def ladder(r: Results) -> list[str]:
    """Models in the manifest's order (the ladder), not sorted by accuracy."""
    present = list(dict.fromkeys(r.stages["model"])) if len(r.stages) else []
    order = [m for m in r.meta.get("models") or [] if m in present]
    return order + [m for m in present if m not in order]


def gt_table(r: Results) -> pd.DataFrame:
    """Per model, in ladder order: accuracy as supervisor (weak half) and as ceiling with CIs, the supervisor's
    weak-label accuracy on the student half, and the spread over seeds."""
    a = r.accuracy
    rows = []
    for model in ladder(r):
        g = a[(a["kind"] == "gt") & (a["model"] == model)] if len(a) else a
        if not len(g):
            continue
        roles = g["roles"].fillna("").astype(str)
        w, c = g[roles.str.contains("weak")], g[roles.str.contains("ceiling")]
        row = {"model": model, "seeds": int(g["seeds"].max()), "weak": "—", "weak_label": "—", "ceiling": "—", "std": "—"}
        if len(w):
            row["weak"] = stats.acc_cell(w.iloc[0].to_dict())
            row["weak_label"] = fmt(w.iloc[0]["weak_label_acc"])
        if len(c):
            row["ceiling"] = stats.acc_cell(c.iloc[0].to_dict())
        std = g["seed_std"].dropna()
        row["std"] = fmt(float(std.iloc[-1])) if len(std) else "— (one seed)"
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", "seeds", "weak", "weak_label", "ceiling", "std"])


def pair_table(r: Results) -> pd.DataFrame:
    p = r.pairs
    if not len(p):
        return pd.DataFrame(columns=["weak", "strong", "loss", "seeds", "weak_acc", "w2s", "ceiling_acc", "gap", "PGR", "agreement"])
    out = p[["weak", "strong", "loss", "seeds", "weak_acc", "ceiling_acc"]].copy()
    acc = r.accuracy.set_index("role") if len(r.accuracy) else None
    w2s = []
    for x in p.itertuples():
        a = acc.loc[stats.role("transfer", x.strong, x.weak, "train2", x.loss)].to_dict() if acc is not None and \
            stats.role("transfer", x.strong, x.weak, "train2", x.loss) in acc.index else {"acc": x.w2s_acc}
        w2s.append(stats.acc_cell(a))
    out["w2s"] = w2s
    out["gap"] = [stats.ci_cell(x.gap, x.gap_ci_low, x.gap_ci_high, x.note) for x in p.itertuples()]
    out["PGR"] = [stats.pgr_cell(x) for x in p.to_dict("records")]
    out["agreement"] = p["agreement_test"] if "agreement_test" in p else np.nan
    return out


# -- report ---------------------------------------------------------------------------------------
HOW_TO_READ = ("Intervals are 95% paired bootstrap CIs over the test items (the supervisor, the student and the "
               "ceiling resampled on the same items), nested with a resampling of seeds when there are several "
               "(harness/stats.py). A pair's PGR = (w2s − weak) / (ceiling − weak) of the seed means is given "
               "only when its gap ceiling − weak is *resolved* (CI above 0); otherwise the row says "
               "\"unresolved (gap ± half-width)\". **at chance** = the CI contains the majority-class rate. "
               "No interval is computed from fewer than two values (\"—\" says why).")


def build_report(results_dir: Path, out: Path, compare: Path | None = None) -> Path:
    """Write out/report.md and out/*.png + *.pdf; returns `out`. With `compare`, also out/compare.md."""
    from .plots import accuracy_plot, pgr_plot

    r = load_results(Path(results_dir))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gt, pairs = gt_table(r), pair_table(r)
    title = f"{r.name} ({r.dataset})"
    plots = []
    if len(r.accuracy):
        plots.append(accuracy_plot(r, ladder(r), title, out / f"accuracy_{r.name}.png"))
    if len(r.pairs):
        plots.append(pgr_plot(r.pairs, f"PGR per pair: {title}", out / f"pgr_{r.name}.png"))
    seeds = int(r.stages["seed"].nunique()) if len(r.stages) else 0
    n_items = int(r.accuracy["n_items"].max()) if len(r.accuracy) else 0
    maj = float(r.accuracy["majority"].iloc[0]) if len(r.accuracy) else float("nan")
    commit = r.meta.get("git_commit")
    lines = [f"# Weak-to-strong report: {r.name}", "",
             f"Dataset **{r.dataset}**; {seeds} seed(s); {n_items or '—'} test items per seed (common to all stages); "
             f"majority-class rate {fmt(maj, 3)}; run tag **{r.meta.get('tag', 'real')}**; "
             + (f"git {commit[:12]}{' (dirty)' if r.meta.get('git_dirty') else ''}; " if commit else "")
             + f"results from `{r.source}`.", "", HOW_TO_READ, "",
             "## Ground-truth accuracy per model (ladder order)", "",
             md_table(gt, ["model", "seeds", "weak", "weak_label", "ceiling", "std"],
                      ["model", "seeds", "as supervisor (GT, weak half)", "its weak labels on the student half",
                       "as ceiling (GT)", "std of test acc over seeds"]),
             "## Weak-to-strong per pair and loss", "",
             md_table(pairs, ["weak", "strong", "loss", "seeds", "weak_acc", "w2s", "ceiling_acc", "gap", "PGR", "agreement"],
                      ["weak", "strong", "loss", "seeds", "weak acc", "w2s acc", "ceiling acc", "gap (ceiling − weak)",
                       "PGR", "agreement"]),
             "## PGR per loss", "",
             "Median and mean over the (pair, seed) rows of *resolved* pairs only; `reference` is the reference "
             "notebook's statistic (seed-mean baselines, docs/quirks.md#pgr) over the same rows.", ""]
    if len(r.summary):
        s = r.summary.copy()
        s["median"] = [stats.ci_cell(x.median_pgr, x.median_ci_low, x.median_ci_high, x.note) for x in s.itertuples()]
        s["mean"] = [stats.ci_cell(x.mean_pgr, x.mean_ci_low, x.mean_ci_high, x.note) for x in s.itertuples()]
        lines.append(md_table(s, ["loss", "n", "pairs_resolved", "pairs_left_out", "median", "mean", "pgr_reference"],
                              ["loss", "rows", "pairs resolved", "pairs left out (unresolved)", "median PGR",
                               "mean PGR", "reference"]))
    else:
        lines.append("No transfer stage has finished yet.\n")
    from .report_chains import section as chain_section   # bootstrapping chains: tables and plots
    lines += chain_section(r, out)
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name}) ([PDF]({p.with_suffix('.pdf').name}))" for p in plots] + [""]
    if compare:
        rows = compare_rows(r, load_expected(compare))
        (out / "compare.md").write_text(compare_markdown(rows, compare))
        lines += ["## Comparison with expected numbers", "", compare_markdown(rows, compare, heading=False)]
    (out / "report.md").write_text("\n".join(lines))
    return out


# -- compare --------------------------------------------------------------------------------------
def load_expected(path: Path) -> dict:
    spec = yaml.safe_load(Path(path).read_text())
    if not isinstance(spec, dict) or not isinstance(spec.get("rows"), list):
        raise ValueError(f"{path}: expected a mapping with `rows:` (see experiments/expected/README.md)")
    for i, row in enumerate(spec["rows"]):
        if row.get("metric") not in METRICS:
            raise ValueError(f"{path}: rows[{i}]: metric {row.get('metric')!r} is not one of {sorted(METRICS)}")
        if not any(k in row for k in ("expected", "sign", "min", "max")):
            raise ValueError(f"{path}: rows[{i}]: give `expected` (+ `tol`), `sign`, `min` or `max`")
    return spec


def value_of(r: Results, row: dict) -> float:
    """The measured number a row selects (seed mean unless `seed:` is given; NaN when absent)."""
    metric = row["metric"]
    if metric in ("median_pgr", "mean_pgr", "pgr_reference"):
        s = r.summary[r.summary["loss"] == row.get("loss", "xent")] if len(r.summary) else r.summary
        return float(s[metric].iloc[0]) if len(s) else float("nan")
    if metric in ("gt_acc", "ceiling_acc", "weak_acc"):
        st = r.stages[r.stages["kind"] == "gt"] if len(r.stages) else r.stages
        st = st[st["model"] == row["model"]] if len(st) else st
        if "seed" in row and len(st):
            st = st[st["seed"] == row["seed"]]
        if metric != "gt_acc" and len(st):
            st = st[st["roles"].fillna("").astype(str).str.contains("ceiling" if metric == "ceiling_acc" else "weak")]
        return float(st["test_acc"].mean()) if len(st) else float("nan")
    p = r.pgr
    for k in ("weak", "strong", "loss", "seed"):
        if k in row and len(p):
            p = p[p[k] == row[k]]
    vals = p[metric].to_numpy(dtype=float) if len(p) else np.array([])
    vals = vals[np.isfinite(vals)]
    return float(vals.mean()) if len(vals) else float("nan")


def check(value: float, row: dict) -> tuple[bool, str]:
    if math.isnan(value):
        return (not row.get("required", True)), "missing"
    why = []
    if "expected" in row:
        tol = float(row.get("tol", 0.0))
        if abs(value - float(row["expected"])) > tol:
            why.append(f"|{value:.4f} − {float(row['expected']):.4f}| > {tol}")
    sign = row.get("sign")
    if sign in ("positive", "+", True) and not value > 0:
        why.append("sign should be positive")
    if sign in ("negative", "-") and not value < 0:
        why.append("sign should be negative")
    if sign == "same" and "expected" in row and np.sign(value) != np.sign(float(row["expected"])):
        why.append("sign differs from expected")
    if "min" in row and value < float(row["min"]):
        why.append(f"below min {row['min']}")
    if "max" in row and value > float(row["max"]):
        why.append(f"above max {row['max']}")
    return not why, "; ".join(why)


def compare_rows(r: Results, spec: dict) -> list[dict]:
    out = []
    if spec.get("dataset") and r.dataset not in ("unknown", spec["dataset"]):
        out.append({"status": "FAIL", "what": "dataset", "got": r.dataset, "want": spec["dataset"],
                    "why": "the results are for another dataset", "source": "", "note": ""})
        return out
    defaults = spec.get("defaults") or {}
    for row in spec["rows"]:
        row = {**defaults, **row}
        v = value_of(r, row)
        ok, why = check(v, row)
        sel = " ".join(f"{k}={row[k]}" for k in ("model", "weak", "strong", "loss", "seed") if k in row)
        want = []
        if "expected" in row:
            want.append(f"{row['expected']} ± {row.get('tol', 0)}")
        if "sign" in row:
            want.append(f"sign {row['sign']}")
        for b in ("min", "max"):
            if b in row:
                want.append(f"{b} {row[b]}")
        status = "PASS" if ok else "FAIL"
        if ok and why == "missing":
            status = "SKIP"
        out.append({"status": status, "what": f"{row['metric']} {sel}".strip(), "got": v, "want": ", ".join(want),
                    "why": why, "source": row.get("source", spec.get("source", "")), "note": row.get("note", "")})
    return out


def compare_markdown(rows: list[dict], path: Path, heading: bool = True) -> str:
    n = {k: sum(r["status"] == k for r in rows) for k in ("PASS", "FAIL", "SKIP")}
    text = (f"# Comparison with {path}\n\n" if heading else f"Expected numbers: `{path}`\n\n")
    text += "| status | check | got | expected | why | source | note |\n|---|---|---|---|---|---|---|\n"
    text += "".join(f"| {r['status']} | {r['what']} | {fmt(r['got'])} | {r['want']} | {r['why']} | {r['source']} | "
                    f"{r['note']} |\n" for r in rows)
    return text + f"\n**{n['PASS']} passed, {n['FAIL']} failed, {n['SKIP']} skipped.**\n"
