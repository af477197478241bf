"""MLflow tracking with the embedded store (sqlite + local artifacts under output.dir): a real tiny sweep,
then everything checked through the MLflow client. Plus the fail-fast path for an unreachable server."""
from __future__ import annotations

import json
import subprocess
import time

import pandas as pd
import pytest
from helpers_mlflow import FAST, W2S, children, clean_env, client, free_port, make_tiny, parents, w2s

from harness.manifest import load
from harness.mlflow_tracking import DIGEST_LEN, PARAM_MAX, clip, default_uri, flatten
from harness.plan import build_plan
from harness.store import StageStore, sha256_file


def test_flatten_and_clip():
    flat = flatten({"model": {"id": "gpt2", "lr": 1e-5}, "loss": {"name": "xent", "params": {}}, "seeds": [0, 1]})
    assert flat == {"model.id": "gpt2", "model.lr": "1e-05", "loss.name": "xent", "loss.params": "{}", "seeds": "[0, 1]"}
    long = clip("x" * 10_000)
    assert len(long) <= PARAM_MAX and "sha256:" in long


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One tiny sweep into the embedded store, then a second (all cached) `w2s run`."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("embedded")
    path = make_tiny(root)
    first = w2s(["run", path, *FAST], mp)
    assert first.exit_code == 0, first.output
    second = w2s(["run", path, *FAST], mp)
    assert second.exit_code == 0, second.output
    m = load(path, [FAST[i + 1] for i in range(0, len(FAST), 2)])
    yield {"m": m, "plan": build_plan(m), "first": first.output, "second": second.output,
           "c": client(default_uri(m)), "store": StageStore(m.output.dir)}
    mp.undo()


def test_embedded_store_location(sweep):
    m = sweep["m"]
    out = sweep["store"].root.parent
    assert (out / "mlflow" / "mlflow.db").exists()
    exp = sweep["c"].get_experiment_by_name(m.name)
    assert exp.artifact_location.startswith((out / "mlflow" / "artifacts").as_uri())


def test_runs_tags_params_metrics(sweep):
    m, plan, c = sweep["m"], sweep["plan"], sweep["c"]
    exp = c.get_experiment_by_name(m.name)
    ps = parents(c, exp.experiment_id)
    assert len(ps) == 2 and all(p.info.status == "FINISHED" for p in ps)      # one parent per `w2s run`
    kids = children(c, exp.experiment_id)
    by_key = {}
    for r in kids:
        by_key.setdefault(r.data.tags["w2s.stage_key"], []).append(r)
    assert set(by_key) == {s.key for s in plan}
    assert all(len(v) == 1 for v in by_key.values()), "a rerun must not duplicate stage runs"
    first_parent = min(ps, key=lambda p: p.info.start_time).info.run_id
    for s in plan:
        r = by_key[s.key][0]
        t = r.data.tags
        assert r.info.status == "FINISHED" and t["w2s.complete"] == "true"
        assert t["mlflow.parentRunId"] == first_parent
        assert t["w2s.stage_kind"] == s.kind and t["w2s.dataset"] == "sst2" and t["w2s.seed"] == str(s.seed)
        assert t["w2s.loss"] == s.loss["name"] and t["w2s.harness_version"] and "w2s.git_commit" in t
        assert t["w2s.op.micro_batch"] == "8"                      # operational: a tag, never a param
        assert r.data.params == flatten(s.identity)
        assert "micro_batch" not in json.dumps(r.data.params)
        met = json.loads((sweep["store"].dir(s.key) / "metrics.json").read_text())
        assert r.data.metrics["test_acc"] == pytest.approx(met["test_acc"])
        assert "test_auroc" in r.data.metrics and "train_loss" in r.data.metrics
        assert len(c.get_metric_history(r.info.run_id, "learning_rate")) >= 1
        if s.kind == "transfer":
            assert t["w2s.weak"] == s.weak and t["w2s.strong"] == s.model
            for k in ("pgr", "ceiling_acc", "weak_acc", "agreement_test"):
                assert k in r.data.metrics, k
        elif s.half == "train1":
            assert "weak_label_acc" in r.data.metrics


