"""End to end on tiny random models through the real from_pretrained path: a 2-model x 2-loss sweep,
a rerun that is all cache hits, and a SIGKILLed run that resumes to the same results."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, W2S, w2s


def results(manifest: Path) -> dict:
    return json.loads((manifest.parent / "runs" / "tiny" / "results.json").read_text())


def stage_dirs(manifest: Path) -> list[Path]:
    return sorted((manifest.parent / "runs" / "stages").glob("*"))


def test_sweep_then_all_cache_hits(tiny):
    first = w2s("run", tiny, "--no-tracking")
    assert first.stdout.count(": running") == 4, first.stdout
    res = results(tiny)
    assert {(r["weak"], r["strong"], r["loss"]) for r in res["pgr"]} == {
        ("tiny-gpt2", "tiny-bert", "xent"), ("tiny-gpt2", "tiny-bert", "logconf")}
    assert len(res["stages"]) == 4 and all(0 <= r["test_acc"] <= 1 for r in res["stages"])
    assert {r["loss"] for r in res["summary"]} == {"xent", "logconf"}
    for d in stage_dirs(tiny):
        assert (d / "done.json").exists() and (d / "predictions_test.parquet").exists()
    weak = [d for d in stage_dirs(tiny) if (d / "weak_labels.parquet").exists()]
    assert len(weak) == 1
    table = pd.read_parquet(weak[0] / "weak_labels.parquet")
    assert list(table.columns) == ["id", "text_hash", "txt", "soft_label", "hard_label", "analysis_gt_label"]
    assert len(table) == 200 and all(abs(sum(p) - 1) < 1e-5 for p in table["soft_label"])
    mtimes = {d: (d / "done.json").stat().st_mtime for d in stage_dirs(tiny)}

    second = w2s("run", tiny, "--no-tracking")
    assert ": running" not in second.stdout
    assert second.stdout.count(": cached") == 4
    assert {d: (d / "done.json").stat().st_mtime for d in stage_dirs(tiny)} == mtimes
    assert results(tiny) == res


def test_killed_run_resumes_to_the_same_results(tiny, tmp_path):
    reference = tmp_path / "ref" / "tiny.yaml"
    reference.parent.mkdir()
    reference.write_text(tiny.read_text().replace(str(tmp_path / "runs"), str(reference.parent / "runs")))
    w2s("run", reference, "--no-tracking")

    proc = subprocess.Popen([*W2S, "run", str(tiny), "--no-tracking"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "runs" / "stages").glob("*/done.json")):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    done = list((tmp_path / "runs" / "stages").glob("*/done.json"))
    assert 1 <= len(done) < 4, "the kill should land mid-sweep"

    resumed = w2s("run", tiny, "--no-tracking")
    assert resumed.stdout.count(": cached") == len(done)
    assert resumed.stdout.count(": running") == 4 - len(done)
    ours, ref = results(tiny), results(reference)
    for table in ("stages", "pgr"):
        assert [r.get("test_acc", r.get("w2s_acc")) for r in ours[table]] == \
               [r.get("test_acc", r.get("w2s_acc")) for r in ref[table]]
    assert ours["pgr"] == ref["pgr"]


def test_trainer_never_reads_ground_truth_from_weak_labels(tiny):
    """Flip the analysis column of the teacher's weak labels: the students must not change (Q25)."""
    w2s("run", tiny, "--no-tracking")
    before = results(tiny)["pgr"]
    teacher = next(d for d in stage_dirs(tiny) if (d / "weak_labels.parquet").exists())
    table = pd.read_parquet(teacher / "weak_labels.parquet")
    table["analysis_gt_label"] = 1 - table["analysis_gt_label"]
    table.to_parquet(teacher / "weak_labels.parquet", index=False)
    from harness.manifest import load
    from harness.plan import build_plan

    students = [s.key[:16] for s in build_plan(load(tiny)) if s.kind == "transfer"]
    rerun = w2s("run", tiny, "--no-tracking", "--force", *[a for k in students for a in ("--only", k)])
    assert rerun.stdout.count(": running") == 2
    assert (pd.read_parquet(teacher / "weak_labels.parquet")["analysis_gt_label"] == table["analysis_gt_label"]).all()
    assert [r["w2s_acc"] for r in results(tiny)["pgr"]] == [r["w2s_acc"] for r in before]


def test_operational_settings_do_not_change_cache_keys(tiny):
    from harness.manifest import load
    from harness.plan import build_plan

    keys = lambda *o: [s.key for s in build_plan(load(tiny, list(o)))]
    base = keys()
    assert keys("train.micro_batch=4", "output.log_every=1", "models.0.eval_batch=3") == base
    assert keys("models.1.lr=2e-3") != base
    changed = keys("models.0.lr=2e-3")
    assert changed != base and changed[1] == base[1], "the strong ceiling does not depend on the weak model"


def test_only_runs_one_stage(tiny):
    from harness.manifest import load
    from harness.plan import build_plan

    first = build_plan(load(tiny))[0]
    out = w2s("run", tiny, "--no-tracking", "--only", first.key[:10])
    assert out.stdout.count(": running") == 1
    bad = w2s("run", tiny, "--no-tracking", "--only", "zzzz", check=False)
    assert bad.returncode != 0
