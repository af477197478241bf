"""`w2s run --executor ray` against a real Ray head on 127.0.0.1 (2 CPUs), started with `ray start --head`
in its own process group and stopped in teardown, whatever happened.

The tiny sweep through Ray gives the local executor's PGR table; a Ray worker SIGKILLed mid-stage is
retried and the sweep completes with one FINISHED MLflow run per stage."""
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from conftest import ROOT, W2S
from helpers_mlflow import FAST, free_port, stage_runs

pytestmark = pytest.mark.ray
RAY = str(Path(sys.executable).parent / "ray")       # the venv's CLI, whatever PATH says
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}   # ENVIRONMENT.md §10: every Ray socket on 127.0.0.1
# The head and its drivers share a token of this session: never ~/.ray/auth_token (docs/footguns.md, Ray)
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
# The head's workers at the driver's priority: at Ray's default nice 15 any busy process on a loaded CI
# machine starves them (a one-minute DeepSpeed stage timed out after 15 minutes); docs/footguns.md, Ray
NICE = {"RAY_worker_niceness": "0"}


def _env(scratch=None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "RAY_ADDRESS", "RAY_AUTH"))}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="200", **LOOPBACK, **AUTH, **NICE)
    if scratch:
        env["W2S_RAY_SCRATCH"] = str(scratch)
    return env


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    # a short temp dir: Ray's unix sockets live under it and must stay under ~100 bytes
    temp = Path(tempfile.mkdtemp(prefix="w2sray", dir="/tmp"))
    scratch = tmp_path_factory.mktemp("scratch")
    port = free_port()
    log = open(temp / "head.log", "wb")
    proc = subprocess.Popen([RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={temp}"], env=_env(scratch), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 300     # `ray start` prints this once GCS and raylet are up (`ray status` lags)
        while "Ray runtime started" not in (temp / "head.log").read_text(errors="replace"):
            assert proc.poll() is None and time.time() < deadline, (temp / "head.log").read_text()[-3000:]
            time.sleep(0.5)
        yield {"address": address, "scratch": Path(scratch), "proc": proc}
    finally:
        stop_head(proc, temp)


def stop_head(proc, temp: Path) -> None:
    """SIGTERM the head's process group, then SIGKILL it, then any process still naming our temp dir."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    for p in psutil.process_iter(["cmdline"]):
        if any(str(temp) in a for a in p.info["cmdline"] or []):
            p.kill()
    shutil.rmtree(temp, ignore_errors=True)


def manifest(tiny_assets: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tiny.yaml"
    path.write_text((tiny_assets / "tiny.yaml").read_text().replace(f"{tiny_assets}/runs", str(out / "runs")))
    return path


def results(path: Path) -> dict:
    return json.loads((path.parent / "runs" / "tiny" / "results.json").read_text())


def plan_of(path: Path):
    from harness.manifest import load
    from harness.plan import build_plan

    m = load(path, FAST[1::2])
    return m, build_plan(m)



def attempt_log(scratch: Path) -> list[dict]:
    """Every stage attempt the head's workers started (harness.executors.ray_task), oldest first."""
    f = scratch / "attempts.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


def attempts(scratch: Path, keys, since: int) -> dict:
    """Attempts per stage key after the first `since` lines (tests share the head and its stage keys)."""
    lines = attempt_log(scratch)[since:]
    return {k: sum(a["key"] == k for a in lines) for k in keys}


@pytest.fixture(scope="module")
def local_ref(tiny_assets, tmp_path_factory):
    path = manifest(tiny_assets, tmp_path_factory.mktemp("local"))
    out = subprocess.run([*W2S, "run", str(path), *FAST, "--no-tracking"], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=1200)
    assert out.returncode == 0, out.stdout + out.stderr
    return results(path)


def same_numbers(ours: dict, ref: dict) -> None:
    assert ours["pgr"] == ref["pgr"]
    assert [(r["model"], r["test_acc"]) for r in ours["stages"]] == [(r["model"], r["test_acc"]) for r in ref["stages"]]


def test_the_sweep_on_ray_gives_the_local_pgr_table(head, tiny_assets, tmp_path, local_ref):
    path = manifest(tiny_assets, tmp_path)
    since = len(attempt_log(head["scratch"]))
    out = subprocess.run([*W2S, "run", str(path), *FAST, "--executor", "ray", "--address", head["address"]], cwd=ROOT,
                         env=_env(), capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout + out.stderr
    same_numbers(results(path), local_ref)
    m, plan = plan_of(path)
    lines = [x for x in out.stdout.splitlines() if re.match(r"\[\d/4\]", x)]
    assert f"the Ray cluster at {head['address']}" in out.stdout and "dashboard: none" in out.stdout
    assert sum(": running (" in x for x in lines) == 4 and sum(": finished in" in x for x in lines) == 4
    # independent stages run at once: both ground-truth stages start before anything finishes, and a
    # transfer starts only after its teacher (the weak model's gt) has finished
    assert all(": running (" in x and " gt " in f" {x}" for x in lines[:2]), lines
    teacher = next(s for s in plan if s.kind == "gt" and "weak" in s.roles)
    done_at = next(i for i, x in enumerate(lines) if teacher.slug in x and "finished" in x)
    assert all(i > done_at for i, x in enumerate(lines) if "transfer" in x and "running" in x)
    assert stage_runs(m) == {s.key: ["FINISHED"] for s in plan}
    assert attempts(head["scratch"], [s.key for s in plan], since) == {s.key: 1 for s in plan}


def test_a_worker_sigkilled_mid_stage_is_retried(head, tiny_assets, tmp_path, local_ref):
    path = manifest(tiny_assets, tmp_path)
    m, plan = plan_of(path)
    keys = [s.key for s in plan]
    since = len(attempt_log(head["scratch"]))
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen([*W2S, "run", str(path), *FAST, "--executor", "ray", "--address", head["address"]],
                              cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, victim = time.time() + 300, None
        while victim is None and time.time() < deadline and driver.poll() is None:
            mine = [a for a in attempt_log(head["scratch"])[since:] if a["key"] in keys]
            if mine:
                victim = mine[0]
            time.sleep(0.2)
        assert victim, (tmp_path / "driver.log").read_text()
        time.sleep(1)                                       # mid-stage: importing, loading, training
        assert not (m.output.dir and (Path(m.output.dir) / "stages" / victim["key"][:16] / "done.json").exists())
        os.kill(victim["pid"], signal.SIGKILL)
        assert driver.wait(timeout=1200) == 0, (tmp_path / "driver.log").read_text()
    finally:
        if driver.poll() is None:
            driver.kill()
    tried = attempts(head["scratch"], keys, since)
    assert tried[victim["key"]] == 2, tried                   # retried once
    assert all(1 <= n <= 2 for n in tried.values()), tried   # each stage trained once more at most
    assert stage_runs(m) == {k: ["FINISHED"] for k in keys}   # no duplicate FINISHED runs
    same_numbers(results(path), local_ref)


def test_ray_refusals_exit_before_compute(head, tiny_assets, tmp_path):
    path = manifest(tiny_assets, tmp_path)
    bad = subprocess.run([*W2S, "run", str(path), "--address", head["address"]], cwd=ROOT, env=_env(),
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--address is for --executor ray" in bad.stderr
    big = subprocess.run([*W2S, "run", str(path), "--no-tracking", "--executor", "ray", "--address", head["address"],
                          "-o", "resources.launcher=deepspeed", "-o", "resources.gpus=4", "-o", "train.micro_batch=4"],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert big.returncode == 3 and "needs 4 CPU(s)" in big.stderr and "Traceback" not in big.stderr, big.stderr
    assert not (tmp_path / "runs" / "stages").exists()
    dead = subprocess.run([*W2S, "run", str(path), "--no-tracking", "--executor", "ray", "--address",
                           f"127.0.0.1:{free_port()}"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert dead.returncode == 3 and "cannot reach the Ray cluster" in dead.stderr, dead.stderr


def _raylets() -> set[int]:
    return {p.pid for p in psutil.process_iter(["name", "cmdline"])
            if "raylet" in (p.info["name"] or "") and not any("w2sray" in a for a in p.info["cmdline"] or [])}


def test_without_address_a_private_local_instance_runs_the_stage_and_stops(tiny_assets, tmp_path):
    path = manifest(tiny_assets, tmp_path)
    m, plan = plan_of(path)
    weak = next(s for s in plan if s.kind == "gt" and "weak" in s.roles)
    env = {k: v for k, v in _env(tmp_path / "scratch").items() if k not in {**LOOPBACK, **AUTH, **NICE}}  # w2s sets them
    before, token_before = _raylets(), (Path.home() / ".ray" / "auth_token").exists()
    out = subprocess.run([*W2S, "run", str(path), *FAST, "--no-tracking", "--executor", "ray", "--only", weak.key[:12]],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ray: a local Ray instance: 1 node(s)" in out.stdout and "dashboard: " in out.stdout
    assert f"{weak.slug}: finished in" in out.stdout and out.stdout.count(": running (") == 1
    from harness.store import StageStore

    assert StageStore(m.output.dir).is_done(weak.key)
    assert [a["nice"] for a in attempt_log(tmp_path / "scratch")] == [0], "stages at the driver's priority"
    deadline = time.time() + 30
    while _raylets() - before and time.time() < deadline:
        time.sleep(1)
    assert not _raylets() - before, "the private instance stops with `w2s run`"
    assert not (Path.home() / ".ray" / "auth_token").exists() or token_before, "no token file left behind"


def hang_report(head: dict) -> str:
    """What a stuck launched stage was doing: the head's resources and pending tasks (`ray status`), each
    rank's Python stacks (harness.worker dumps them into its worker.log on SIGUSR1), the tail of every
    worker.log under the head's scratch, and the live processes."""
    try:
        status = subprocess.run([RAY, "status", "--address", head["address"]], env=_env(), capture_output=True,
                                text=True, timeout=60)
        status = status.stdout + status.stderr
    except subprocess.TimeoutExpired:
        status = "`ray status` gave no answer in 60 s"
    scratch = head["scratch"]
    ranks = [p for p in psutil.process_iter(["cmdline"]) if "harness.worker" in " ".join(p.info["cmdline"] or [])]
    for p in ranks:
        try:
            p.send_signal(signal.SIGUSR1)
        except psutil.NoSuchProcess:
            pass
    time.sleep(3)
    out = ["--- ray status", status, f"{len(ranks)} rank process(es) alive"]
    for log in sorted(scratch.glob("tasks/*/stages/_launch/*/worker.log")):
        out.append(f"--- {log} (last 80 lines)\n" + "".join(log.read_text(errors="replace").splitlines(True)[-80:]))
    procs = list(psutil.process_iter(["cmdline", "status", "nice"]))
    for p in procs:
        p.cpu_percent()
    time.sleep(1)
    busy = []
    for p in procs:
        try:
            busy.append((p.cpu_percent(), p))
        except psutil.NoSuchProcess:
            pass
    busy.sort(key=lambda x: -x[0])      # what else took the CPUs (the head's workers run niced otherwise)
    lines = [f"{cpu:5.1f}% nice {p.info['nice']} {p.pid} {p.info['status']} {' '.join(p.info['cmdline'] or [])[:150]}"
             for cpu, p in busy if cpu > 5 or any(k in " ".join(p.info["cmdline"] or []) for k in ("harness", "ray::"))]
    return "\n".join(out + ["--- processes (busy, or ours)"] + lines)


def test_a_deepspeed_stage_launches_its_ranks_inside_the_task(head, tiny_assets, tmp_path, local_ref):
    """ZeRO-2 on 2 gloo ranks inside one Ray task that holds both of the head's CPUs (about a minute; a
    stuck run fails after 10 minutes with the ranks' stacks)."""
    path = manifest(tiny_assets, tmp_path)
    m, plan = plan_of(path)
    weak = next(s for s in plan if s.kind == "gt" and "weak" in s.roles)
    ds = ["-o", "resources.launcher=deepspeed", "-o", "resources.gpus=2", "-o", "resources.zero_stage=2"]
    try:
        out = subprocess.run([*W2S, "run", str(path), *FAST, *ds, "--no-tracking", "--executor", "ray", "--address",
                              head["address"], "--only", weak.key[:12]], cwd=ROOT,
                             env={**_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"no result in 600 s; driver said: {e.stdout!r} {e.stderr!r}\n{hang_report(head)}")
    assert out.returncode == 0, out.stdout + out.stderr
    metrics = json.loads((Path(m.output.dir) / "stages" / weak.key[:16] / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["resources"]["launcher"] == "deepspeed"
    assert metrics["resources"]["zero_stage"] == 2
    ref = next(r for r in local_ref["stages"] if r["kind"] == "gt" and r["model"] == weak.model)
    assert abs(metrics["test_acc"] - ref["test_acc"]) <= 1 / 64 + 1e-9    # float noise may flip one test row


def test_a_killed_driver_resumes_from_the_store(head, tiny_assets, tmp_path, local_ref):
    """SIGKILL the driver once a stage is done: the same command finishes the sweep from the store, and
    every stage ends with one FINISHED MLflow run (the in-flight ones are reattached, not duplicated)."""
    path = manifest(tiny_assets, tmp_path)
    m, plan = plan_of(path)
    cmd = [*W2S, "run", str(path), *FAST, "--executor", "ray", "--address", head["address"]]
    stages = Path(m.output.dir) / "stages"
    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 600
        while not list(stages.glob("*/done.json")) and time.time() < deadline and driver.poll() is None:
            time.sleep(0.1)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    done = len(list(stages.glob("*/done.json")))
    assert 1 <= done < 4, (tmp_path / "first.log").read_text()
    again = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count(": cached (") == done and again.stdout.count(": running (") == 4 - done
    assert stage_runs(m) == {s.key: ["FINISHED"] for s in plan}
    same_numbers(results(path), local_ref)
