"""Issue #15 (newcomer): fast commands, clear "nothing found" errors, a fuller `w2s env`, `w2s ui` that
stops its process group and fails on a busy port, and a quirk list the docs can cite."""
from __future__ import annotations

import json
import os
import re
import time
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "pandas", "transformers", "mlflow", "deepspeed")
_PROBE = """
import json, sys
from harness.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


def _heavy_imports(*args: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    return json.loads(r.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [("validate", "experiments/quickstart.yaml"), ("--help",), ("plan", "--help")])
def test_light_commands_do_not_import_heavy_libraries(args):
    # torch alone costs 1-2 s of import: checking a YAML file must not pay for it
    assert _heavy_imports(*args) == []


def _w2s(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_results_with_no_finished_stage_fails_and_names_the_absolute_folder(tmp_path):
    # nothing finished in the manifest's output dir: an error naming the absolute folder, not empty tables
    (tmp_path / "m.yaml").write_text((ROOT / "experiments" / "quickstart.yaml").read_text())
    r = _w2s("results", tmp_path / "m.yaml", cwd=ROOT)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"no finished stage of 'quickstart' in {tmp_path.parent.resolve() / 'runs' / 'stages'}" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_output_dir_is_relative_to_the_manifest_folder_not_the_working_directory(tmp_path, monkeypatch):
    from harness.manifest import load

    (tmp_path / "exp" / "sub").mkdir(parents=True)
    base = (ROOT / "experiments" / "quickstart.yaml").read_text().replace("dir: ../runs", "dir: out")
    (tmp_path / "exp" / "base.yaml").write_text(base)
    (tmp_path / "exp" / "sub" / "child.yaml").write_text("extends: ../base.yaml\nseeds: [1]\n")
    (tmp_path / "exp" / "plain.yaml").write_text(base.replace("output: {dir: out}", ""))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    exp = (tmp_path / "exp").resolve()
    assert load(tmp_path / "exp" / "base.yaml").output.dir == str(exp / "out")
    assert load(tmp_path / "exp" / "sub" / "child.yaml").output.dir == str(exp / "out")   # the base's folder
    assert load(tmp_path / "exp" / "plain.yaml").output.dir == str(exp / "runs")          # the default too
    # typed on the command line: relative to the working directory, as shell paths are
    assert load(tmp_path / "exp" / "base.yaml", ["output.dir=cli"]).output.dir == str(elsewhere.resolve() / "cli")
    assert load(ROOT / "experiments" / "quickstart.yaml").output.dir == str(ROOT / "runs")   # where it always was
    assert load(ROOT / "experiments" / "offline" / "sst2-probe.yaml").output.dir == str(ROOT / "runs" / "offline")
    assert load(ROOT / "experiments" / "paper" / "sciq.yaml").output.dir == str(ROOT / "runs")


def test_data_paths_are_relative_to_the_manifest_too_unless_typed_or_from_the_environment(tmp_path, monkeypatch):
    from harness.manifest import load

    (tmp_path / "exp").mkdir()
    lang = (ROOT / "experiments" / "quickstart.yaml").read_text().replace("dataset:\n", "dataset:\n  source: data\n", 1)
    (tmp_path / "exp" / "lang.yaml").write_text(lang)
    vis = (ROOT / "experiments" / "offline" / "cifar10.yaml").read_text()
    (tmp_path / "exp" / "env.yaml").write_text(vis)
    (tmp_path / "exp" / "vis.yaml").write_text(vis.replace("${W2S_DATA_DIR:-../shared/data}", "imgs"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    exp, here = (tmp_path / "exp").resolve(), elsewhere.resolve()
    assert load(tmp_path / "exp" / "lang.yaml").dataset.source == str(exp / "data")
    assert load(tmp_path / "exp" / "lang.yaml", ["dataset.source=d2"]).dataset.source == str(here / "d2")
    assert load(tmp_path / "exp" / "vis.yaml").vision.data_dir == str(exp / "imgs")
    monkeypatch.setenv("W2S_DATA_DIR", "shell/data")     # the environment's paths are the shell's
    assert load(tmp_path / "exp" / "env.yaml").vision.data_dir == str(here / "shell" / "data")
    monkeypatch.delenv("W2S_DATA_DIR")
    assert load(tmp_path / "exp" / "env.yaml").vision.data_dir == str((here / ".." / "shared" / "data").resolve())


@pytest.mark.parametrize("what", ["missing/dir", "missing", "empty"])
def test_report_on_a_missing_or_empty_folder_fails_and_names_it(tmp_path, what):
    (tmp_path / "empty").mkdir()
    r = _w2s("report", what, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": ""})
    assert r.returncode == 1, r.stdout + r.stderr
    absolute = str(tmp_path.resolve() / what)
    assert absolute in r.stderr and "Traceback" not in r.stderr
    assert ("no results here" if what == "empty" else "no such file or directory") in r.stderr


def test_env_reports_system_gpu_variables_and_checkout(tmp_path):
    r = _w2s("env", cwd=tmp_path, env={"W2S_DATA_DIR": "/data/w2s", "HF_HUB_OFFLINE": "1",
                                       "MLFLOW_TRACKING_URI": "http://alice:s3cret@127.0.0.1:5999"})
    assert r.returncode == 0, r.stderr
    got = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    assert got["os"].startswith(os.uname().sysname) and f"{os.cpu_count()} logical" in got["cpu"]
    import torch

    assert ("none visible" in got["gpu"]) == (not torch.cuda.is_available())
    assert str(torch.version.cuda or "CPU build") in got["cuda"]
    assert got["W2S_DATA_DIR"] == "/data/w2s" and got["HF_HUB_OFFLINE"] == "1"
    assert got["MLFLOW_TRACKING_URI"] == "http://***@127.0.0.1:5999", "credentials are not printed"
    assert {"W2S_QWEN1_CODE", "HF_HOME"} <= got.keys(), "listed even when unset"
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert got["git"] == head.strip() and got["git dirty"].split()[0] in ("yes", "no")


def test_git_dirty_flag_follows_tracked_files(tmp_path):
    from harness.envinfo import git_state

    def git(*a):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *a], check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "f.txt").write_text("a\n")
    git("add", "f.txt")
    git("commit", "-qm", "x")
    sha, dirty = git_state(tmp_path)
    assert len(sha) == 40 and dirty is False
    (tmp_path / "untracked.txt").write_text("u\n")
    assert git_state(tmp_path)[1] is False, "untracked files (outputs) do not make the tree dirty"
    (tmp_path / "f.txt").write_text("b\n")
    assert git_state(tmp_path) == (sha, True)
    assert git_state(tmp_path / "nowhere") == (None, None)


def _group_members(pgid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":      # fields: state, ppid, pgrp, ...
            out.append(int(stat.parent.name))
    return out


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def store_dir(tmp_path):
    import mlflow

    mlflow.MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow' / 'mlflow.db'}").create_experiment("newcomer")
    return tmp_path / "out"


def test_kill_of_w2s_ui_stops_the_whole_mlflow_server(store_dir):
    from helpers_mlflow import free_port, wait_healthy

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": ""}
    ui = subprocess.Popen([sys.executable, "-m", "harness.cli", "ui", "--port", str(port), "-f", str(store_dir)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    server_pgids: set[int] = set()
    try:
        wait_healthy(ui, port)
        server_pgids |= {os.getpgid(int(c)) for c in
                        Path(f"/proc/{ui.pid}/task/{ui.pid}/children").read_text().split()}
        server_pgids -= {os.getpgid(0)}                   # never signal the test's own group below
        assert server_pgids and ui.pid not in server_pgids, "the server runs in a group of its own"
        ui.terminate()                                    # `kill <pid>` of `w2s ui`
        assert ui.wait(timeout=60) == 128 + 15
        assert not any(_group_members(g) for g in server_pgids), "mlflow server / uvicorn left running"
        assert not _listening(port)
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, 9)
        for g in server_pgids:      # leave nothing behind even when the assertions above fail
            try:
                os.killpg(g, 9)
            except ProcessLookupError:
                pass


def test_w2s_ui_on_a_busy_port_fails(store_dir):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = _w2s("ui", "--port", port, "-f", store_dir, cwd=store_dir, env={"MLFLOW_TRACKING_URI": ""})
    assert r.returncode == 1 and f"port {port} on 127.0.0.1 is in use" in r.stderr, r.stdout + r.stderr
    assert "MLflow UI: http" not in r.stdout, "no URL printed for a server that never started"


def test_every_cited_quirk_id_is_described_in_docs_quirks():
    rows = re.findall(r"^\| (Q\d+) \| (.+?) \| (.+?) \|$", (ROOT / "docs" / "quirks.md").read_text(), re.M)
    listed = {q: (what, how) for q, what, how in rows}
    assert sorted(listed, key=lambda q: int(q[1:])) == [f"Q{i}" for i in range(1, 31)]
    assert all(len(what) > 20 and len(how) > 4 for what, how in listed.values()), "a description and a handling"
    cited: dict[str, set[str]] = {}
    for f in [*(ROOT / "docs").rglob("*.md"), *(ROOT / "harness").rglob("*.py"), *(ROOT / "vision").rglob("*.py"),
              ROOT / "README.md"]:
        for q in re.findall(r"\bQ\d+\b", f.read_text()):
            cited.setdefault(q, set()).add(str(f.relative_to(ROOT)))
    assert len(cited) >= 20, "the scan found the citations"
    assert {q: fs for q, fs in cited.items() if q not in listed} == {}


def test_docs_cite_no_sections_of_the_missing_reference_document():
    # REFERENCE.md is not in the repository: its §8 (PGR) and §11 (quirks) live in docs/quirks.md
    stale = [f"{f.relative_to(ROOT)}: {m}" for f in [*(ROOT / "docs").rglob("*.md"), *(ROOT / "harness").rglob("*.py")]
             for m in re.findall(r"REFERENCE\.md §(?:8|11)\b", f.read_text())]
    assert stale == []
    assert '<a id="pgr"></a>' in (ROOT / "docs" / "quirks.md").read_text()


def _typo_manifest(tiny) -> Path:
    text = tiny.read_text()
    bert = next(line.split("id: ")[1].split(",")[0] for line in text.splitlines() if "tiny-bert" in line)
    path = tiny.parent / "typo.yaml"
    path.write_text(text.replace(bert, "sentence-transformers/all-MiniLM-L6-v3"))
    return path


@pytest.mark.parametrize("hub", ["offline", "unreachable"])
def test_preflight_names_the_nearest_cached_model_before_any_stage(tiny, tmp_path, hub):
    cache = tmp_path / "hf"
    (cache / "models--sentence-transformers--all-MiniLM-L6-v2").mkdir(parents=True)
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1" if hub == "offline" else "0",
           "HF_ENDPOINT": "http://127.0.0.1:9"}      # port 9 (discard): refused at once, no retries
    start = time.time()
    r = _w2s("run", _typo_manifest(tiny), "--no-tracking", cwd=tmp_path, env=env)
    assert r.returncode == 3, r.stdout + r.stderr
    assert time.time() - start < 60
    assert "did you mean 'sentence-transformers/all-MiniLM-L6-v2' (in the cache)?" in r.stderr
    assert ("HF_HUB_OFFLINE=1" if hub == "offline" else "the hub is unreachable (ConnectError") in r.stderr
    assert ": running (" not in r.stdout and not (tiny.parent / "runs").exists()   # nothing trained, no log left


def test_preflight_gives_the_single_split_fix_when_the_data_dir_is_set(tmp_path):
    (tmp_path / "data" / "boolq").mkdir(parents=True)
    (tmp_path / "data" / "boolq" / "validation.jsonl").write_text(
        "".join(json.dumps({"passage": f"p{i}", "question": f"q{i}", "answer": i % 2 == 0}) + "\n" for i in range(40)))
    text = (ROOT / "experiments" / "quickstart.yaml").read_text().replace("name: sst2", "name: boolq")
    (tmp_path / "bq.yaml").write_text(text)
    r = _w2s("run", tmp_path / "bq.yaml", "--no-tracking", "-o", "output.dir=out", cwd=tmp_path,
             env={"HF_HUB_OFFLINE": "1", "W2S_DATA_DIR": str(tmp_path / "data")})
    assert r.returncode == 3, r.stdout + r.stderr
    assert "split 'train' has no local file in" in r.stderr
    assert "dataset.splits: {train: validation, test: cut}" in r.stderr and "Single-split local data" in r.stderr
    assert "set W2S_DATA_DIR" not in r.stderr and "Single-split local data" in (ROOT / "docs" / "footguns.md").read_text()
