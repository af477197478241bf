"""The MLflow UI in headless Chromium, started by `w2s ui` on the embedded store of a tiny sweep: a transfer
run's page shows its PGR and the weak labels it trained on; the teacher's artifacts include the weak-label
parquet. Screenshots are kept under test-artifacts/ (gitignored) for a person to look at."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers_mlflow import FAST, REPO, children, clean_env, client, free_port, make_tiny, w2s, wait_healthy

from harness.manifest import load
from harness.mlflow_tracking import default_uri

pytestmark = pytest.mark.browser
ARTIFACTS = REPO / "test-artifacts"
# ENVIRONMENT.md §7: these flags keep headless Chromium quiet and self-contained (dbus errors are harmless)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions", "--window-size=1400,1000",
         "--virtual-time-budget=15000"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("chromium not found (apt-get install -y chromium)")


def browse(url: str, screenshot: Path) -> str:
    """The rendered DOM as plain text, plus a screenshot."""
    exe = chromium()
    with tempfile.TemporaryDirectory() as prof:
        dom = subprocess.run([exe, *FLAGS, f"--user-data-dir={prof}", "--dump-dom", url], capture_output=True,
                             text=True, timeout=120).stdout
    with tempfile.TemporaryDirectory() as prof:
        subprocess.run([exe, *FLAGS, f"--user-data-dir={prof}", f"--screenshot={screenshot}", url],
                       capture_output=True, timeout=120, cwd=screenshot.parent)
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    chromium()
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("ui")
    path = make_tiny(root)
    res = w2s(["run", path, *FAST], mp)
    assert res.exit_code == 0, res.output
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "ui", "--port", str(port), "-f", str(path)],
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    wait_healthy(proc, port)
    m = load(path, [FAST[i + 1] for i in range(0, len(FAST), 2)])
    yield {"port": port, "m": m, "c": client(default_uri(m))}
    os.killpg(proc.pid, signal.SIGTERM)          # `w2s ui` and the mlflow server it started
    proc.wait(timeout=30)
    mp.undo()


def test_transfer_run_page_shows_pgr_and_weak_labels(ui):
    c, m = ui["c"], ui["m"]
    exp = c.get_experiment_by_name(m.name)
    kids = children(c, exp.experiment_id)
    run = next(r for r in kids if r.data.tags["w2s.stage_kind"] == "transfer")
    teacher = next(r for r in kids if r.data.tags["w2s.stage_key"] == run.data.tags["w2s.teacher_key"])
    ARTIFACTS.mkdir(exist_ok=True)
    base = f"http://127.0.0.1:{ui['port']}/#/experiments/{exp.experiment_id}/runs"
    shot = ARTIFACTS / "mlflow_transfer_run.png"
    text = browse(f"{base}/{run.info.run_id}", shot)
    assert run.data.tags["mlflow.runName"].replace(">", "&gt;") in text or "transfer tiny-gpt2" in text
    pgr = run.data.metrics["pgr"]
    assert re.search(rf"\bpgr {re.escape(repr(pgr))[:8]}", text), text[:3000]      # the metric row: name, value
    assert "weak_labels.tiny-gpt2.s0" in text                     # the input dataset (teacher's weak labels)
    assert shot.exists() and shot.stat().st_size > 20_000
    shot2 = ARTIFACTS / "mlflow_teacher_artifacts.png"
    text2 = browse(f"{base}/{teacher.info.run_id}/artifacts", shot2)
    assert "weak_labels" in text2 and "predictions" in text2, text2[:3000]
    assert shot2.exists() and shot2.stat().st_size > 20_000


def test_experiment_url_opens_on_runs_table_against_server(tmp_path_factory, tmp_path, monkeypatch):
    """Issue #18: the URL `w2s run` prints for a server opens the runs table with the parent run, not the
    GenAI traces overview (MLflow 3.17 decides that page from ?workflowType=, not from the experiment tag)."""
    from helpers_mlflow import MlflowServer, cached_tiny, run_args, seed_output

    chromium()
    srv = MlflowServer(tmp_path / "server").start()
    try:
        tiny = cached_tiny(tmp_path_factory)
        out = seed_output(tiny, tmp_path / "out")
        res = w2s([*run_args(tiny, out), "--tracking-uri", srv.uri], monkeypatch)
        assert res.exit_code == 0, res.output
        url = next(x for x in res.output.splitlines() if x.startswith("MLflow: ")).split(" ", 1)[1]
        assert url.startswith(srv.uri + "/#/experiments/")
        c = client(srv.uri)
        exp = c.get_experiment_by_name("tiny")
        (parent,) = [r for r in c.search_runs([exp.experiment_id]) if r.data.tags.get("w2s.role") == "parent"]
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "mlflow_experiment_runs.png"
        text = browse(url, shot)
        assert "Traces 0" not in text and "No data available for the selected time range" not in text, text[:3000]
        assert "Run Name" in text and "matching runs" in text, text[:3000]          # the runs table
        assert parent.data.tags["mlflow.runName"] in text, text[:3000]               # with the parent run
        assert "pgr" in text                                                         # a shared-view column
        assert shot.exists() and shot.stat().st_size > 20_000
    finally:
        srv.stop()
