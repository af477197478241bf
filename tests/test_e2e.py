"""End to end on tiny random models through the real from_pretrained path: a 2-model x 2-loss sweep,
a rerun that is all cache hits, and a SIGKILLed run that resumes to the same results."""
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.store import StageStore

from conftest import ROOT, W2S, w2s


def results(manifest: Path) -> dict:
    return json.loads((manifest.parent / "runs" / "tiny" / "results.json").read_text())


def stage_dirs(manifest: Path) -> list[Path]:
    return sorted((manifest.parent / "runs" / "stages").glob("*"))


def plan_keys(manifest: Path, *overrides, kind=None) -> list[str]:
    from harness.manifest import load
    from harness.plan import build_plan

    return [s.key for s in build_plan(load(manifest, list(overrides))) if kind in (None, s.kind)]


def test_sweep_outputs(tiny_run):
    res = results(tiny_run)
    assert {(r["weak"], r["strong"], r["loss"]) for r in res["pgr"]} == {
        ("tiny-gpt2", "tiny-bert", "xent"), ("tiny-gpt2", "tiny-bert", "logconf")}
    assert len(res["stages"]) == 4 and all(0 <= r["test_acc"] <= 1 for r in res["stages"])
    assert {r["loss"] for r in res["summary"]} == {"xent", "logconf"}
    for d in stage_dirs(tiny_run):
        assert (d / "done.json").exists() and (d / "predictions_test.parquet").exists()
        assert (d / "log.jsonl").read_text().count('"train_accuracy"') >= 2
        rows = [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines()]
        last = [r for r in rows if "epoch" in r][-1]      # the manifest's 2 epochs, not HF's concatenated 1
        assert last["epoch"] == pytest.approx(2 * last["progress"]) and last["hf_epoch"] <= 1 < last["epoch"]
    weak = [d for d in stage_dirs(tiny_run) if (d / "weak_labels.parquet").exists()]
    assert len(weak) == 1
    table = pd.read_parquet(weak[0] / "weak_labels.parquet")
    assert list(table.columns) == ["id", "text_hash", "txt", "soft_label", "hard_label", "analysis_gt_label"]
    assert len(table) == 200 and all(abs(sum(p) - 1) < 1e-5 for p in table["soft_label"])
    metrics = json.loads((weak[0] / "metrics.json").read_text())
    assert metrics["weak_label_acc"] == (table["hard_label"] == table["analysis_gt_label"]).mean()


def test_rerun_is_all_cache_hits(tiny_run):
    before = results(tiny_run)
    mtimes = {d: (d / "done.json").stat().st_mtime for d in stage_dirs(tiny_run)}
    second = w2s("run", tiny_run, "--no-tracking")
    assert ": running" not in second.stdout
    assert second.stdout.count(": cached") == 4
    assert {d: (d / "done.json").stat().st_mtime for d in stage_dirs(tiny_run)} == mtimes
    assert results(tiny_run) == before


def test_killed_run_resumes_to_the_same_results(tiny_run, tiny, tmp_path):
    proc = subprocess.Popen([*W2S, "run", str(tiny), "--no-tracking"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "runs" / "stages").glob("*/done.json")):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    done = list((tmp_path / "runs" / "stages").glob("*/done.json"))
    assert 1 <= len(done) < 4, "the kill should land mid-sweep"

    resumed = w2s("run", tiny, "--no-tracking")
    assert resumed.stdout.count(": cached") == len(done)
    assert resumed.stdout.count(": running") == 4 - len(done)
    ours, ref = results(tiny), results(tiny_run)
    assert ours["pgr"] == ref["pgr"]
    assert [r["test_acc"] for r in ours["stages"]] == [r["test_acc"] for r in ref["stages"]]


def test_trainer_never_reads_ground_truth_from_weak_labels(tiny_run, tiny, tmp_path):
    """Flip the analysis column of the teacher's weak labels: the students must not change (Q25)."""
    shutil.copytree(tiny_run.parent / "runs", tmp_path / "runs")
    teacher = next(d for d in stage_dirs(tiny) if (d / "weak_labels.parquet").exists())
    table = pd.read_parquet(teacher / "weak_labels.parquet")
    table["analysis_gt_label"] = 1 - table["analysis_gt_label"]
    table.to_parquet(teacher / "weak_labels.parquet", index=False)
    # a deliberate edit, not corruption: seal the teacher again so the integrity check accepts its files
    store = StageStore(teacher.parent.parent)
    key = json.loads((teacher / "done.json").read_text())["key"]
    store.finish(key, store.metrics(key))
    students = [k[:16] for k in plan_keys(tiny, kind="transfer")]
    rerun = w2s("run", tiny, "--no-tracking", "--force", *[a for k in students for a in ("--only", k)])
    assert rerun.stdout.count(": running") == 2
    assert (pd.read_parquet(teacher / "weak_labels.parquet")["analysis_gt_label"] == table["analysis_gt_label"]).all()
    assert [r["w2s_acc"] for r in results(tiny)["pgr"]] == [r["w2s_acc"] for r in results(tiny_run)["pgr"]]


def test_operational_settings_do_not_change_cache_keys(tiny):
    base = plan_keys(tiny)
    assert plan_keys(tiny, "train.micro_batch=4", "output.log_every=1", "models.0.eval_batch=3") == base
    assert plan_keys(tiny, "models.1.lr=2e-3") != base
    changed = plan_keys(tiny, "models.0.lr=2e-3")
    assert changed != base and changed[1] == base[1], "the strong ceiling does not depend on the weak model"


def test_only_runs_one_stage_and_rejects_unknown_keys(tiny):
    out = w2s("run", tiny, "--no-tracking", "--only", plan_keys(tiny)[0][:10])
    assert out.stdout.count(": running") == 1
    bad = w2s("run", tiny, "--no-tracking", "--only", "zzzz", check=False)
    assert bad.returncode == 2 and "no stage key starts with it" in bad.stderr


def test_shards_partition_the_plan_and_keep_students_with_their_teacher(tiny):
    from harness.manifest import load
    from harness.plan import build_plan
    from harness.runner import in_shard

    plan = build_plan(load(tiny, ["seeds=[0,1,2,3]"]))
    owner = {s.key: [i for i in range(3) if in_shard(s, (i, 3))] for s in plan}
    assert all(len(v) == 1 for v in owner.values()), "every stage belongs to exactly one shard"
    for s in plan:
        if s.teacher:
            assert owner[s.key] == owner[s.teacher]
    assert len({o[0] for o in owner.values()}) > 1, "the work is actually spread"
    bad = w2s("run", tiny, "--no-tracking", "--shard", "3/3", check=False)
    assert bad.returncode == 2 and "--shard 3/3" in bad.stderr
