"""`w2s report` on a known small results set (hand-picked accuracies, 3 models x 2 seeds x 2 losses): the
markdown holds the expected numbers, the plots are real images, and `--compare` passes/fails per row."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.metrics import pgr
from harness.results import summarize

EXAMPLE = Path(__file__).resolve().parent.parent / "experiments" / "expected" / "example.yaml"
WEAK = {("small", 0): 0.60, ("small", 1): 0.62, ("medium", 0): 0.70, ("medium", 1): 0.72}
CEIL = {("medium", 0): 0.74, ("medium", 1): 0.76, ("large", 0): 0.84, ("large", 1): 0.86}
W2S = {("small", "medium", "xent"): (0.67, 0.69), ("small", "large", "xent"): (0.72, 0.77),
       ("medium", "large", "xent"): (0.77, 0.72), ("small", "medium", "logconf"): (0.705, 0.655),
       ("small", "large", "logconf"): (0.66, 0.80), ("medium", "large", "logconf"): (0.63, 0.72)}


def write_results(d: Path) -> Path:
    """The files `w2s run` writes (results.write), built by hand."""
    d.mkdir(parents=True, exist_ok=True)
    stages = [{"kind": "gt", "model": m, "weak": None, "half": "train1", "loss": "xent", "seed": s, "roles": "weak",
               "test_acc": a, "test_auroc": None, "n_train": 100, "key": f"w{m}{s}"} for (m, s), a in WEAK.items()]
    stages += [{"kind": "gt", "model": m, "weak": None, "half": "train2", "loss": "xent", "seed": s,
                "roles": "ceiling", "test_acc": a, "test_auroc": None, "n_train": 100, "key": f"c{m}{s}"}
               for (m, s), a in CEIL.items()]
    rows = []
    for (w, st, loss), accs in W2S.items():
        for seed, a in enumerate(accs):
            wa, ca = WEAK[(w, seed)], CEIL[(st, seed)]
            rows.append({"weak": w, "strong": st, "loss": loss, "seed": seed, "weak_acc": wa, "w2s_acc": a,
                         "ceiling_acc": ca, "pgr": pgr(wa, a, ca), "small_gap": False, "agreement_test": 0.9})
            stages.append({"kind": "transfer", "model": st, "weak": w, "half": "train2", "loss": loss, "seed": seed,
                           "roles": "", "test_acc": a, "test_auroc": None, "n_train": 100, "key": f"t{w}{st}{loss}{seed}"})
    tables = {"stages": pd.DataFrame(stages), "pgr": pd.DataFrame(rows)}
    tables.update(summarize(tables["stages"], tables["pgr"], None, WEAK, CEIL))   # no items: seeds-only CIs
    for name, df in tables.items():
        df.to_csv(d / f"{name}.csv", index=False)
    (d / "results.json").write_text(json.dumps({"meta": {"name": "synthetic", "dataset": "sciq"},
                                                **{n: json.loads(df.to_json(orient="records")) for n, df in tables.items()}}))
    return d


@pytest.fixture()
def results(tmp_path):
    return write_results(tmp_path / "synthetic")


def test_report_tables_and_plots(results, tmp_path):
    out = tmp_path / "rep"
    res = CliRunner().invoke(main, ["report", str(results), "--out", str(out)])
    assert res.exit_code == 0, res.output
    md = (out / "report.md").read_text()
    assert "Dataset **sciq**" in md
    # no per-item predictions here: the two seeds are resampled (an interval from two values, never one)
    assert "| small | 2 | 0.610 [0.600, 0.620] | — | — | 0.0100 |" in md                 # supervisor only
    assert "| medium | 2 | 0.710 [0.700, 0.720] | — | 0.750 [0.740, 0.760] | 0.0100 |" in md
    assert "| small | large | xent | 2 | 0.6100 | 0.745 [0.720, 0.770] | 0.8500 | 0.240 [0.240, 0.240] | 0.5625 [" \
        not in md and "| small | large | xent | 2 | 0.6100 | 0.745 [0.720, 0.770] | 0.8500 | 0.240 [0.240, 0.240] | " \
        "0.563 [0.500, 0.625] |" in md
    assert "| xent | 6 | 3 | 0 | 0.500 [0.500, 0.500] |" in md and "| logconf | 6 | 3 | 0 | 0.250 [" in md
    assert sorted(p.name for p in out.glob("*.pdf")) == ["accuracy_synthetic.pdf", "pgr_synthetic.pdf"]
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["accuracy_synthetic.png", "pgr_synthetic.png"]
    import matplotlib.image as mpimg

    for p in pngs:
        assert p.stat().st_size > 5_000
        img = mpimg.imread(p)
        assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 20, f"{p.name} is nearly one colour"
        assert f"]({p.name})" in md


def test_compare_passes_on_example(results, tmp_path):
    res = CliRunner().invoke(main, ["report", str(results), "--compare", str(EXAMPLE), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert res.output.count("PASS") == 10 and "FAIL" not in res.output
    assert "10 passed, 0 failed, 0 skipped" in res.output
    assert "PASS" in (tmp_path / "r" / "compare.md").read_text()


def test_compare_fails_and_explains(results, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: sciq\nsource: test\nrows:\n"
                   "  - {metric: ceiling_acc, model: large, expected: 0.80, tol: 0.02}\n"
                   "  - {metric: median_pgr, loss: logconf, sign: negative}\n"
                   "  - {metric: gt_acc, model: huge, expected: 0.9, tol: 0.1}\n"
                   "  - {metric: gt_acc, model: huge, expected: 0.9, tol: 0.1, required: false}\n"
                   "  - {metric: weak_acc, model: small, expected: 0.61, tol: 0.001}\n")
    res = CliRunner().invoke(main, ["report", str(results), "--compare", str(bad), "--out", str(tmp_path / "r")])
    assert res.exit_code == 1, res.output
    lines = [l for l in res.output.splitlines() if l[:4] in ("PASS", "FAIL", "SKIP")]
    assert [l[:4] for l in lines] == ["FAIL", "FAIL", "FAIL", "SKIP", "PASS"]
    assert "|0.8500 − 0.8000| > 0.02" in lines[0] and "sign should be negative" in lines[1] and "missing" in lines[2]
    assert "1 passed, 3 failed, 1 skipped" in res.output


def test_compare_rejects_other_dataset_and_bad_rows(results, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("dataset: boolq\nrows:\n  - {metric: median_pgr, loss: xent, sign: positive}\n")
    res = CliRunner().invoke(main, ["report", str(results), "--compare", str(other), "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "another dataset" in res.output
    typo = tmp_path / "typo.yaml"
    typo.write_text("rows:\n  - {metric: median_pgrr, loss: xent, sign: positive}\n")
    res = CliRunner().invoke(main, ["report", str(results), "--compare", str(typo)])
    assert res.exit_code != 0 and "median_pgrr" in res.output


def test_report_from_manifest_and_errors(tmp_path):
    res = CliRunner().invoke(main, ["report", str(tmp_path / "nothing-here")])
    assert res.exit_code != 0 and "not a results dir" in res.output
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code != 0 and "no stages.csv" in res.output


def write_one_seed(d: Path, correct: dict[str, np.ndarray] | None, accs: dict[str, float]) -> Path:
    """One seed, weak W -> strong S (xent); with `correct` (per-item 0/1 per stage) items.parquet is written."""
    d.mkdir(parents=True, exist_ok=True)
    spec = {"weak": ("gt", "W", None, "train1", "weak"), "ceiling": ("gt", "S", None, "train2", "ceiling"),
            "student": ("transfer", "S", "W", "train2", "")}
    stages = pd.DataFrame([{"kind": k, "model": m, "weak": w, "half": h, "loss": "xent", "seed": 0, "roles": r,
                            "test_acc": accs[n], "test_auroc": None, "n_train": 10, "key": n}
                           for n, (k, m, w, h, r) in spec.items()])
    rows = pd.DataFrame([{"weak": "W", "strong": "S", "loss": "xent", "seed": 0, "weak_acc": accs["weak"],
                          "w2s_acc": accs["student"], "ceiling_acc": accs["ceiling"],
                          "pgr": pgr(accs["weak"], accs["student"], accs["ceiling"]), "small_gap": False, "agreement_test": 0.8}])
    items = None
    if correct is not None:
        items = pd.concat([pd.DataFrame({"key": n, "id": [f"i{i}" for i in range(len(c))], "label": np.arange(len(c)) % 2,
                                         "correct": c.astype("int8")}) for n, c in correct.items()], ignore_index=True)
        items.to_parquet(d / "items.parquet", index=False)
    tables = {"stages": stages, "pgr": rows, **summarize(stages, rows, items, {("W", 0): accs["weak"]},
                                                        {("S", 0): accs["ceiling"]})}
    for name, df in tables.items():
        df.to_csv(d / f"{name}.csv", index=False)
    (d / "results.json").write_text(json.dumps({"meta": {"name": d.name, "dataset": "sst2", "models": ["W", "S"]}}))
    return d


def test_unresolved_pair_prints_no_pgr(tmp_path):
    """Weak and ceiling right on exactly the same items: a zero-width gap, so no PGR anywhere, even though
    the raw ratio (0.75 - 0.70) / (0.70 - 0.70) ... is not even defined; and the accuracies are at chance."""
    rng = np.random.default_rng(0)
    same = (rng.random(400) < 0.5).astype(int)
    student = same.copy()
    student[np.where(same == 0)[0][:8]] = 1
    d = write_one_seed(tmp_path / "flat", {"weak": same, "ceiling": same.copy(), "student": student},
                       {"weak": same.mean(), "ceiling": same.mean(), "student": student.mean()})
    res = CliRunner().invoke(main, ["report", str(d), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| unresolved (gap 0.000 ± 0.000) |" in md
    assert "| xent | 0 | 0 | 1 | — (no resolved pair) | — (no resolved pair) | — |" in md
    assert "**at chance**" in md


def test_one_seed_without_items_has_no_interval(tmp_path):
    d = write_one_seed(tmp_path / "old", None, {"weak": 0.6, "ceiling": 0.9, "student": 0.75})
    res = CliRunner().invoke(main, ["report", str(d), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| one seed and no per-item test predictions |" in md                   # the pair: no PGR, and why
    assert "0.600 (no CI: one seed and no per-item test predictions)" in md
    assert "[0.600, 0.600]" not in md and "0.5000" not in md


def test_terminal_table_masks_unresolved_pgr(tmp_path):
    from rich.console import Console

    from harness.results import render

    rng = np.random.default_rng(1)
    same = (rng.random(300) < 0.7).astype(int)
    d = write_one_seed(tmp_path / "flat", {"weak": same, "ceiling": same.copy(), "student": same.copy()},
                       {"weak": same.mean(), "ceiling": same.mean(), "student": same.mean()})
    tables = {n: pd.read_csv(d / f"{n}.csv") for n in ("stages", "pgr", "pairs", "summary", "accuracy")}
    con = Console(record=True, width=200)
    render(tables, con)
    text = con.export_text()
    assert "unresolved (gap 0.000 ± 0.000)" in text and "no resolved pair" in text


def test_results_json_is_self_contained(tmp_path):
    from harness.manifest import load
    from harness.results import write

    m = load(Path(__file__).resolve().parent.parent / "experiments" / "quickstart.yaml")
    write(m, {"stages": pd.DataFrame(), "pgr": pd.DataFrame(), "summary": pd.DataFrame()}, tmp_path / "q")
    meta = json.loads((tmp_path / "q" / "results.json").read_text())["meta"]
    assert meta["versions"]["harness"] and meta["versions"]["numpy"]
    assert len(meta["git_commit"]) == 40 and isinstance(meta["git_dirty"], bool)
    assert meta["manifest"]["name"] == "quickstart" and meta["manifest"]["dataset"]["n_docs"] == 2000
    assert meta["tag"] == "real" and "data" in meta
