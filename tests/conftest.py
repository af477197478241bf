import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
W2S = [sys.executable, "-m", "harness.cli"]


def _shared_root() -> Path:
    """../shared beside the checkout, or where the Makefile found it (it exports W2S_DATA_DIR=<shared>/data,
    also for a clone made elsewhere, e.g. `git clone . /tmp/ci-clone`)."""
    data = os.environ.get("W2S_DATA_DIR")
    if data and Path(data).is_dir():
        return Path(data).resolve().parent
    return ROOT.parent / "shared"


SHARED = _shared_root()
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory) -> Path:
    """Tiny random GPT-2 + BERT, a synthetic SST-2-like set and tiny.yaml, built once per session."""
    from harness.tiny import make_all

    root = tmp_path_factory.mktemp("tiny")
    make_all(root)
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_assets) -> Path:
    """tiny.yaml run once, uninterrupted, without tracking: the reference result for the e2e tests."""
    w2s("run", tiny_assets / "tiny.yaml", "--no-tracking")
    return tiny_assets / "tiny.yaml"


@pytest.fixture
def tiny(tiny_assets, tmp_path) -> Path:
    """A private copy of tiny.yaml whose output dir is this test's tmp dir."""
    text = (tiny_assets / "tiny.yaml").read_text().replace(f"{tiny_assets}/runs", str(tmp_path / "runs"))
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


def w2s(*args, check=True, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess."""
    proc = subprocess.run([*W2S, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"w2s {' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc
