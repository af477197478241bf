"""Stage claims (harness.claims): exclusive, named, dropped by the kernel when the holder dies; and two
real `w2s run` processes on one output dir that split the sweep and train every stage exactly once."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from harness.claims import Claims
from harness.store import StageStore

from conftest import ROOT, W2S
from helpers_mlflow import FAST, stage_runs

KEY = "ab" * 32


def test_a_claim_is_exclusive_names_its_holder_and_is_released(tmp_path):
    claims = Claims(tmp_path)
    first = claims.take(KEY, "gt tiny s0")
    assert first is not None
    assert claims.take(KEY) is None, "a second claim on a held stage (even in the same process)"
    h = claims.holder(KEY)
    assert h["pid"] == os.getpid() and h["what"] == "gt tiny s0" and h["key"] == KEY and h["host"]
    assert claims.take("cd" * 32) is not None, "claims on other stages are independent"
    first.release()
    first.release()           # idempotent
    assert claims.holder(KEY) is None
    again = claims.take(KEY)
    assert again is not None and claims.holder(KEY)["pid"] == os.getpid()
    again.release()
    assert claims.path(KEY).exists(), "lock files stay (unlinking one races with a waiter)"


HOLD = """
import sys, time
from harness.claims import Claims
c = Claims(sys.argv[1]).take(sys.argv[2], "holder")
assert c is not None
print("held", flush=True)
time.sleep(600)
"""


def test_a_claim_survives_its_sigkilled_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), KEY], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        claims = Claims(tmp_path)
        assert claims.take(KEY) is None
        assert claims.holder(KEY)["pid"] == holder.pid
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        got = claims.take(KEY)      # at once: no timeout, no pid check, nothing to break
        assert got is not None and claims.holder(KEY)["pid"] == os.getpid()
        got.release()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_blocking_wait_returns_when_the_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "results-x"], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.time()
        subprocess.Popen(["sh", "-c", f"sleep 1; kill -9 {holder.pid}"])
        with Claims(tmp_path).wait("results-x"):
            assert time.time() - started >= 0.9
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


def _running(out: str) -> list[str]:
    return re.findall(r"\] (.+?): running \(", out)


@pytest.mark.ray      # the scale-out tier (minutes); no Ray needed here, the claims are the executor-independent part
def test_two_concurrent_runs_train_every_stage_exactly_once(tiny, tmp_path):
    """Two `w2s run` (local executor, embedded MLflow store) started together on one output dir."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [subprocess.Popen([*W2S, "run", str(tiny), *FAST], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=1500) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, f"{out}\n{err}"
    ran = [s for out, _ in outs for s in _running(out)]
    from harness.manifest import load
    from harness.plan import build_plan

    m = load(tiny, FAST[1::2])
    plan = build_plan(m)
    assert sorted(ran) == sorted(s.slug for s in plan), f"each stage trained exactly once: {ran}"
    assert all(_running(out) for out, _ in outs), "both processes trained something (the work was split)"
    assert any("held by pid" in out for out, _ in outs), "one process waited on the other's claim"
    store = StageStore(m.output.dir)
    assert all(store.is_done(s.key) and store.problem(s.key) is None for s in plan)
    res = json.loads((tmp_path / "runs" / "tiny" / "results.json").read_text())
    assert len(res["stages"]) == 4 and len(res["pgr"]) == 2
    for name in ("stages", "pgr"):
        pd.read_csv(tmp_path / "runs" / "tiny" / f"{name}.csv")     # whole files, not interleaved halves
    assert stage_runs(m) == {s.key: ["FINISHED"] for s in plan}, "one MLflow run per stage, FINISHED"

