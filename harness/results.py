"""The results tables of a run: accuracy per stage, PGR per (weak, strong, loss, seed), per pair with
test-aware intervals (harness.stats: a paired bootstrap over test items, nested with seeds), and per-loss
median/mean PGR over the rows of resolved pairs only. `pgr_reference` is the reference notebook's
statistic (docs/quirks.md#pgr): seed-mean baselines, median over valid rows per loss (of resolved pairs).
results.json carries the run's context too: versions, git commit, the resolved manifest, data fingerprints
and the rehearsal/real tag; items.parquet holds the per-item test correctness the intervals come from."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .manifest import Manifest
from .metrics import pgr
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
                       "test_auroc": met.get("test_auroc"), "n_train": met.get("n_train"), "key": s.key[:16],
                       "weak_label_acc": met.get("weak_label_acc")})     # supervisors: on the student half
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
    items = test_items(plan, store, set(by_key))
    from .report_chains import chain_tables    # bootstrapping chains (harness.chains); {} without `chains:`
    return {"stages": pd.DataFrame(stages), "pgr": pgr_rows, **summarize(pd.DataFrame(stages), pgr_rows, items, weak, ceil),
            **chain_tables(m, pd.DataFrame(stages), items), "items": items}


def test_items(plan: list[Stage], store: StageStore, done: set[str]) -> pd.DataFrame:
    """Per finished stage and test item: right or wrong (from its stored test predictions), for harness.stats."""
    parts = []
    for s in plan:
        if s.key not in done:
            continue
        try:
            p = store.read_table(s.key, "predictions_test", columns=["id", "hard_label", "analysis_gt_label"])
        except (OSError, ValueError, KeyError):        # an old or partial stage: intervals fall back to seeds
            continue
        parts.append(pd.DataFrame({"key": s.key[:16], "id": p["id"].astype(str), "label": p["analysis_gt_label"].astype(int),
                                   "correct": (p["hard_label"] == p["analysis_gt_label"]).astype("int8")}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["key", "id", "label", "correct"])


def summarize(stages: pd.DataFrame, rows: pd.DataFrame, items: pd.DataFrame | None, weak: dict, ceil: dict) -> dict:
    """harness.stats' `pairs`, `accuracy` and `summary` tables; the summary gains the reference's statistic,
    over the rows of resolved pairs (an unresolved pair's PGR is not a number, here either)."""
    from .stats import analyze

    t = analyze(stages, items, rows)
    s, p = t["summary"], t["pairs"]
    if len(s):
        ok = p[p["resolved"]] if len(p) else p
        keep = rows.merge(ok[["weak", "strong", "loss"]], on=["weak", "strong", "loss"]) if len(ok) else rows.iloc[:0]
        s["pgr_reference"] = [pgr_reference(keep[keep["loss"] == loss], weak, ceil) for loss in s["loss"]]
    if len(rows):
        res = {(r.weak, r.strong, r.loss) for r in p.itertuples() if r.resolved} if len(p) else set()
        rows["pair_resolved"] = [(r.weak, r.strong, r.loss) in res for r in rows.itertuples()]
    return t


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


def write(m: Manifest, tables: dict[str, pd.DataFrame], out_dir: Path, kind=None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    small = {k: v for k, v in tables.items() if k != "items"}
    for name, df in small.items():
        df.to_csv(out_dir / f"{name}.csv", index=False)
    if "items" in tables:          # per-item correctness (thousands of rows): parquet, not JSON
        tables["items"].to_parquet(out_dir / "items.parquet", index=False)
    write_json(out_dir / "results.json", {"meta": meta_of(m, kind), **{name: json.loads(df.to_json(orient="records"))
                                                                 for name, df in small.items()}})
    return out_dir


def meta_of(m, kind=None) -> dict:
    """What one results.json needs to stand alone: names for `w2s report`, and the run's context.
    `kind` (harness.kind.Kind) names the dataset and losses and says what the data is; default: the
    language manifest's own fields (results must not import the kinds: they import it)."""
    from .envinfo import git_commit, versions

    models = [mc.label for mc in m.models]
    commit = git_commit() or ""
    meta = {"name": m.name, "dataset": kind.dataset_name(m) if kind else m.dataset.name, "models": models,
            "losses": kind.loss_names(m) if kind else [lc.name for lc in m.losses], "seeds": list(m.seeds),
            "versions": versions(), "git_commit": commit.removesuffix("-dirty") or None,
            "git_dirty": commit.endswith("-dirty"), "manifest": m.model_dump(mode="json"), "tag": run_tag(m)}
    try:
        if kind is None:
            from .plan import data_identity
        meta["data"] = (kind.data_identity if kind else data_identity)(m)
    except Exception as e:  # noqa: BLE001 - provenance must not fail a finished sweep
        meta["data"] = {"error": f"{type(e).__name__}: {e}"}
    return meta


def run_tag(m) -> str:
    """"rehearsal" when the manifest (or its tracking tags) says so, else "real"."""
    for obj in (m, getattr(m, "tracking", None), getattr(m, "output", None)):
        for name in ("rehearsal", "tag", "mode"):
            v = getattr(obj, name, None) if obj is not None else None
            if v is True or (isinstance(v, str) and v.lower() == "rehearsal"):
                return "rehearsal"
            if getattr(v, "enabled", False):
                return "rehearsal"
        tags = getattr(obj, "tags", None) if obj is not None else None
        if isinstance(tags, dict) and any(str(tags.get(k, "")).lower() in ("rehearsal", "true")
                                          for k in ("rehearsal", "w2s.rehearsal", "w2s.tag", "tag")):
            return "rehearsal"
    return "real"


def render(tables: dict[str, pd.DataFrame], console) -> None:
    """The terminal summary of `w2s run` / `w2s results`: no PGR for an unresolved pair, no interval from
    one value (harness.stats)."""
    from rich.table import Table

    from .stats import ci_cell, pgr_cell

    def show(title, cols, rows):
        table = Table(title=title)
        for c in cols:
            table.add_column(c)
        for r in rows:
            table.add_row(*[str(x) for x in r])
        console.print(table)

    st = tables["stages"]
    show("Accuracy per stage", ["kind", "model", "weak", "half", "loss", "seed", "test_acc", "n_train"],
         [[r.get(c) if c != "test_acc" else f"{r[c]:.4f}" for c in ("kind", "model", "weak", "half", "loss", "seed",
                                                                    "test_acc", "n_train")]
          for r in (st.to_dict("records") if len(st) else [])])
    pairs = tables.get("pairs", pd.DataFrame())
    show("Weak-to-strong per pair (seed means, 95% paired bootstrap CI over test items and seeds)",
         ["weak", "strong", "loss", "seeds", "weak acc", "w2s acc", "ceiling acc", "PGR"],
         [[r["weak"], r["strong"], r["loss"], r["seeds"], f"{r['weak_acc']:.4f}", f"{r['w2s_acc']:.4f}",
           f"{r['ceiling_acc']:.4f}", pgr_cell(r)] for r in (pairs.to_dict("records") if len(pairs) else [])])
    s = tables["summary"]
    show("PGR per loss (rows of resolved pairs only)", ["loss", "rows", "pairs left out", "median PGR", "mean PGR"],
         [[r["loss"], r["n"], r["pairs_left_out"], ci_cell(r["median_pgr"], r["median_ci_low"], r["median_ci_high"], r["note"]),
           ci_cell(r["mean_pgr"], r["mean_ci_low"], r["mean_ci_high"], r["note"])]
          for r in (s.to_dict("records") if len(s) else [])])
    acc = tables.get("accuracy", pd.DataFrame())
    chance = [f"{r['model']} ({r['role']})" for r in (acc.to_dict("records") if len(acc) else []) if r["at_chance"]]
    if chance:
        console.print(f"at chance (CI contains the majority-class rate): {', '.join(chance)}")
    from .report_chains import render_chains
    render_chains(tables, console)
