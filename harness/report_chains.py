"""Results of bootstrapping chains (harness.chains): tables, the terminal view, the report's section and the
paper's plot of bootstrapped vs direct (§4.3.1, Figure 4: accuracy and PGR against the student's size).

Two tables, written by `w2s run` next to pgr.csv (chains.csv, chain_pgr.csv, and in results.json):
- `chains`: seed means with 95% paired bootstrap CIs (harness.stats: the same items resampled for every
  stage of a seed, nested with seeds). scope `step`: step k of a chain, weak = its teacher (the ground-truth
  stage of the first model for step 1, the previous step after that), strong = model k, ceiling = model k's
  ground-truth ceiling. scope `from_first`: the chain's student at model k against the chain's first model
  (weak = its ground-truth stage), beside the direct first -> k transfer on the same seeds (direct_*), and
  delta_pgr = bootstrapped − direct with its own paired CI; the row with `end_to_end` is first -> last.
- `chain_pgr`: the same per seed, plain ratios (as pgr.csv).
A PGR is given only where the gap ceiling − weak is resolved (its CI above 0), as for pairs."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import stats
from .chains import SEP, name
from .metrics import pgr

COLUMNS = ["chain", "loss", "scope", "position", "end_to_end", "weak", "strong", "seeds", "weak_acc", "w2s_acc",
           "ceiling_acc", "gap", "pgr", "pgr_ci_low", "pgr_ci_high", "resolved", "note", "direct_acc", "direct_pgr",
           "direct_ci_low", "direct_ci_high", "delta_pgr", "delta_ci_low", "delta_ci_high"]
SEED_COLUMNS = ["chain", "loss", "seed", "scope", "position", "weak", "strong", "weak_acc", "w2s_acc",
                "ceiling_acc", "pgr", "direct_acc", "direct_pgr"]


def _roles(stages: pd.DataFrame, chain: list[str], loss: str) -> list[dict] | None:
    """Per position k >= 1: the stats roles of the teacher, the chain's student, the direct transfer, the
    first model's supervisor stage and model k's ceiling; None when the sweep lacks a ground-truth stage."""
    gt = stages[stages["kind"] == "gt"]
    has = gt["roles"].fillna("").astype(str)

    def gt_role(model, role):
        g = gt[(gt["model"] == model) & has.str.contains(role)]
        return stats.role("gt", model, None, g["half"].iloc[0], "") if len(g) else None

    first = gt_role(chain[0], "weak")
    out, teacher = [], first
    for k, strong in enumerate(chain[1:], 1):
        student = stats.role("chain", strong, name(chain[:k]), "", loss)
        out.append({"k": k, "teacher": teacher, "student": student, "first": first, "ceiling": gt_role(strong, "ceiling"),
                    "direct": stats.role("transfer", strong, chain[0], "train2", loss), "strong": strong,
                    "weak": chain[k - 1]})
        teacher = student
    return out if first and all(r["ceiling"] for r in out) else None


def _delta(b: stats.Boot, first: str, boot: str, direct: str, ceiling: str) -> tuple[float, float]:
    """Paired CI of PGR(bootstrapped) − PGR(direct): both on the same resampled items and seeds."""
    if b.no_interval:
        return float("nan"), float("nan")
    w, t, d, c = (stats._mean_slots(b.reps[:, :, b.col(r)]) for r in (first, boot, direct, ceiling))
    return stats.ci(stats.pgr_of(w, t, c) - stats.pgr_of(w, d, c))


def chain_tables(m, stages: pd.DataFrame, items: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """{"chains", "chain_pgr"} for a manifest with `chains:` (empty tables until the stages finish); {} without."""
    chains = getattr(m, "chains", None) or []
    if not chains:
        return {}
    rows, seed_rows = [], []
    if len(stages) and (stages["kind"] == "chain").any():
        b = stats.from_items(stages, items)
        st = stages.assign(role=[stats.role(r.kind, r.model, r.weak, r.half, r.loss) for r in stages.itertuples()])
        acc = {(r.role, r.seed): r.test_acc for r in st.itertuples()}
        for chain in chains:
            for loss in [lc.name for lc in m.losses]:
                positions = _roles(stages, chain, loss)
                if positions is None or any(p["student"] not in b.roles for p in positions):
                    continue          # an unfinished chain: no rows yet
                for p in positions:
                    rows += _rows(b, chain, loss, p, len(chain) - 1)
                    seed_rows += _seed_rows(acc, b.seeds, chain, loss, p)
    return {"chains": pd.DataFrame(rows, columns=COLUMNS), "chain_pgr": pd.DataFrame(seed_rows, columns=SEED_COLUMNS)}


def _rows(b: stats.Boot, chain: list[str], loss: str, p: dict, last: int) -> list[dict]:
    """The step row and the from-first row (with the direct transfer beside it) of position p["k"]."""
    def pick(d):
        return {c: v for c, v in d.items() if c in COLUMNS}
    common = {"chain": name(chain), "loss": loss, "position": p["k"], "strong": p["strong"]}
    step = {**common, "scope": "step", "end_to_end": False, "weak": p["weak"],
            **pick(stats.pair(b, p["teacher"], p["student"], p["ceiling"]))}
    ff = {**common, "scope": "from_first", "end_to_end": p["k"] == last, "weak": chain[0],
          **pick(stats.pair(b, p["first"], p["student"], p["ceiling"]))}
    if p["direct"] in b.roles:
        d = stats.pair(b, p["first"], p["direct"], p["ceiling"])
        ff.update(direct_acc=d["w2s_acc"], direct_pgr=d["pgr"], direct_ci_low=d["pgr_ci_low"],
                  direct_ci_high=d["pgr_ci_high"])
        if ff["resolved"]:     # same weak and ceiling: resolved for both or for neither
            ff["delta_pgr"] = ff["pgr"] - d["pgr"]
            ff["delta_ci_low"], ff["delta_ci_high"] = _delta(b, p["first"], p["student"], p["direct"], p["ceiling"])
    return [step, ff]


def _seed_rows(acc, seeds, chain, loss, p) -> list[dict]:
    out = []
    for s in seeds:
        t, w, c, f = (acc.get((p[x], s)) for x in ("student", "teacher", "ceiling", "first"))
        d = acc.get((p["direct"], s))
        if None in (t, w, c, f):
            continue
        base = {"chain": name(chain), "loss": loss, "seed": s, "position": p["k"], "strong": p["strong"], "w2s_acc": t,
                "ceiling_acc": c}
        out.append({**base, "scope": "step", "weak": p["weak"], "weak_acc": w, "pgr": pgr(w, t, c),
                    "direct_acc": None, "direct_pgr": None})
        out.append({**base, "scope": "from_first", "weak": chain[0], "weak_acc": f, "pgr": pgr(f, t, c),
                    "direct_acc": d, "direct_pgr": pgr(f, d, c) if d is not None else None})
    return out


# -- the terminal (`w2s run` / `w2s results`) ------------------------------------------------------
def render_chains(tables: dict, console) -> None:
    from .console import compact_table, print_table

    c = tables.get("chains")
    if c is None or not len(c):
        return
    t = compact_table("Bootstrapping chains (seed means, 95% paired bootstrap CI): per step, and from the chain's "
                    "first model beside the direct transfer")
    for col in ("chain", "loss", "scope", "weak", "strong", "w2s acc", "PGR", "direct acc", "direct PGR", "Δ PGR"):
        t.add_column(col)
    for r in c.to_dict("records"):
        t.add_row(r["chain"], r["loss"], "end to end" if r["end_to_end"] else r["scope"], r["weak"], r["strong"],
                  f"{r['w2s_acc']:.4f}", stats.pgr_cell(r), _num(r["direct_acc"], 4),
                  _ci(r, "direct_pgr", "direct_ci"), _ci(r, "delta_pgr", "delta_ci"))
    print_table(console, t)


def _num(x, nd=3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _ci(r: dict, col: str, prefix: str) -> str:
    if r["scope"] != "from_first":
        return ""
    if _num(r.get(col)) == "—":
        return "—" if r.get("resolved") else "— (unresolved)"
    return stats.ci_cell(r[col], r.get(f"{prefix}_low"), r.get(f"{prefix}_high"), r.get("note") or "")


# -- the report ------------------------------------------------------------------------------------
def load(results_dir: Path) -> pd.DataFrame:
    p = Path(results_dir) / "chains.csv"
    return pd.read_csv(p) if p.exists() and p.stat().st_size > 1 else pd.DataFrame(columns=COLUMNS)


def section(r, out: Path) -> list[str]:
    """The report's markdown lines for chains (none when the run has no chains) and their plots."""
    from .stats import md_table

    c = load(r.source)
    if not len(c):
        return []
    c["PGR"] = [stats.pgr_cell(x) for x in c.to_dict("records")]
    c["direct PGR"] = [_ci(x, "direct_pgr", "direct_ci") for x in c.to_dict("records")]
    c["Δ PGR"] = [_ci(x, "delta_pgr", "delta_ci") for x in c.to_dict("records")]
    c["scope"] = ["end to end" if e else s for s, e in zip(c["scope"], c["end_to_end"].astype(bool))]
    step, ff = c[c["scope"] == "step"], c[c["scope"] != "step"]
    lines = ["## Bootstrapping chains", "",
             "Each model of a chain trains on the previous one's weak labels (the halves alternate: "
             "docs/research.md). **Per step**: weak = the step's teacher, ceiling = the student's ground truth. "
             "**From the first model**: the chain's student against the first model's ground-truth supervisor, "
             "beside the direct transfer from that supervisor on the same seeds; Δ = bootstrapped − direct "
             "(paired CI). PGR only where the gap is resolved.", "",
             md_table(step, ["chain", "loss", "position", "weak", "strong", "seeds", "weak_acc", "w2s_acc",
                             "ceiling_acc", "PGR"],
                      ["chain", "loss", "step", "teacher", "student", "seeds", "teacher acc", "student acc",
                       "ceiling acc", "PGR"]),
             md_table(ff, ["chain", "loss", "scope", "weak", "strong", "seeds", "weak_acc", "w2s_acc", "direct_acc",
                           "ceiling_acc", "PGR", "direct PGR", "Δ PGR"],
                      ["chain", "loss", "scope", "first", "student", "seeds", "weak acc", "bootstrapped acc",
                       "direct acc", "ceiling acc", "bootstrapped PGR", "direct PGR", "Δ PGR"])]
    for chain in dict.fromkeys(c["chain"]):
        png = chain_plot(c[c["chain"] == chain], f"{r.name} ({r.dataset}): chain {chain.replace(SEP, ' → ')}",
                         out / f"chain_{r.name}_{chain.replace(SEP, '_')}.png")
        lines += [f"![{png.stem}]({png.name}) ([PDF]({png.with_suffix('.pdf').name}))", ""]
    return lines


