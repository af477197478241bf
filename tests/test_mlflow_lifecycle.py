"""Lifecycle leftovers with the embedded store: a `w2s run` SIGKILLed mid-sweep leaves its parent RUNNING,
and the next run marks it (and its RUNNING stage runs) KILLED; an output dir that is moved or copied keeps
its runs, and new artifacts go under the NEW location, never back into the old one."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers_mlflow import FAST, W2S, cached_tiny, children, clean_env, client, make_tiny, parents, run_args, \
    seed_output, w2s


def store(out: Path):
    return client("sqlite:///" + str(out.resolve() / "mlflow" / "mlflow.db"))


def test_sigkilled_run_parent_is_marked_killed_by_next_run(tmp_path, monkeypatch):
    path = make_tiny(tmp_path)
    out = tmp_path / "runs"
    proc = subprocess.Popen([*W2S, "run", str(path), *FAST], env=clean_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while not list((out / "stages").glob("*/done.json")):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-3000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)          # kill -9 mid-sweep: no handler runs, nothing is closed
    proc.wait()
    c = store(out)
    exp = c.get_experiment_by_name("tiny")
    (dead,) = parents(c, exp.experiment_id)
    assert dead.info.status == "RUNNING"          # what the kill leaves behind
    assert dead.data.tags["w2s.pid"] == str(proc.pid)
    res = w2s(["run", path, *FAST], monkeypatch)
    assert res.exit_code == 0, res.output
    ps = {p.info.run_id: p for p in parents(c, exp.experiment_id)}
    (new,) = [p for rid, p in ps.items() if rid != dead.info.run_id]
    assert new.info.status == "FINISHED"
    old = ps[dead.info.run_id]
    assert old.info.status == "KILLED" and old.info.end_time
    assert old.data.tags["w2s.killed_noticed_by"] == new.info.run_id
    assert not [r for r in c.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")]
    kids = children(c, exp.experiment_id)
    assert len(kids) == 4 and all(k.info.status == "FINISHED" for k in kids)   # the killed stage resumed


def test_live_parent_is_left_running(tmp_path):
    """Only dead processes' parents are marked: one started by a live process (this one) stays RUNNING."""
    from harness.manifest import load
    from harness.plan import build_plan
    from harness.mlflow_tracking import MlflowTracker
    from harness.mlflow_experiment import mark_killed

    path = make_tiny(tmp_path)
    m = load(path, [FAST[i + 1] for i in range(0, len(FAST), 2)])
    t = MlflowTracker(m)
    t.start(m, build_plan(m), path)
    assert mark_killed(t.client, t.exp_id) == []
    assert t.client.get_run(t.parent_id).info.status == "RUNNING"


def artifact_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "mlflow" / "artifacts").rglob("*") if p.is_file()}


@pytest.mark.parametrize("how", ["move", "copy"])
def test_moved_or_copied_output_dir_writes_under_new_location(tmp_path_factory, tmp_path, monkeypatch, how):
    tiny = cached_tiny(tmp_path_factory)
    a = seed_output(tiny, tmp_path / "a")
    first = w2s(run_args(tiny, a), monkeypatch)
    assert first.exit_code == 0, first.output
    b = tmp_path / "b"
    (shutil.move if how == "move" else shutil.copytree)(a, b)
    before_a = artifact_files(a) if a.exists() else None
    res = w2s(run_args(tiny, b), monkeypatch)
    assert res.exit_code == 0, res.output
    if how == "move":
        assert not a.exists(), "the run recreated the old output dir"
    else:
        assert artifact_files(a) == before_a, "the copy wrote into the original's artifacts"
    c = store(b)
    exp = c.get_experiment_by_name("tiny")
    root = (b.resolve() / "mlflow" / "artifacts").as_uri()
    assert exp.artifact_location.startswith(root)
    ps = sorted(parents(c, exp.experiment_id), key=lambda p: p.info.start_time)
    assert len(ps) == 2
    for r in ps + children(c, exp.experiment_id):  # old runs too: their files moved with the dir
        assert r.info.artifact_uri.startswith(root), r.info.artifact_uri
    new = ps[-1]
    assert "report/report.md" in {x.path for x in c.list_artifacts(new.info.run_id, "report")}
    from urllib.parse import unquote, urlparse

    assert (Path(unquote(urlparse(new.info.artifact_uri).path)) / "report" / "report.md").is_file()
    old = ps[0]                                    # the first run's artifacts, read through the new location
    assert "results/pgr.csv" in {x.path for x in c.list_artifacts(old.info.run_id, "results")}
