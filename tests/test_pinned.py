"""Pinned numbers (torchtune-style): the tiny sweep at seed 0 has known per-step losses and known test
accuracies, so a refactor that changes results fails here instead of silently moving every table.

If a change is *meant* to move results (a fixed quirk, a new default), update the pins in the same
commit and say why in its message. The tolerances allow for float summation order across CPUs, not for
a different computation: a changed loss, label, pooling, split or schedule moves these by >> 1e-4.
"""
import json

import pytest

# (kind, model, half, loss) -> (test_acc, losses logged at steps 1, 5, 10, 15, 20, 25)
PINNED = {
    ("gt", "tiny-gpt2", "train1", "xent"): (0.52, [0.693147, 0.694569, 0.697556, 0.692391, 0.690644, 0.682065]),
    ("gt", "tiny-bert", "train2", "xent"): (0.615, [0.693147, 0.701057, 0.692620, 0.687050, 0.688989, 0.685842]),
    ("transfer", "tiny-bert", "train2", "xent"): (0.52, [0.693147, 0.692084, 0.691547, 0.691461, 0.691636, 0.691497]),
    ("transfer", "tiny-bert", "train2", "logconf"): (0.525, [0.693147, 0.692040, 0.688434, 0.683033, 0.676719, 0.673444]),
}
PINNED_PGR = {"xent": 0.0, "logconf": 0.0526315789}


def _stages(manifest):
    runs = manifest.parent / "runs"
    res = json.loads((runs / "tiny" / "results.json").read_text())
    out = {}
    for row in res["stages"]:
        half = row.get("half")
        (stage_dir,) = (runs / "stages").glob(row["key"] + "*")
        out[(row["kind"], row["model"], half, row["loss"])] = (row["test_acc"], stage_dir)
    return res, out


def test_pinned_losses_and_accuracies(tiny_run):
    _, stages = _stages(tiny_run)
    assert set(stages) == set(PINNED)
    for ident, (acc, losses) in PINNED.items():
        got_acc, stage_dir = stages[ident]
        rows = [json.loads(line) for line in (stage_dir / "log.jsonl").read_text().splitlines()]
        got = [r["loss"] for r in rows if "loss" in r]
        assert got_acc == pytest.approx(acc, abs=1e-9), ident
        assert got == pytest.approx(losses, rel=1e-4), ident


def test_pinned_pgr(tiny_run):
    res, _ = _stages(tiny_run)
    got = {r["loss"]: r["pgr"] for r in res["pgr"]}
    assert got == pytest.approx(PINNED_PGR, abs=1e-6)
