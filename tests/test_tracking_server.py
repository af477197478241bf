"""Against a real `mlflow server` subprocess: a SIGKILLed `w2s run` resumes without duplicate runs, a second
machine (fresh output dir) restores every stage from the server instead of training, and a server that dies
mid-run costs nothing: training goes on, and the next run with the server back syncs the missing runs."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pandas as pd
import pytest
from helpers_mlflow import FAST, W2S, MlflowServer, children, clean_env, client, make_tiny, parents, w2s

from harness.manifest import load
from harness.mlflow_tracking import MlflowTracker
from harness.plan import build_plan
from harness.store import StageStore

OVERRIDES = [FAST[i + 1] for i in range(0, len(FAST), 2)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("server")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def machine_a(server, tmp_path_factory):
    """`w2s run` SIGKILLed once the first stage is done, then resumed, then rerun (all cached)."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("machine_a")
    path = make_tiny(root)
    stages = root / "runs" / "stages"
    proc = subprocess.Popen([*W2S, "run", str(path), "--tracking-uri", server.uri, *FAST], env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list(stages.glob("*/done.json")):
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)                  # a real kill: no cleanup, runs stay RUNNING
    proc.wait()
    killed_done = len(list(stages.glob("*/done.json")))
    resumed = w2s(["run", path, "--tracking-uri", server.uri, *FAST], mp)
    rerun = w2s(["run", path, "--tracking-uri", server.uri, *FAST], mp)
    m = load(path, OVERRIDES)
    yield {"path": path, "root": root, "m": m, "plan": build_plan(m), "killed_done": killed_done,
           "resumed": resumed, "rerun": rerun}
    mp.undo()


def test_killed_run_resumes_without_duplicates(server, machine_a):
    assert 1 <= machine_a["killed_done"] < 4
    assert machine_a["resumed"].exit_code == 0, machine_a["resumed"].output
    out = machine_a["resumed"].output
    assert out.count("cached") == machine_a["killed_done"] and "running" in out
    assert machine_a["rerun"].exit_code == 0 and machine_a["rerun"].output.count("cached") == 4
    c = client(server.uri)
    exp = c.get_experiment_by_name(machine_a["m"].name)
    kids = children(c, exp.experiment_id)
    keys = [r.data.tags["w2s.stage_key"] for r in kids]
    assert sorted(keys) == sorted(s.key for s in machine_a["plan"]), "one run per stage, none duplicated"
    assert all(r.info.status == "FINISHED" and r.data.tags.get("w2s.complete") == "true" for r in kids)
    transfer = next(r for r in kids if r.data.tags["w2s.stage_kind"] == "transfer")
    assert "pgr" in transfer.data.metrics
    # the SIGKILLed run's parent, left RUNNING by the kill, was marked KILLED by the resumed run (issue #16)
    ps = parents(c, exp.experiment_id)
    assert sorted(p.info.status for p in ps) == ["FINISHED", "FINISHED", "KILLED"]
    (dead,) = [p for p in ps if p.info.status == "KILLED"]
    resumed = min((p for p in ps if p.info.status == "FINISHED"), key=lambda p: p.info.start_time)
    assert dead.data.tags["w2s.killed_noticed_by"] == resumed.info.run_id
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    arts = {a.path for a in c.list_artifacts(transfer.info.run_id, "stage")}
    assert "stage/metrics.json" in arts


def test_second_machine_restores_from_server(server, machine_a, tmp_path, monkeypatch):
    out_b = tmp_path / "machine_b"
    res = w2s(["run", machine_a["path"], "--tracking-uri", server.uri, *FAST, "-o", f"output.dir={out_b}"],
              monkeypatch)
    assert res.exit_code == 0, res.output
    assert res.output.count("fetched from the tracking server") == 4
    assert "running" not in res.output                      # nothing trained
    a, b = StageStore(machine_a["root"] / "runs"), StageStore(out_b)
    for s in machine_a["plan"]:
        assert b.is_done(s.key)
        assert (b.dir(s.key) / "log.jsonl").read_bytes() == (a.dir(s.key) / "log.jsonl").read_bytes()
        assert b.metrics(s.key)["test_acc"] == a.metrics(s.key)["test_acc"]
        pd.testing.assert_frame_equal(b.read_table(s.key, "predictions_test"), a.read_table(s.key, "predictions_test"))
    teacher = next(s for s in machine_a["plan"] if s.kind == "gt" and s.half == "train1")
    pd.testing.assert_frame_equal(b.read_table(teacher.key, "weak_labels"), a.read_table(teacher.key, "weak_labels"))
    # and the results are the same numbers
    ra = pd.read_csv(machine_a["root"] / "runs" / "tiny" / "pgr.csv")
    rb = pd.read_csv(out_b / "tiny" / "pgr.csv")
    pd.testing.assert_frame_equal(ra, rb)


def test_server_dies_mid_run_then_syncs(server, machine_a, tmp_path, capsys):
    """Last in this module: it stops the shared server and restarts it on the same port and store."""
    m = load(machine_a["path"], OVERRIDES + [f"name=offline_{os.getpid()}"])
    plan = build_plan(m)
    stage = next(s for s in plan if s.kind == "gt" and s.half == "train1")
    local = StageStore(machine_a["root"] / "runs")
    tracker = MlflowTracker(m, server.uri)
    tracker.start(m, plan, machine_a["path"])
    server.stop()                                           # gone before the stage ends
    started = time.time()
    with tracker.stage(stage) as sink:
        if sink:
            sink({"step": 1, "loss": 0.7, "learning_rate": 1e-3, "train_accuracy": 0.5, "epoch": 0.1})
        tracker.stage_finished(stage, local.metrics(stage.key), local.dir(stage.key))
    tracker.finish({"pgr": pd.DataFrame(), "stages": pd.DataFrame(), "summary": pd.DataFrame()}, tmp_path)
    assert time.time() - started < 30, "a dead server must not stall training"
    assert tracker.offline
    err = capsys.readouterr().err
    assert err.count("continuing without tracking") == 1
    server.start()                                          # back: a later run syncs the finished stage
    again = MlflowTracker(m, server.uri)
    again.start(m, plan, machine_a["path"])
    again.stage_cached(stage, local.metrics(stage.key), local.dir(stage.key))
    assert not again.offline
    c = client(server.uri)
    exp = c.get_experiment_by_name(m.name)
    runs = [r for r in children(c, exp.experiment_id) if r.data.tags["w2s.stage_key"] == stage.key]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].data.tags["w2s.complete"] == "true"
    assert {a.path for a in c.list_artifacts(runs[0].info.run_id, "weak_labels")} == {"weak_labels/weak_labels.parquet"}
