"""Vision on the shared machinery: the probe's loss comes from the loss registry, frozen features live in
the feature store the language probes use (harness.features.FeatureCache), and the numbers of the tiny
run are pinned so a refactor that moves results fails here. Plus the three vision bugs of issue #12:
two output dirs in one process, `w2s plan` naming why a stage is corrupt, `--only <student>` without
its teacher."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from test_vision import cli, make_cifar_tar, manifest

from harness.features import FeatureCache
from vision.protocol import train_probe

# The tiny run of test_vision's manifest (seeds 0, 1; small_cnn -> tiny_cnn), measured before vision moved
# to the loss registry and the shared feature store: test accuracy per stage, bit for bit (CPU).
PINNED = {("gt", "small_cnn", 0): 0.3, ("gt", "small_cnn", 1): 0.325, ("gt", "tiny_cnn", 0): 0.525,
          ("gt", "tiny_cnn", 1): 0.275, ("transfer", "tiny_cnn", 0): 0.3, ("transfer", "tiny_cnn", 1): 0.025}
PINNED_BY_EPOCH = {("gt", 0): [0.3, 0.3, 0.525, 0.525], ("transfer", 1): [0.275, 0.275, 0.2, 0.025]}


def probe_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = (np.eye(3)[y] * 3 + rng.normal(0, 1, (300, 3))).astype(np.float32)
    return x, np.eye(3, dtype=np.float32)[y], y


class Cfg:
    epochs, lr, batch_size, weight_decay = 5, 0.05, 30, 0.0


def test_probe_loss_is_the_registry_loss_with_pinned_numbers():
    x, t, y = probe_data()
    seen = {"xent": [], "kl": []}
    p_xent, log = train_probe(x[:200], t[:200], x[200:], y[200:], Cfg, "cosine_per_step", 0, seen["xent"].append)
    # kl = xent - H(y): the same gradient, another value; one-hot targets have H = 0, so soften them
    soft = (0.8 * t + 0.2 / 3).astype(np.float32)
    p_a, _ = train_probe(x[:200], soft[:200], x[200:], y[200:], Cfg, "cosine_per_step", 0, seen["xent"].append)
    p_b, _ = train_probe(x[:200], soft[:200], x[200:], y[200:], Cfg, "cosine_per_step", 0, seen["kl"].append,
                         {"name": "kl", "params": {}})
    assert np.allclose(p_a, p_b, atol=1e-6)                       # same gradient: same probe
    assert seen["kl"][-1]["loss"] < seen["xent"][-1]["loss"] - 0.1  # ...but the registry's kl was called
    # pinned: the numbers of the inline soft CE this replaced (identical float32 operations)
    assert log["test_acc"] == [0.86, 0.96, 0.96, 0.96, 0.96]
    assert abs(float(p_xent.astype(np.float64).sum()) - 99.99999946786556) < 1e-9


def test_tiny_run_pinned_and_two_output_dirs_in_one_process(tmp_path):
    """Bug: the features memo was keyed without the output dir, so a second run in the same process with
    another output.dir read meta.json from a folder that did not exist."""
    data_dir = make_cifar_tar(tmp_path / "data")
    results = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        path = manifest(tmp_path / name, data_dir)
        r = cli("run", path, "--no-tracking")
        assert r.exit_code == 0, r.output
        assert "computing" in r.output          # each output dir has its own store: computed there once
        runs = tmp_path / name / "runs"
        shards = list((runs / "features").glob("*/*.pt"))
        assert len(shards) == 1, shards
        got = {}
        for d in (runs / "stages").iterdir():
            ident, m = json.loads((d / "stage.json").read_text())["identity"], json.loads((d / "metrics.json").read_text())
            got[(ident["kind"], ident["model"]["id"], ident["seed"])] = m
            if ident["model"]["id"] == "tiny_cnn":              # probes record the store entry they read
                assert m["features_key"][:16] == shards[0].parent.name
        assert {k: v["test_acc"] for k, v in got.items()} == PINNED
        assert got[("gt", "tiny_cnn", 0)]["test_acc_by_epoch"] == PINNED_BY_EPOCH[("gt", 0)]
        assert got[("transfer", "tiny_cnn", 1)]["test_acc_by_epoch"] == PINNED_BY_EPOCH[("transfer", 1)]
        results.append(pd.read_csv(runs / "vision-tiny" / "pgr.csv"))
    assert results[0]["w2s_acc"].tolist() == results[1]["w2s_acc"].tolist() == [0.3, 0.025]


def test_plan_names_corruption_and_only_student_without_teacher_exits_2(tmp_path):
    path = manifest(tmp_path, make_cifar_tar(tmp_path / "data"), split={"n_weak_train": 30, "n_train": 50, "n_test": 40})
    assert cli("run", path, "--no-tracking").exit_code == 0
    stages = pd.read_csv(tmp_path / "runs" / "vision-tiny" / "stages.csv")
    teacher = stages[(stages["roles"] == "weak") & (stages["seed"] == 0)]["key"].iloc[0]
    student = stages[(stages["kind"] == "transfer") & (stages["seed"] == 0)]["key"].iloc[0]
    f = tmp_path / "runs" / "stages" / teacher[:16] / "weak_labels.parquet"
    f.write_bytes(f.read_bytes()[:100])                          # truncated behind the cache's back
    r = cli("plan", path)
    assert r.exit_code == 0, r.output
    assert f"corrupt cache: gt small_cnn train1 s0 ({teacher[:12]}): weak_labels.parquet does not match" in r.output
    assert f"({student[:12]}): its teacher {teacher[:12]} is recomputed" in r.output
    assert r.output.count("corrupt: rerun") == 2 and "4/6 cached" in r.output
    r = cli("run", path, "--no-tracking", "--only", student[:12])
    assert r.exit_code == 2                                      # a clear error, not a traceback
    assert f"its teacher stage {teacher[:12]} has not finished" in r.output and f"--only {teacher[:12]}" in r.output


def test_feature_store_done_rule_memo_per_directory_and_meta(tmp_path):
    calls = []

    def fetch(cache, hashes):
        def compute(missing):
            calls.append(list(missing))
            new = torch.tensor([[float(hashes[i][1:]), -1.0] for i in missing])
            return [hashes[i] for i in missing], new, {"seconds": 1.5}
        return cache.fetch(hashes, compute)

    ident = {"kind": "test", "model": "m"}
    a = FeatureCache(tmp_path / "a", ident, shared=True)
    rows = fetch(a, ["h0", "h1"])
    assert torch.equal(torch.stack(rows), torch.tensor([[0.0, -1.0], [1.0, -1.0]])) and calls == [[0, 1]]
    assert a.meta == {"seconds": 1.5, "key": a.key}
    (a.dir / ".deadbeef.tmp").write_bytes(b"half a shard")       # a killed writer's leftover: never read
    assert len(fetch(FeatureCache(tmp_path / "a", ident, shared=True), ["h0", "h1"])) == 2 and len(calls) == 1
    # same identity, another root: its own store and memo (the vision bug), computed again
    b = FeatureCache(tmp_path / "b", ident, shared=True)
    fetch(b, ["h0"])
    assert len(calls) == 2 and b.dir != a.dir and (b.dir.parent.parent / "features").is_dir()
    # a fresh process (no memo) reads the shard and its meta from disk; only the new row is computed
    fresh = FeatureCache(tmp_path / "a", ident)
    rows = fetch(fresh, ["h1", "h2"])
    assert fresh.meta["key"] == a.key and calls[-1] == [1] and [float(r[0]) for r in rows] == [1.0, 2.0]
    assert fresh.meta["seconds"] == 1.5 and len(list(a.dir.glob("*.pt"))) == 2
