"""Shared pieces of the tracking tests: a real `mlflow server` subprocess, the tiny sweep, and a CLI runner.
Real MLflow throughout (no mocks): sqlite backend, proxied artifacts, 127.0.0.1 only."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from click.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
W2S = [sys.executable, "-m", "harness.cli"]
# The tiny sweep shrunk further: 4 stages of a few optimizer steps each; keeps the tests about model
# plumbing, not training time.
FAST = ["-o", "dataset.n_docs=128", "-o", "dataset.n_test_docs=64", "-o", "train.epochs=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", COLUMNS="200", **extra)
    return env


class MlflowServer:
    """`mlflow server` on a random port with an sqlite store and served (proxied) artifacts."""

    def __init__(self, root: Path, port: int | None = None):
        self.root, self.port = Path(root), port or free_port()
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> "MlflowServer":
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--artifacts-destination", str(self.root / "artifacts"), "--serve-artifacts",
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        log = open(self.root / "server.log", "ab")
        # own session: stop() signals this server's process group only (uvicorn + its worker)
        self.proc = subprocess.Popen(cmd, env=clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server not ready in {timeout}s: {(self.root / 'server.log').read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def make_tiny(root: Path) -> Path:
    from harness.tiny import make_all

    return make_all(root)


def w2s(args: list[str], monkeypatch=None) -> "CliRunner.Result":
    """`w2s ARGS` in this process (torch is imported once per test session, not once per run)."""
    from harness.cli import main

    for k in [k for k in os.environ if k.startswith("MLFLOW_TRACKING")]:
        if monkeypatch is not None:
            monkeypatch.delenv(k)
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def children(c, exp_id: str) -> list:
    return c.search_runs([exp_id], "tags.`w2s.role` = 'stage'", max_results=1000)


def parents(c, exp_id: str) -> list:
    return c.search_runs([exp_id], "tags.`w2s.role` = 'parent'", max_results=1000)


_CACHED: dict = {}


def cached_tiny(tmp_path_factory) -> Path:
    """tiny.yaml whose 4 stages (FAST) are in the stage cache, trained once per test session without
    tracking; `seed_output(dst)` copies them into another output dir, so a tracked run there only tracks."""
    if "path" not in _CACHED:
        root = tmp_path_factory.mktemp("cached_tiny")
        path = make_tiny(root)
        res = w2s(["run", path, "--no-tracking", *FAST])
        assert res.exit_code == 0, res.output
        _CACHED["path"] = path
    return _CACHED["path"]


def seed_output(path: Path, dst: Path) -> Path:
    """A new output dir holding a copy of the cached stages of `path`'s sweep (no MLflow store)."""
    import shutil

    shutil.copytree(Path(path).parent / "runs" / "stages", Path(dst) / "stages")
    return Path(dst)


def run_args(path: Path, out: Path, *extra) -> list[str]:
    return ["run", str(path), *FAST, "-o", f"output.dir={out}", *map(str, extra)]


def stage_runs(m) -> dict:
    """{stage key: [status of each MLflow run of that stage]} in the manifest's embedded store."""
    from harness.mlflow_store import default_uri

    c = client(default_uri(m))
    out = {}
    for r in children(c, c.get_experiment_by_name(m.name).experiment_id):
        out.setdefault(r.data.tags["w2s.stage_key"], []).append(r.info.status)
    return out


def wait_healthy(proc, port: int, timeout: float = 120) -> None:
    """Until the MLflow server started by `proc` (stdout piped) answers /health on 127.0.0.1:`port`."""
    import time
    import urllib.request

    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return
        except OSError:
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()[-3000:]
            time.sleep(0.3)
