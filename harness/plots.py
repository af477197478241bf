"""Figures in the style of the reference's README plots (REFERENCE.md §8, notebooks/Plotting.ipynb):
x = the student's ceiling accuracy with ticks "model (acc)", y = test accuracy, one colour per weak model,
ground truth in black, one line style/marker per loss, the seed spread as a shaded band, and the median
PGR per loss as a table on the plot. Agg backend: no display is needed (servers, CI)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (3, 1, 1, 1)), "v")]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_plot(base: dict[str, float], gt: pd.DataFrame, pgr: pd.DataFrame, summary: pd.DataFrame,
                  title: str, path: Path) -> Path:
    """base: model -> x position (its ceiling accuracy, seed mean); gt: GT rows (model, seed, test_acc);
    pgr: transfer rows (weak, strong, loss, seed, w2s_acc)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    order = sorted(base, key=lambda m: base[m])
    # ground truth: each model's own accuracy at its own x, seeds shaded
    g = gt[gt["model"].isin(order)].groupby("model")["test_acc"].agg(["mean", "min", "max"]).reindex(order)
    xs = [base[m] for m in order]
    ax.plot(xs, g["mean"], color="black", marker="o", lw=2, label="ground truth", zorder=3)
    ax.fill_between(xs, g["min"], g["max"], color="black", alpha=0.12, lw=0)
    losses = list(dict.fromkeys(pgr["loss"])) if len(pgr) else []
    weaks = sorted(set(pgr["weak"]), key=lambda m: base.get(m, 0)) if len(pgr) else []
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(1, len(weaks))))
    for wi, weak in enumerate(weaks):
        for li, loss in enumerate(losses):
            rows = pgr[(pgr["weak"] == weak) & (pgr["loss"] == loss) & pgr["strong"].isin(base)]
            if rows.empty:
                continue
            agg = rows.groupby("strong")["w2s_acc"].agg(["mean", "min", "max"])
            agg = agg.loc[sorted(agg.index, key=lambda m: base[m])]
            x = [base[m] for m in agg.index]
            ls, mk = STYLES[li % len(STYLES)]
            ax.plot(x, agg["mean"], color=colours[wi], ls=ls, marker=mk, lw=1.6, label=f"weak {weak}, {loss}")
            ax.fill_between(x, agg["min"], agg["max"], color=colours[wi], alpha=0.15, lw=0)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{m} ({base[m]:.3f})" for m in order], rotation=35, ha="right", fontsize=8)
    ax.set_xlabel("student ceiling accuracy (ground truth, mean over seeds)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    if len(summary):
        cells = [[r["loss"], _f(r["median_pgr"]), f"[{_f(r['median_ci_low'])}, {_f(r['median_ci_high'])}]"]
                 for r in summary.to_dict("records")]
        tab = ax.table(cellText=cells, colLabels=["loss", "median PGR", "95% CI"], loc="lower right",
                       colWidths=[0.12, 0.14, 0.2])
        tab.set_fontsize(8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def pgr_plot(pairs: pd.DataFrame, title: str, path: Path) -> Path:
    """PGR per (weak -> strong) pair and loss with bootstrap CIs over seeds (error bars)."""
    plt = _plt()
    labels = list(dict.fromkeys(f"{w}→{s}" for w, s in zip(pairs["weak"], pairs["strong"])))
    losses = list(dict.fromkeys(pairs["loss"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels) + 3), 5), dpi=110)
    width = 0.8 / max(1, len(losses))
    colours = plt.get_cmap("tab10")(np.arange(max(1, len(losses))))
    for li, loss in enumerate(losses):
        sub = pairs[pairs["loss"] == loss].set_index(pairs[pairs["loss"] == loss].apply(
            lambda r: f"{r['weak']}→{r['strong']}", axis=1))
        y = np.array([sub["pgr"].get(lab, np.nan) for lab in labels], dtype=float)
        lo = np.array([sub["pgr_ci_low"].get(lab, np.nan) for lab in labels], dtype=float)
        hi = np.array([sub["pgr_ci_high"].get(lab, np.nan) for lab in labels], dtype=float)
        x = np.arange(len(labels)) + (li - (len(losses) - 1) / 2) * width
        err = np.nan_to_num(np.vstack([y - lo, hi - y]), nan=0.0).clip(min=0)
        ax.bar(x, np.nan_to_num(y), width, yerr=err, capsize=3, color=colours[li], label=loss)
    ax.axhline(0, color="black", lw=0.8)
    ax.axhline(1, color="grey", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("PGR (mean over seeds, 95% bootstrap CI)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _f(x) -> str:
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"
