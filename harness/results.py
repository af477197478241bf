"""The results table of a run: accuracy per stage, PGR per (weak, strong, loss, seed), and per-loss
median/mean PGR with bootstrap CIs across pairs and seeds. `pgr_reference` is the reference notebook's
statistic (REFERENCE.md §8): seed-mean baselines, median over valid rows per loss."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .manifest import Manifest
from .metrics import bootstrap_ci, pgr
from .plan import Stage
from .store import StageStore, write_json

SMALL_GAP = 0.01   # |ceiling - weak| below this makes PGR unstable: flagged


def collect(m: Manifest, plan: list[Stage], store: StageStore) -> dict[str, pd.DataFrame]:
    stages, by_key = [], {}
    for s in plan:
        if not store.is_done(s.key):
            continue
        met = store.metrics(s.key)
        by_key[s.key] = met
        stages.append({"kind": s.kind, "model": s.model, "weak": s.weak, "half": s.half, "loss": s.loss["name"],
                       "seed": s.seed, "roles": ",".join(s.roles), "test_acc": met["test_acc"],
                       "test_auroc": met.get("test_auroc"), "n_train": met.get("n_train"), "key": s.key[:16]})
    ceil = {(s.model, s.seed): by_key[s.key]["test_acc"] for s in plan
            if s.kind == "gt" and "ceiling" in s.roles and s.key in by_key}
    weak = {(s.model, s.seed): by_key[s.key]["test_acc"] for s in plan
            if s.kind == "gt" and "weak" in s.roles and s.key in by_key}
    rows = []
    for s in plan:
        if s.kind != "transfer" or s.key not in by_key:
            continue
        w, c, a = weak.get((s.weak, s.seed)), ceil.get((s.model, s.seed)), by_key[s.key]["test_acc"]
        rows.append({"weak": s.weak, "strong": s.model, "loss": s.loss["name"], "seed": s.seed,
                     "weak_acc": w, "w2s_acc": a, "ceiling_acc": c,
                     "pgr": pgr(w, a, c) if w is not None and c is not None else float("nan"),
                     "small_gap": c is not None and w is not None and abs(c - w) < SMALL_GAP,
                     "agreement_test": by_key[s.key].get("agreement_test")})
    pgr_rows = pd.DataFrame(rows, columns=["weak", "strong", "loss", "seed", "weak_acc", "w2s_acc", "ceiling_acc",
                                           "pgr", "small_gap", "agreement_test"])
    return {"stages": pd.DataFrame(stages), "pgr": pgr_rows, "summary": summarize(pgr_rows, weak, ceil)}


def summarize(rows: pd.DataFrame, weak: dict, ceil: dict) -> pd.DataFrame:
    out = []
    for loss, g in rows.groupby("loss", sort=False):
        vals = g["pgr"].to_numpy(dtype=float)
        lo, hi = bootstrap_ci(vals, np.median)
        mlo, mhi = bootstrap_ci(vals, np.mean)
        out.append({"loss": loss, "n": int(np.isfinite(vals).sum()), "median_pgr": _nanstat(np.median, vals),
                    "median_ci_low": lo, "median_ci_high": hi, "mean_pgr": _nanstat(np.mean, vals),
                    "mean_ci_low": mlo, "mean_ci_high": mhi, "pgr_reference": pgr_reference(g, weak, ceil)})
    return pd.DataFrame(out, columns=["loss", "n", "median_pgr", "median_ci_low", "median_ci_high", "mean_pgr",
                                      "mean_ci_low", "mean_ci_high", "pgr_reference"])


def pgr_reference(g: pd.DataFrame, weak: dict, ceil: dict) -> float:
    """Per-seed students against seed-mean baselines; rows with W == S or base(S) <= base(W) dropped."""
    base = {}
    for table in (weak, ceil):
        for (model, _), acc in table.items():
            base.setdefault(model, []).append(acc)
    base = {k: float(np.mean(v)) for k, v in base.items()}
    vals = [(r.w2s_acc - base[r.weak]) / (base[r.strong] - base[r.weak]) for r in g.itertuples()
            if r.weak != r.strong and r.weak in base and r.strong in base and base[r.strong] > base[r.weak]]
    return float(np.median(vals)) if vals else float("nan")


def _nanstat(fn, vals) -> float:
    v = vals[np.isfinite(vals)]
    return float(fn(v)) if len(v) else float("nan")


def write(m: Manifest, tables: dict[str, pd.DataFrame], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.to_csv(out_dir / f"{name}.csv", index=False)
    # "meta" lets `w2s report` name the dataset and the ladder without the manifest
    meta = {"name": m.name, "dataset": m.dataset.name, "models": [mc.label for mc in m.models],
            "losses": [lc.name for lc in m.losses], "seeds": list(m.seeds)}
    write_json(out_dir / "results.json", {"meta": meta, **{name: json.loads(df.to_json(orient="records"))
                                                           for name, df in tables.items()}})
    return out_dir


def render(tables: dict[str, pd.DataFrame], console) -> None:
    from rich.table import Table

    def fmt(x):
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "—"
        return f"{x:.4f}" if isinstance(x, float) else str(x)

    for title, name, cols in (("Accuracy per stage", "stages", ["kind", "model", "weak", "half", "loss", "seed", "test_acc", "n_train"]),
                              ("PGR per pair", "pgr", ["weak", "strong", "loss", "seed", "weak_acc", "w2s_acc", "ceiling_acc", "pgr", "small_gap"]),
                              ("PGR per loss (95% bootstrap CI over pairs x seeds)", "summary",
                               ["loss", "n", "median_pgr", "median_ci_low", "median_ci_high", "mean_pgr", "pgr_reference"])):
        df = tables[name]
        table = Table(title=title)
        for c in cols:
            table.add_column(c)
        for r in df.to_dict("records"):
            table.add_row(*[fmt(r.get(c)) for c in cols])
        console.print(table)