def chain_plot(c: pd.DataFrame, title: str, path: Path) -> Path:
    """The paper's Figure 4 for one chain: (a) test accuracy and (b) PGR from the first model, against the
    student (ladder order), bootstrapped (solid) vs direct (dashed), one colour per loss; ground truth in black."""
    from .plots import _plt, _save

    plt = _plt()
    ff = c[c["scope"] != "step"].sort_values("position")
    students = list(dict.fromkeys(ff["strong"]))
    x = {s: i for i, s in enumerate(students)}
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=150)
    gt = ff.drop_duplicates("strong")
    a.plot([x[s] for s in gt["strong"]], gt["ceiling_acc"], color="black", marker="o", lw=1.8, label="ground truth (ceiling)")
    a.axhline(float(ff["weak_acc"].iloc[0]), color="grey", ls=":", lw=1.2, label=f"weak supervisor {ff['weak'].iloc[0]}")
    colours = plt.get_cmap("tab10")(np.arange(10))
    for li, (loss, g) in enumerate(ff.groupby("loss", sort=False)):
        xs = [x[s] for s in g["strong"]]
        col = colours[li % 10]
        a.plot(np.array(xs) - 0.03, g["w2s_acc"], color=col, marker="s", lw=1.5, label=f"bootstrapped, {loss}")
        a.plot(np.array(xs) + 0.03, g["direct_acc"], color=col, marker="^", lw=1.2, ls="--", label=f"direct, {loss}")
        for kind, cols, ls, mk in (("bootstrapped", ("pgr", "pgr_ci_low", "pgr_ci_high"), "-", "s"),
                                   ("direct", ("direct_pgr", "direct_ci_low", "direct_ci_high"), "--", "^")):
            v, lo, hi = (g[k].to_numpy(float) for k in cols)
            ok = np.isfinite(v)
            err = np.vstack([np.where(np.isfinite(lo), v - lo, 0), np.where(np.isfinite(hi), hi - v, 0)])
            off = -0.03 if kind == "bootstrapped" else 0.03      # side by side: a CI never hides the other
            b.errorbar(np.array(xs)[ok] + off, v[ok], yerr=np.clip(err[:, ok], 0, None), color=col, marker=mk, ls=ls,
                       capsize=3, lw=1.3)
    for ax in (a, b):
        ax.set_xticks(range(len(students)))
        ax.set_xlim(-0.4, len(students) - 0.6)
        ax.set_xticklabels(students, fontsize=8)
        ax.set_xlabel("strong student (chain order)")
        ax.grid(alpha=0.3)
    a.set_ylabel("test accuracy")
    a.set_title("(a) accuracy", fontsize=9)
    b.axhline(0, color="black", lw=0.8)
    b.axhline(1, color="grey", lw=0.8, ls="--")
    b.set_ylabel(f"PGR from {ff['weak'].iloc[0]} (ratio of seed means)")
    b.set_title("(b) PGR, 95% paired bootstrap CI; unresolved gaps omitted", fontsize=9)
    b.legend(*a.get_legend_handles_labels(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
