"""Docker tier: the real images and the compose stack (Postgres + MLflow server + trainer).

    make docker-test            # = pytest -m docker tests/docker   (root, apt and PyPI needed; ~10 min cold)

A session fixture installs and starts a private dockerd (docker/dockerd.sh), builds the three images from the
local debootstrap base (docker/build.sh, W2S_LOCAL_BASE=1) under per-session tags, brings the stack up with a
unique compose project name on random free 127.0.0.1 ports, and at the end removes the stack, its volumes and
the images it built (the debootstrap base and BuildKit's cache are kept, so a second run is faster) and stops
dockerd if it started it. Wall times are printed at the end and written to test-artifacts/docker-timings.json.

Where a test depends on the core's contract (`python -m harness.tiny`, `w2s run` recording into MLflow),
it says so: "CORE CONTRACT".
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The first test also pays for the session setup (apt, debootstrap, image builds): a generous timeout.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "docker"
TOOLS = Path(os.environ.get("W2S_TOOLS_VENV", ROOT / ".venv-tools"))
STATE = Path(os.environ.get("W2S_DOCKER_STATE", "/tmp/w2s-docker"))
ARTIFACTS = ROOT / "test-artifacts"
DOCKERFILES = ["docker/Dockerfile", "docker/mlflow.Dockerfile", "docker/postgres.Dockerfile"]
COMPOSE_FILES = ["-f", "docker-compose.yml", "-f", "docker-compose.cpu.yml"]  # CI: no NVIDIA runtime
CMD_TIMEOUT = 900

# What the tests created in MLflow, checked again after the stack restarts: {experiment name: {run ids}}.
CREATED: dict[str, set[str]] = {}
# (run id, artifact path) pairs that must still be downloadable after the restart.
CREATED_ARTIFACTS: list[tuple[str, str]] = []


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd, env, timeout=CMD_TIMEOUT, check=True, cwd=ROOT, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, env=env, cwd=cwd, text=True, capture_output=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} -> exit {p.returncode}\n--- stdout\n{p.stdout[-6000:]}"
                             f"\n--- stderr\n{p.stderr[-6000:]}")
    return p


@dataclass
class Stack:
    env: dict
    project: str
    mlflow_port: int
    images: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    trainer_error: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def compose(self, *args, timeout=CMD_TIMEOUT, check=True) -> subprocess.CompletedProcess:
        return _run(["docker", "compose", "-p", self.project, *COMPOSE_FILES, *args], self.env,
                    timeout=timeout, check=check)

    def docker(self, *args, timeout=CMD_TIMEOUT, check=True) -> subprocess.CompletedProcess:
        return _run(["docker", *args], self.env, timeout=timeout, check=check)

    def up(self) -> float:
        t0 = time.monotonic()
        self.compose("up", "-d", "--no-build", "--wait", "--wait-timeout", "240")
        return time.monotonic() - t0

    # --- MLflow REST ---
    def get(self, endpoint: str, params: dict | None = None):
        q = urllib.parse.urlencode(params or {})
        with urllib.request.urlopen(f"{self.url}{endpoint}?{q}", timeout=30) as r:
            body = r.read()
        return json.loads(body) if endpoint.startswith("/api/") else body

    def post(self, path: str, payload: dict):
        req = urllib.request.Request(f"{self.url}{path}", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def experiment(self, name: str) -> dict:
        return self.get("/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": name})["experiment"]

    def runs(self, experiment_id: str) -> list[dict]:
        out, token = [], None
        while True:
            payload = {"experiment_ids": [experiment_id], "max_results": 1000}
            if token:
                payload["page_token"] = token
            r = self.post("/api/2.0/mlflow/runs/search", payload)
            out += r.get("runs", [])
            token = r.get("next_page_token")
            if not token:
                return out

    def artifacts(self, run_id: str, path: str = "") -> list[str]:
        r = self.get("/api/2.0/mlflow/artifacts/list", {"run_id": run_id, "path": path})
        return [f["path"] for f in r.get("files", [])]

    def artifact_bytes(self, run_id: str, path: str) -> bytes:
        return self.get("/get-artifact", {"run_uuid": run_id, "path": path})


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def metrics(run: dict) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def _report(config, lines: list[str]) -> None:
    """Print past pytest's output capture (session teardown runs inside the last test's capture)."""
    import contextlib
    cm = config.pluginmanager.get_plugin("capturemanager")
    tr = config.pluginmanager.get_plugin("terminalreporter")
    with cm.global_and_fixture_disabled() if cm else contextlib.nullcontext():
        for line in ["", "wall times:", *lines]:
            (tr.write_line if tr else print)(f"[docker] {line}")


@pytest.fixture(scope="session")
def docker_env(request) -> dict:
    """Tools venv + a running dockerd; yields the environment for docker/compose subprocesses."""
    if os.geteuid() != 0:
        pytest.skip("the docker tier starts its own dockerd and needs root")
    env = dict(os.environ)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    _run([str(DOCKER_DIR / "tools.sh")], env)
    timings["tools venv"] = time.monotonic() - t0
    was_running = _run([str(DOCKER_DIR / "dockerd.sh"), "status"], env, check=False).returncode == 0
    t0 = time.monotonic()
    _run([str(DOCKER_DIR / "dockerd.sh"), "start"], env)
    timings["dockerd start (incl. apt install if missing)"] = time.monotonic() - t0
    for line in (STATE / "env").read_text().splitlines():
        if line.startswith("export "):
            k, v = line[len("export "):].split("=", 1)
            env[k] = v
    env["DOCKER_CONFIG"] = str(TOOLS / "docker-config")
    env["PATH"] = f"{TOOLS / 'bin'}{os.pathsep}{env['PATH']}"
    env["COMPOSE_PROGRESS"] = "quiet"
    env["_w2s_timings"] = json.dumps(timings)
    yield env
    if not was_running:
        _run([str(DOCKER_DIR / "dockerd.sh"), "stop"], env, check=False)


@pytest.fixture(scope="session")
def stack(docker_env, request) -> Stack:
    """Images built from the local base, the stack up and healthy; everything removed at the end."""
    env = dict(docker_env)
    sid = uuid.uuid4().hex[:8]
    images = {
        "W2S_POSTGRES_IMAGE": f"localhost/w2s-postgres:test-{sid}",
        "W2S_MLFLOW_IMAGE": f"localhost/w2s-mlflow:test-{sid}",
        "W2S_TRAINER_IMAGE": f"localhost/w2s-harness:test-{sid}",
    }
    mlflow_port, pg_port = _free_port(), _free_port()
    env.update(images, W2S_LOCAL_BASE="1", W2S_MLFLOW_PORT=str(mlflow_port), W2S_PG_PORT=str(pg_port),
               W2S_PG_PASSWORD=uuid.uuid4().hex, W2S_MLFLOW_WORKERS="1")
    timings_file = Path(tempfile.mkstemp(prefix="w2s-build-timings-")[1])
    env["W2S_TIMINGS_FILE"] = str(timings_file)
    st = Stack(env=env, project=f"w2s-test-{sid}", mlflow_port=mlflow_port, images=images,
               timings=json.loads(env.pop("_w2s_timings", "{}")))
    try:
        _run([str(DOCKER_DIR / "build.sh"), "base"], env)
        # The three images are built concurrently. The trainer build needs the core (pyproject.toml +
        # harness/ with a working `w2s --help`); when only it fails, only the trainer tests fail.
        p = _run([str(DOCKER_DIR / "build.sh"), "postgres", "mlflow", "trainer"], env, check=False)
        missing = [k for k, img in images.items()
                   if st.docker("image", "inspect", img, check=False).returncode != 0]
        if p.returncode != 0 or missing:
            if set(missing) - {"W2S_TRAINER_IMAGE"}:
                raise AssertionError(f"image builds failed ({missing}):\n{p.stderr[-8000:]}")
            st.trainer_error = p.stderr[-8000:]
        for line in timings_file.read_text().splitlines():
            name, secs = line.rsplit(" ", 1)
            st.timings[name] = float(secs)
        st.timings["compose up --wait (cold: initdb + migrations)"] = st.up()
        yield st
    finally:
        st.compose("down", "-v", "--remove-orphans", timeout=300, check=False)
        st.docker("image", "rm", "-f", *images.values(), check=False)
        timings_file.unlink(missing_ok=True)
        lines = [f"{k}: {v:.1f} s" for k, v in st.timings.items()]
        _report(request.config, lines)
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "docker-timings.json").write_text(json.dumps(st.timings, indent=2))


@pytest.fixture(scope="session")
def trainer(stack) -> Stack:
    if stack.trainer_error:
        pytest.fail(f"trainer image build failed:\n{stack.trainer_error}")
    return stack


# ----------------------------------------------------------------------------------------------------------
def test_lint(docker_env):
    """hadolint clean, compose file valid against the compose-spec schema, `docker compose config -q`."""
    env = docker_env
    _run(["hadolint", "--config", "docker/.hadolint.yaml", *DOCKERFILES], env)
    _run(["check-jsonschema", "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"], env)
    _run(["docker", "compose", "-f", "docker-compose.yml", "config", "-q"], env)
    _run(["docker", "compose", *COMPOSE_FILES, "--profile", "trainer", "config", "-q"], env)
    # The GPU reservation is in the main file and dropped by the CPU override.
    full = _run(["docker", "compose", "-f", "docker-compose.yml", "--profile", "trainer", "config", "--format",
                 "json"], env).stdout
    cpu = _run(["docker", "compose", *COMPOSE_FILES, "--profile", "trainer", "config", "--format", "json"],
               env).stdout
    devices = json.loads(full)["services"]["trainer"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "deploy" not in json.loads(cpu)["services"]["trainer"]


def test_stack_healthy(stack):
    ps = stack.compose("ps", "--format", "json").stdout.strip()
    rows = json.loads(ps) if ps.startswith("[") else [json.loads(line) for line in ps.splitlines()]
    state = {r["Service"]: (r["State"], r.get("Health", "")) for r in rows}
    assert state.get("postgres") == ("running", "healthy"), state
    assert state.get("mlflow") == ("running", "healthy"), state
    assert "trainer" not in state  # profile `trainer` is not started by `up`
    assert stack.get("/health") == b"OK"
    # Published on 127.0.0.1 only.
    port = stack.compose("port", "mlflow", "5000").stdout.strip()
    assert port == f"127.0.0.1:{stack.mlflow_port}", port


def test_trainer_image(trainer):
    img = trainer.images["W2S_TRAINER_IMAGE"]
    out = trainer.docker("run", "--rm", img).stdout  # ENTRYPOINT w2s, CMD --help
    assert "run" in out
    uid = trainer.docker("run", "--rm", "--entrypoint", "id", img, "-u").stdout.strip()
    assert uid != "0"
    envs = trainer.docker("run", "--rm", "--entrypoint", "env", img).stdout.splitlines()
    for want in ("TORCH_CUDA_ARCH_LIST=9.0", "MLFLOW_DISABLE_TELEMETRY=true", "DO_NOT_TRACK=true",
                 "HF_HUB_DISABLE_TELEMETRY=1"):
        assert want in envs, want
    probe = ("import torch, transformers, mlflow, deepspeed, harness; "
             "print(torch.__version__, transformers.__version__, mlflow.__version__)")
    out = trainer.docker("run", "--rm", "--entrypoint", "python", img, "-c", probe).stdout
    assert "2.13.0" in out and "3.17.2" in out, out
    # Lean: the MLflow client only (mlflow-skinny), not the server.
    assert trainer.docker("run", "--rm", "--entrypoint", "pip", img, "show", "mlflow", check=False).returncode != 0


CLIENT_SCRIPT = r"""
import os, sys, mlflow, pandas as pd
assert os.environ["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
mlflow.set_experiment("w2s-docker-smoke")
with mlflow.start_run(run_name="smoke") as run:
    mlflow.log_param("p", "1")
    mlflow.log_metric("test_acc", 0.75)
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "weak_labels.parquet")
    pd.DataFrame({"idx": [0, 1], "soft_label": [0.2, 0.9]}).to_parquet(path)
    mlflow.log_artifact(path, artifact_path="weak_labels")