def test_artifacts_and_weak_label_lineage(sweep, tmp_path):
    m, plan, c, store = sweep["m"], sweep["plan"], sweep["c"], sweep["store"]
    exp = c.get_experiment_by_name(m.name)
    runs = {r.data.tags["w2s.stage_key"]: r for r in children(c, exp.experiment_id)}
    teacher = next(s for s in plan if s.kind == "gt" and s.half == "train1")
    sha = sha256_file(store.dir(teacher.key) / "weak_labels.parquet")
    tr = runs[teacher.key]
    paths = {a.path for a in c.list_artifacts(tr.info.run_id, "weak_labels")}
    assert paths == {"weak_labels/weak_labels.parquet"}
    got = c.download_artifacts(tr.info.run_id, "weak_labels/weak_labels.parquet", str(tmp_path))
    pd.testing.assert_frame_equal(pd.read_parquet(got), store.read_table(teacher.key, "weak_labels"))
    stage_files = {a.path for a in c.list_artifacts(tr.info.run_id, "stage")}
    assert {"stage/stage.json", "stage/metrics.json", "stage/log.jsonl"} <= stage_files
    assert {a.path for a in c.list_artifacts(tr.info.run_id, "predictions")} == {"predictions/predictions_test.parquet"}
    (inp,) = tr.inputs.dataset_inputs
    assert inp.dataset.digest == sha[:DIGEST_LEN]                # full-content sha256, not MLflow's 10k-row MD5
    assert {t.value for t in inp.tags} >= {sha}
    for s in plan:
        if s.kind == "transfer":
            (si,) = runs[s.key].inputs.dataset_inputs               # the student trained on the teacher's labels
            assert (si.dataset.name, si.dataset.digest) == (inp.dataset.name, inp.dataset.digest)
            assert tr.info.run_id in json.loads(si.dataset.source)["uri"]


def test_parent_metrics_and_report(sweep):
    m, c = sweep["m"], sweep["c"]
    exp = c.get_experiment_by_name(m.name)
    p = max(parents(c, exp.experiment_id), key=lambda p: p.info.start_time)
    assert p.data.tags["w2s.role"] == "parent"
    assert "pgr.tiny-gpt2.tiny-bert.xent.s0" in p.data.metrics
    # the tiny models are at chance: no pair is resolved, so no summary PGR is logged, only the counts
    assert {"pairs_resolved.xent", "pairs_left_out.logconf"} <= set(p.data.metrics)
    assert p.data.metrics["pairs_resolved.xent"] == 0 and "median_pgr.xent" not in p.data.metrics
    top = {a.path for a in c.list_artifacts(p.info.run_id)}
    assert {"manifest", "results", "report"} <= top
    assert "report/report.md" in {a.path for a in c.list_artifacts(p.info.run_id, "report")}
    assert "results/pgr.csv" in {a.path for a in c.list_artifacts(p.info.run_id, "results")}


def test_rerun_is_all_cached(sweep):
    assert "running" not in sweep["second"] and sweep["second"].count("cached") == 4


def test_unreachable_server_fails_fast(tmp_path):
    path = make_tiny(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"                      # nothing listens there
    started = time.time()
    p = subprocess.run([*W2S, "run", str(path), "--tracking-uri", uri], capture_output=True, text=True,
                       env=clean_env(), timeout=60)
    took = time.time() - started
    assert p.returncode != 0
    assert took < 10, f"took {took:.1f}s"
    assert uri in p.stderr and "--no-tracking" in p.stderr and "Nothing was run" in p.stderr
    assert not (tmp_path / "runs" / "stages").exists()


def test_tracker_keeps_its_uri_to_itself(tiny, monkeypatch):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; a tracker must not leave it behind, or the
    next run in the same process would record into this run's store."""
    import os

    from harness.trackers import make_tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    m = load(tiny)
    tracker = make_tracker(m)
    tracker.start(m, build_plan(m), tiny)
    tracker.finish({}, tiny.parent, ok=True)
    assert "MLFLOW_TRACKING_URI" not in os.environ
