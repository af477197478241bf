"""The embedded MLflow store (<output.dir>/mlflow/mlflow.db, harness.mlflow_store) against real crashes:
a `w2s run` SIGKILLed while the store is being created leaves nothing the next run trips on; a store broken
by plain MLflow killed mid-creation is detected (exit 3, the hint names `w2s store repair`), and
`w2s store check|repair` report and fix it; two first runs racing on one output dir both succeed.
The stages are cached (helpers_mlflow.cached_tiny), so each `w2s run` here only tracks."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_mlflow import W2S, cached_tiny, children, clean_env, client, parents, run_args, seed_output, w2s

from harness.mlflow_store import DB, TMP_PREFIX, diagnose


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return cached_tiny(tmp_path_factory)


def sh(args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*W2S, *map(str, args)], capture_output=True, text=True, env=clean_env(), timeout=timeout)


def db_of(out: Path) -> Path:
    return out.resolve() / "mlflow" / DB


def assert_tracked(out: Path, name: str = "tiny", n_parents: int = 1) -> None:
    c = client("sqlite:///" + str(db_of(out)))
    exp = c.get_experiment_by_name(name)
    ps = parents(c, exp.experiment_id)
    assert len(ps) == n_parents and all(p.info.status == "FINISHED" for p in ps)
    kids = children(c, exp.experiment_id)
    assert len({k.data.tags["w2s.stage_key"] for k in kids}) == 4
    assert all(k.data.tags.get("w2s.complete") == "true" for k in kids)


def creating(d: Path) -> bool:
    """Is a store being created in `d` right now: our private temporary file, or a partial mlflow.db."""
    return any(d.glob(TMP_PREFIX + "*")) or ((d / DB).exists() and diagnose(d / DB) is not None)


# Creating the store takes ~1-3 s (MLflow's migrations on a private temporary file); the kill lands early
# and a little later in that window. Longer delays miss it on a quiet machine (the store is then complete).
@pytest.mark.parametrize("delay", [0.05, 0.4])
def test_sigkill_while_store_is_created_then_next_run_works(tiny, tmp_path, delay):
    out = seed_output(tiny, tmp_path / "out")
    d = out.resolve() / "mlflow"
    proc = subprocess.Popen([*W2S, *run_args(tiny, out)], env=clean_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while not (d.exists() and (any(d.glob(TMP_PREFIX + "*")) or (d / DB).exists())):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-3000:]
        time.sleep(0.01)
    time.sleep(delay)
    was_creating = creating(d)
    os.killpg(proc.pid, signal.SIGKILL)          # a real kill, mid-creation: no cleanup runs
    proc.wait()
    assert was_creating, "the kill came after the store was complete: aim earlier"
    check = sh(["store", "check", out])
    assert check.returncode == 0, check.stderr    # nothing, or a complete store: never a half-built one
    again = sh(run_args(tiny, out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Traceback" not in again.stderr
    assert diagnose(db_of(out)) is None
    assert not list(d.glob(TMP_PREFIX + "*"))     # the killed creator's leftover is gone
    assert_tracked(out)


def break_store(d: Path) -> Path:
    """What a killed first run left before this fix: plain MLflow creating mlflow.db in place, SIGKILLed
    halfway through its ~100 migrations (the schema revision and the tables disagree)."""
    d.mkdir(parents=True, exist_ok=True)
    db = d / DB
    code = "import sys; from mlflow import MlflowClient; MlflowClient('sqlite:///' + sys.argv[1]).search_experiments()"
    for delay in (1.5, 0.8, 2.5, 0.4):
        db.unlink(missing_ok=True)
        p = subprocess.Popen([sys.executable, "-c", code, str(db)], env=clean_env(), stderr=subprocess.DEVNULL)
        while not db.exists() and p.poll() is None:
            time.sleep(0.005)
        time.sleep(delay)
        p.kill()
        p.wait()
        if db.exists() and diagnose(db):
            return db
    pytest.fail("could not interrupt MLflow while it created its store")


def test_broken_store_detected_explained_and_repaired(tiny, tmp_path):
    out = seed_output(tiny, tmp_path / "out")
    db = break_store(out / "mlflow")
    run = sh(run_args(tiny, out))
    assert run.returncode == 3, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert "incomplete" in run.stderr and f"w2s store repair {out.resolve()}" in run.stderr, run.stderr
    assert "Nothing was run" in run.stderr and "--no-tracking" in run.stderr

    check = sh(["store", "check", out])
    assert check.returncode == 3 and "w2s store repair" in check.stderr and "Traceback" not in check.stderr
    assert str(db.resolve()) in check.stderr
    before = db.read_bytes()
    rep = sh(["store", "repair", out])
    assert rep.returncode == 0, rep.stderr
    assert "moved the broken store" in rep.stdout and "created a fresh store" in rep.stdout
    (aside,) = [p for p in (out / "mlflow").glob(DB + ".broken-*") if not p.name.endswith("-journal")]
    assert aside.read_bytes() == before          # kept for a person to look at, never deleted
    ok = sh(["store", "check", out])
    assert ok.returncode == 0 and ok.stdout.startswith("ok: "), ok.stdout + ok.stderr
    kept = sorted((out / "mlflow").glob(DB + ".broken-*"))
    again = sh(["store", "repair", out])
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert sorted((out / "mlflow").glob(DB + ".broken-*")) == kept          # a sound store is left alone
    run = sh(run_args(tiny, out))
    assert run.returncode == 0, run.stderr[-3000:]
    assert_tracked(out)                           # every cached stage logged into the fresh store


def test_store_check_without_a_store_and_from_a_manifest(tiny, tmp_path):
    none = sh(["store", "check", tmp_path / "nothing"])
    assert none.returncode == 0 and "no store" in none.stdout and "first `w2s run` creates it" in none.stdout
    assert not (tmp_path / "nothing").exists()    # a check creates nothing
    ok = sh(["store", "check", tiny])             # a manifest names its output dir; nothing there yet either
    assert ok.returncode == 0, ok.stderr


def test_two_concurrent_first_runs_on_one_output_dir(tiny, tmp_path):
    out = seed_output(tiny, tmp_path / "out")
    procs = [subprocess.Popen([*W2S, *run_args(tiny, out)], env=clean_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for rc, err in results:
        assert rc == 0, err[-3000:]
        assert "Traceback" not in err
    assert diagnose(db_of(out)) is None
    c = client("sqlite:///" + str(db_of(out)))
    exps = [e for e in c.search_experiments() if e.name == "tiny"]
    assert len(exps) == 1                          # one experiment, created once
    ps = parents(c, exps[0].experiment_id)
    assert len(ps) == 2 and all(p.info.status == "FINISHED" for p in ps)
    kids = children(c, exps[0].experiment_id)
    assert len({k.data.tags["w2s.stage_key"] for k in kids}) == 4
    assert all(k.data.tags.get("w2s.complete") == "true" and k.info.status == "FINISHED" for k in kids)


def test_in_process_run_after_repair_keeps_cli_contract(tiny, tmp_path, monkeypatch):
    """`w2s store repair` on a dir with no store creates one that `w2s run` uses as is."""
    out = seed_output(tiny, tmp_path / "out")
    rep = w2s(["store", "repair", out], monkeypatch)
    assert rep.exit_code == 0 and "created a fresh store" in rep.output
    assert diagnose(db_of(out)) is None
    res = w2s(run_args(tiny, out), monkeypatch)
    assert res.exit_code == 0, res.output
    assert_tracked(out)


def test_a_hot_journal_left_by_a_killed_writer_is_rolled_back_not_called_broken(tmp_path):
    """A process SIGKILLed inside an sqlite write transaction leaves mlflow.db-journal (a hot journal).
    The store is sound: the next connection that may write rolls the journal back. Diagnosing it through a
    read-only connection failed with "attempt to write a readonly database" and sent the user to repair."""
    from harness.mlflow_store import ensure

    d = ensure(tmp_path / "mlflow")
    db = d / DB if (d / DB).exists() else tmp_path / "mlflow" / DB
    assert diagnose(db) is None
    # a 1-page cache makes sqlite spill the transaction into the database file before the commit: the
    # journal is then hot (synced header), as after a kill during MLflow's larger writes
    writer = ("import os, sqlite3, sys; con = sqlite3.connect(sys.argv[1]); con.execute('pragma cache_size=1'); "
              "con.execute('begin immediate'); con.execute('create table w2s_torn (x)'); "
              "[con.execute('insert into w2s_torn values (?)', (os.urandom(3000),)) for _ in range(300)]; "
              "con.execute(\"update experiments set name = 'half-written'\"); os.kill(os.getpid(), 9)")
    p = subprocess.run([sys.executable, "-c", writer, str(db)], capture_output=True, timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert Path(str(db) + "-journal").exists(), "the killed writer left no hot journal: the test proves nothing"
    assert diagnose(db) is None
    import sqlite3
    con = sqlite3.connect(db)
    assert "w2s_torn" not in {r[0] for r in con.execute("select name from sqlite_master")}
    con.close()
