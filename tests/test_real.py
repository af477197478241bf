"""Real tier: real pretrained encoders from the seeded HF cache on real data from ../shared/data."""
import json
import math

import pytest

from conftest import ROOT, SHARED, w2s

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def offline_env():
    if not (SHARED / "data").is_dir():
        pytest.fail(f"{SHARED}/data is missing: the real tier needs the shared offline data")
    return {"W2S_DATA_DIR": str(SHARED / "data"), "HF_HUB_OFFLINE": "1"}


def run_manifest(path, name, out, env, *overrides):
    w2s("run", ROOT / path, "--no-tracking", "-o", f"output.dir={out}", *overrides, env=env, timeout=3000)
    return json.loads((out / name / "results.json").read_text())


def check(res, weakest, strongest):
    """The robust claims: the weakest model supervising the strongest leaves a real gap with a finite
    PGR; a pair whose ceiling does not beat its supervisor gets no PGR rather than a made-up one."""
    rows = res["pgr"]
    assert rows, "no transfer rows"
    extreme = [r for r in rows if r["weak"] == weakest and r["strong"] == strongest]
    assert extreme, rows
    for row in extreme:
        assert row["ceiling_acc"] > row["weak_acc"] + 0.02, row
        assert math.isfinite(row["pgr"]), row
    for row in rows:
        if row["ceiling_acc"] <= row["weak_acc"]:
            assert row["pgr"] is None or not math.isfinite(row["pgr"]), row
    for row in res["stages"]:
        assert row["test_acc"] > 0.55, row          # every real model learns something


def test_quickstart(offline_env, tmp_path):
    check(run_manifest("experiments/quickstart.yaml", "quickstart", tmp_path, offline_env), "minilm-l3", "mpnet-base")


def test_offline_tier_reduced(offline_env, tmp_path):
    """One dataset, one seed of `make reproduce-offline`."""
    check(run_manifest("experiments/offline/sst2-probe.yaml", "offline-sst2-probe", tmp_path, offline_env, "-o", "seeds=[0]"),
          "minilm-l3", "mpnet-base")


def test_cached_models_and_an_unreachable_hub_run_without_retries(offline_env, tmp_path):
    """No HF_HUB_OFFLINE, no network: every model is cached, so the run goes offline after one short
    question to the hub instead of five retries for each optional file of each model load."""
    env = {**offline_env, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}   # port 9: refused at once
    out = tmp_path / "runs"
    r = w2s("run", ROOT / "experiments/offline/sst2-probe.yaml", "--no-tracking", "-o", f"output.dir={out}",
            "-o", "seeds=[0]", "-o", "dataset.n_docs=200", "-o", "dataset.n_test_docs=100", env=env, timeout=1200)
    logs = "".join(p.read_text() for p in out.rglob("*.log"))
    assert "the Hugging Face hub is unreachable" in r.stdout + r.stderr
    assert "Retrying" not in r.stdout + r.stderr + logs
    assert json.loads((out / "offline-sst2-probe" / "results.json").read_text())["stages"]