print(run.info.run_id)
"""


def test_trainer_logs_to_stack_mlflow(trainer):
    """Independent of the core: an MLflow client inside the trainer container records into the stack
    (service-name Host header accepted, artifacts proxied through the server, no storage credentials)."""
    p = trainer.compose("run", "--rm", "--no-deps", "--entrypoint", "python", "trainer", "-c", CLIENT_SCRIPT)
    run_id = p.stdout.strip().splitlines()[-1]
    exp = trainer.experiment("w2s-docker-smoke")
    runs = {r["info"]["run_id"]: r for r in trainer.runs(exp["experiment_id"])}
    assert run_id in runs
    assert metrics(runs[run_id])["test_acc"] == pytest.approx(0.75)
    assert trainer.artifacts(run_id, "weak_labels") == ["weak_labels/weak_labels.parquet"]
    assert trainer.artifact_bytes(run_id, "weak_labels/weak_labels.parquet")[:4] == b"PAR1"
    CREATED.setdefault("w2s-docker-smoke", set()).add(run_id)
    CREATED_ARTIFACTS.append((run_id, "weak_labels/weak_labels.parquet"))


def test_tiny_manifest_in_trainer(trainer):
    """CORE CONTRACT: `python -m harness.tiny OUT` writes OUT/tiny.yaml (name `tiny`, absolute paths inside
    OUT); `w2s run` with MLFLOW_TRACKING_URI set records one experiment named after the manifest, one parent
    run (tag w2s.role=parent) and one child per stage (tag mlflow.parentRunId, tag w2s.stage_kind gt|transfer),
    metric test_acc on every child, pgr on transfer children, and the artifact
    weak_labels/weak_labels.parquet on the GT children that produce weak labels."""
    out = Path(tempfile.mkdtemp(prefix="w2s-tiny-"))
    try:
        out.chmod(0o777)  # the container runs as a non-root uid
        mount = f"{out}:{out}"
        t0 = time.monotonic()
        # Generate the tiny assets inside the image, so they match its library versions.
        trainer.compose("run", "--rm", "--no-deps", "-v", mount, "--entrypoint", "python", "trainer",
                        "-m", "harness.tiny", str(out))
        assert (out / "tiny.yaml").is_file()
        trainer.compose("run", "--rm", "-v", mount, "trainer", "run", str(out / "tiny.yaml"), timeout=1200)
        trainer.timings["tiny manifest in the trainer container"] = time.monotonic() - t0

        exp = trainer.experiment("tiny")
        runs = trainer.runs(exp["experiment_id"])
        parents = [r for r in runs if tags(r).get("w2s.role") == "parent"]
        assert len(parents) == 1, [tags(r) for r in runs]
        parent_id = parents[0]["info"]["run_id"]
        assert parents[0]["info"]["status"] == "FINISHED"
        children = [r for r in runs if tags(r).get("mlflow.parentRunId") == parent_id]
        assert children, "no child runs"
        kinds = {tags(c).get("w2s.stage_kind") for c in children}
        assert kinds <= {"gt", "transfer"} and {"gt", "transfer"} <= kinds, kinds
        with_weak_labels = []
        for c in children:
            cid, m = c["info"]["run_id"], metrics(c)
            assert c["info"]["status"] == "FINISHED", c["info"]
            assert "test_acc" in m, (tags(c), m)
            if tags(c)["w2s.stage_kind"] == "transfer":
                assert "pgr" in m, (tags(c), m)
            elif "weak_labels/weak_labels.parquet" in trainer.artifacts(cid, "weak_labels"):
                with_weak_labels.append(cid)
        assert with_weak_labels, "no GT child carries weak_labels/weak_labels.parquet"
        for cid in with_weak_labels:
            assert trainer.artifact_bytes(cid, "weak_labels/weak_labels.parquet")[:4] == b"PAR1"
            CREATED_ARTIFACTS.append((cid, "weak_labels/weak_labels.parquet"))
        CREATED.setdefault("tiny", set()).update(r["info"]["run_id"] for r in [parents[0], *children])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_data_survives_restart(stack):
    """`down` without -v keeps the named volumes: runs, metrics and artifacts are still there after `up`."""
    if not CREATED:
        # Nothing recorded by the earlier tests (e.g. the trainer image failed): record a run from the host.
        run = stack.post("/api/2.0/mlflow/runs/create", {
            "experiment_id": stack.post("/api/2.0/mlflow/experiments/create",
                                        {"name": f"w2s-restart-{uuid.uuid4().hex[:6]}"})["experiment_id"]})
        rid = run["run"]["info"]["run_id"]
        stack.post("/api/2.0/mlflow/runs/log-metric", {"run_id": rid, "key": "test_acc", "value": 0.5,
                                                       "timestamp": int(time.time() * 1000), "step": 0})
        CREATED.setdefault(run["run"]["info"]["experiment_id"], set()).add(rid)
    before = {}
    for name in CREATED:
        exp = stack.experiment(name) if not name.isdigit() else {"experiment_id": name}
        before[name] = {r["info"]["run_id"]: metrics(r) for r in stack.runs(exp["experiment_id"])}
    t0 = time.monotonic()
    stack.compose("down", timeout=300)
    stack.timings["compose down"] = time.monotonic() - t0
    stack.timings["compose up --wait (warm: existing volumes)"] = stack.up()
    for name, run_ids in CREATED.items():
        exp = stack.experiment(name) if not name.isdigit() else {"experiment_id": name}
        after = {r["info"]["run_id"]: metrics(r) for r in stack.runs(exp["experiment_id"])}
        assert run_ids <= after.keys(), (name, run_ids - after.keys())
        assert {k: after[k] for k in before[name]} == before[name]
    for rid, path in CREATED_ARTIFACTS:
        assert stack.artifact_bytes(rid, path)[:4] == b"PAR1", (rid, path)
