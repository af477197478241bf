"""Figures in the style of the reference's README plots (docs/quirks.md#pgr, notebooks/Plotting.ipynb), made to
be read in a paper: the accuracy-vs-ceiling plot (models in ladder order on x, ticks "model (ceiling acc)";
ground truth in black, one colour per weak supervisor, one marker per loss, student markers drawn over
ground truth; a majority-class line; 95% CI whiskers only where an interval exists; the legend outside the
axes) and the PGR plot (value labels, an axis that one outlier cannot flatten, unresolved pairs labelled).
Each is written as PNG and PDF. Agg backend: no display is needed (servers, CI)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

MARKERS = ["o", "s", "^", "D", "v", "P"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.savefig(path, bbox_inches="tight")
    fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight")
    _plt().close(fig)
    return path


def _err(row: dict) -> list | None:
    lo, hi = row.get("acc_ci_low"), row.get("acc_ci_high")
    if lo is None or hi is None or np.isnan(lo) or np.isnan(hi):
        return None
    return [[max(0.0, row["acc"] - lo)], [max(0.0, hi - row["acc"])]]


def accuracy_plot(r, order: list[str], title: str, path: Path) -> Path:
    """r: harness.report.Results with `accuracy` (harness.stats) and `pairs`; order: the ladder."""
    plt = _plt()
    acc = r.accuracy
    gt = acc[acc["kind"] == "gt"]
    roles = gt["roles"].fillna("").astype(str)

    def supervisor(model):   # where a weak model's students start: its accuracy as supervisor
        g = gt[(gt["model"] == model) & roles.str.contains("weak")]
        return float(g.iloc[0]["acc"]) if len(g) else own(model)["acc"]

    def own(model):        # a model's ground-truth point: its ceiling, or (supervisor only) its weak-half GT
        g = gt[(gt["model"] == model) & roles.str.contains("ceiling")]
        g = g if len(g) else gt[gt["model"] == model]
        return g.iloc[0].to_dict() if len(g) else None

    models = [m for m in order if own(m) is not None]
    x = {m: i for i, m in enumerate(models)}
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=150)
    pts = [own(m) for m in models]
    ax.plot(range(len(models)), [p["acc"] for p in pts], color="black", lw=1.8, zorder=2, label="ground truth")
    for i, p in enumerate(pts):
        ax.errorbar(i, p["acc"], yerr=_err(p), color="black", marker="o", ms=6, capsize=3, zorder=2)
    maj = float(acc["majority"].iloc[0]) if "majority" in acc and len(acc) else float("nan")
    if not np.isnan(maj):
        ax.axhline(maj, color="grey", ls=":", lw=1.2, zorder=1, label=f"majority class ({maj:.3f})")
    tr = acc[acc["kind"] == "transfer"]
    weaks = [m for m in order if m in set(tr["weak"])]
    losses = list(dict.fromkeys(tr["loss"]))
    colours = plt.get_cmap("viridis")(np.linspace(0.1, 0.8, max(1, len(weaks))))
    n_series = max(1, len(weaks) * len(losses))
    for wi, weak in enumerate(weaks):
        for li, loss in enumerate(losses):
            rows = [row for row in tr.to_dict("records") if row["weak"] == weak and row["loss"] == loss and row["model"] in x]
            rows.sort(key=lambda row: x[row["model"]])
            if not rows:
                continue
            off = ((wi * len(losses) + li) - (n_series - 1) / 2) * 0.06      # side by side, never hidden
            xs = [x[row["model"]] + off for row in rows]
            ax.plot([x[weak]] + xs, [supervisor(weak)] + [row["acc"] for row in rows], color=colours[wi],
                    ls="--" if li else "-", lw=1.2, alpha=0.8, zorder=3)
            for xi, row in zip(xs, rows):
                ax.errorbar(xi, row["acc"], yerr=_err(row), color=colours[wi], marker=MARKERS[li % len(MARKERS)],
                            ms=6, capsize=2, mec="white", mew=0.6, zorder=4)
            ax.plot([], [], color=colours[wi], ls="--" if li else "-", marker=MARKERS[li % len(MARKERS)],
                    label=f"weak {weak}, {loss}")
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels([f"{m}\n({own(m)['acc']:.3f})" for m in models], fontsize=8)
    ax.set_xlabel("model (ground-truth accuracy), in ladder order")
    ax.set_ylabel("test accuracy")
    seeds = int(acc["seeds"].max()) if len(acc) else 0
    ci = "95% CI: paired bootstrap over test items" + (" and seeds" if seeds > 1 else "")
    if acc["acc_ci_low"].isna().all():
        ci = "no CI (one seed, no per-item predictions)"
    ax.set_title(f"{title}\n{seeds} seed(s), mean over seeds; {ci}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, path)


def pgr_plot(pairs: pd.DataFrame, title: str, path: Path) -> Path:
    """PGR per (weak → strong) pair and loss: resolved pairs as bars with their CI and value, unresolved
    ones labelled at 0. The y range follows the bulk ([-0.5, 1.5] at most) and clips outliers with an arrow."""
    plt = _plt()
    labels = list(dict.fromkeys(f"{w}→{s}" for w, s in zip(pairs["weak"], pairs["strong"])))
    losses = list(dict.fromkeys(pairs["loss"]))
    ok = pairs[pairs["resolved"].astype(bool)]
    vals = np.concatenate([ok["pgr"].to_numpy(float), ok["pgr_ci_low"].to_numpy(float), ok["pgr_ci_high"].to_numpy(float)])
    vals = vals[np.isfinite(vals)]
    lo = max(-0.5, min(-0.1, vals.min() - 0.1)) if len(vals) else -0.2
    hi = min(1.5, max(1.1, vals.max() + 0.15)) if len(vals) else 1.2
    fig, ax = plt.subplots(figsize=(max(5.5, 1.2 * len(labels) + 3), 4.2), dpi=150)
    width = 0.8 / max(1, len(losses))
    colours = plt.get_cmap("tab10")(np.arange(max(1, len(losses))))
    for li, loss in enumerate(losses):
        for row in pairs[pairs["loss"] == loss].to_dict("records"):
            xi = labels.index(f"{row['weak']}→{row['strong']}") + (li - (len(losses) - 1) / 2) * width
            if not row["resolved"]:
                ax.text(xi, 0.02 * (hi - lo), "unresolved", rotation=90, ha="center", va="bottom", fontsize=7, color="dimgrey")
                continue
            y = float(row["pgr"])
            yc = float(np.clip(y, lo, hi))
            ax.bar(xi, yc, width * 0.9, color=colours[li], zorder=2)
            l, h = row["pgr_ci_low"], row["pgr_ci_high"]
            top = yc
            if np.isfinite(l) and np.isfinite(h):
                ax.errorbar(xi, yc, yerr=[[max(0, yc - max(l, lo))], [max(0, min(h, hi) - yc)]], color="black",
                            capsize=3, lw=1, zorder=3)
                top = max(yc, min(h, hi))
            clipped = y != yc
            ax.annotate(f"{y:.2f}" + (" (clipped)" if clipped else ""), (xi, top if yc >= 0 else yc),
                        xytext=(0, 3 if yc >= 0 else -10), textcoords="offset points", ha="center", fontsize=7, zorder=4)
    from matplotlib.patches import Patch

    handles = [Patch(color=colours[li], label=loss) for li, loss in enumerate(losses)]
    ax.axhline(0, color="black", lw=0.8)
    ax.axhline(1, color="grey", lw=0.8, ls="--")
    ax.set_ylim(lo, hi)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_xticks(np.arange(len(labels)))
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("PGR (ratio of seed means)")
    ax.set_title(f"{title}\n95% paired bootstrap CI; PGR only where ceiling − weak is resolved", fontsize=9)
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
