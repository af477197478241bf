"""`w2s report`: a markdown report and PNG plots from a results dir written by `w2s run`
(<output.dir>/<name>/: stages.csv, pgr.csv, summary.csv, results.json), and `--compare`: a check of those
results against an expected-numbers YAML (format: experiments/expected/README.md)."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .metrics import bootstrap_ci

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


def load_results(d: Path) -> Results:
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
    return Results(meta.get("name") or d.name, meta.get("dataset") or "unknown", csv("stages"), csv("pgr"),
                   csv("summary"), d)


# -- numbers --------------------------------------------------------------------------------------
def gt_table(r: Results) -> pd.DataFrame:
    """Per model: GT accuracy as weak supervisor (train1 / weak role), as ceiling, and the reference's base(m)
    (mean over all its GT rows, REFERENCE.md §8)."""
    gt = r.stages[r.stages["kind"] == "gt"] if len(r.stages) else pd.DataFrame(columns=["model", "roles", "test_acc", "seed"])
    out = []
    for model, g in gt.groupby("model", sort=False):
        roles = g["roles"].fillna("").astype(str)
        weak = g[roles.str.contains("weak")]["test_acc"]
        ceil = g[roles.str.contains("ceiling")]["test_acc"]
        out.append({"model": model, "seeds": int(g["seed"].nunique()), "gt_acc": g["test_acc"].mean(),
                    "gt_acc_std": g["test_acc"].std(ddof=0), "weak_acc": weak.mean() if len(weak) else np.nan,
                    "ceiling_acc": ceil.mean() if len(ceil) else np.nan})
    t = pd.DataFrame(out, columns=["model", "seeds", "gt_acc", "gt_acc_std", "weak_acc", "ceiling_acc"])
    return t.sort_values("gt_acc", kind="stable").reset_index(drop=True)


def pair_table(r: Results) -> pd.DataFrame:
    """Per (weak, strong, loss): seed means and a bootstrap CI of PGR over seeds."""
    rows = []
    if len(r.pgr):
        for (w, s, loss), g in r.pgr.groupby(["weak", "strong", "loss"], sort=False):
            vals = g["pgr"].to_numpy(dtype=float)
            lo, hi = bootstrap_ci(vals, np.mean)
            fin = vals[np.isfinite(vals)]
            rows.append({"weak": w, "strong": s, "loss": loss, "seeds": len(g), "weak_acc": g["weak_acc"].mean(),
                         "w2s_acc": g["w2s_acc"].mean(), "ceiling_acc": g["ceiling_acc"].mean(),
                         "pgr": float(fin.mean()) if len(fin) else np.nan, "pgr_ci_low": lo, "pgr_ci_high": hi,
                         "agreement_test": g["agreement_test"].mean() if "agreement_test" in g else np.nan,
                         "small_gap": bool(g["small_gap"].astype(str).eq("True").any()) if "small_gap" in g else False})
    return pd.DataFrame(rows, columns=["weak", "strong", "loss", "seeds", "weak_acc", "w2s_acc", "ceiling_acc", "pgr",
                                       "pgr_ci_low", "pgr_ci_high", "agreement_test", "small_gap"])


def x_positions(r: Results) -> dict[str, float]:
    """The plot's x: each model's ceiling accuracy; models that are only supervisors use their GT accuracy."""
    t = gt_table(r)
    return {row.model: float(row.ceiling_acc if not math.isnan(row.ceiling_acc) else row.gt_acc)
            for row in t.itertuples()}


def plot_gt_rows(r: Results) -> pd.DataFrame:
    """The black line: each model's ceiling rows (so y matches its x), or all its GT rows if it has none."""
    gt = r.stages[r.stages["kind"] == "gt"]
    ceil = gt["roles"].fillna("").astype(str).str.contains("ceiling")
    has_ceiling = set(gt[ceil]["model"])
    return gt[ceil | ~gt["model"].isin(has_ceiling)]


# -- report ---------------------------------------------------------------------------------------
def fmt(x, nd=4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else ""
    return f"{x:.{nd}f}" if isinstance(x, (float, np.floating)) else str(x)


def md_table(df: pd.DataFrame, cols: list[str], headers: list[str] | None = None) -> str:
    head = "| " + " | ".join(headers or cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "".join("| " + " | ".join(fmt(r[c]) for c in cols) + " |\n" for r in df.to_dict("records"))


def build_report(results_dir: Path, out: Path, compare: Path | None = None) -> Path:
    """Write out/report.md and out/*.png; returns `out`. With `compare`, also out/compare.md."""
    from .plots import accuracy_plot, pgr_plot

    r = load_results(Path(results_dir))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gt, pairs = gt_table(r), pair_table(r)
    title = f"{r.name} ({r.dataset})"
    plots = []
    if len(gt):
        plots.append(accuracy_plot(x_positions(r), plot_gt_rows(r), r.pgr, r.summary, title,
                                   out / f"accuracy_{r.name}.png"))
    if len(pairs):
        plots.append(pgr_plot(pairs, f"PGR per pair: {title}", out / f"pgr_{r.name}.png"))
    lines = [f"# Weak-to-strong report: {r.name}", "",
             f"Dataset **{r.dataset}**; results from `{r.source}`; generated {time.strftime('%Y-%m-%d %H:%M:%S')}.",
             "", "## Ground-truth accuracy per model", "",
             "`weak` = trained on the weak half (the supervisor); `ceiling` = the strong model's ground-truth "
             "ceiling; `all GT` = the reference's base(m), the mean over every GT row.", "",
             md_table(gt, ["model", "seeds", "weak_acc", "ceiling_acc", "gt_acc", "gt_acc_std"],
                      ["model", "seeds", "weak (GT, train1)", "ceiling", "all GT (mean)", "std over seeds"]),
             "## Weak-to-strong per pair and loss", "",
             "Seed means; PGR = (w2s − weak) / (ceiling − weak), 95% bootstrap CI of the mean over seeds.", "",
             md_table(pairs, ["weak", "strong", "loss", "seeds", "weak_acc", "w2s_acc", "ceiling_acc", "pgr",
                              "pgr_ci_low", "pgr_ci_high", "agreement_test", "small_gap"],
                      ["weak", "strong", "loss", "seeds", "weak acc", "w2s acc", "ceiling acc", "PGR", "CI low",
                       "CI high", "agreement", "small gap"]),
             "## PGR per loss", "",
             "Median and mean over all (pair, seed) rows with 95% bootstrap CIs; `reference` is the reference "
             "notebook's statistic (seed-mean baselines, REFERENCE.md §8).", ""]
    if len(r.summary):
        lines.append(md_table(r.summary, ["loss", "n", "median_pgr", "median_ci_low", "median_ci_high", "mean_pgr",
                                          "mean_ci_low", "mean_ci_high", "pgr_reference"],
                              ["loss", "n", "median PGR", "CI low", "CI high", "mean PGR", "CI low", "CI high",
                               "reference"]))
    else:
        lines.append("No transfer stage has finished yet.\n")
    if len(pairs) and pairs["small_gap"].any():
        lines += ["**Warning:** some pairs have |ceiling − weak| < 0.01: their PGR is unstable.", ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
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
