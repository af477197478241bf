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
    tables["summary"] = summarize(tables["pgr"], WEAK, CEIL)
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
    assert "| small | 2 | 0.6100 | — | 0.6100 |" in md                  # weak-only model
    assert "| medium | 2 | 0.7100 | 0.7500 | 0.7300 |" in md             # weak, ceiling, reference base(m)
    assert "| large | 2 | — | 0.8500 | 0.8500 |" in md
    assert "| small | large | xent | 2 | 0.6100 | 0.7450 | 0.8500 | 0.5625 |" in md
    assert "| xent | 6 | 0.5000 |" in md and "| logconf | 6 | 0.2500 |" in md
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
