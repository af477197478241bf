"""Running one stage in launched worker processes (`resources.launcher: deepspeed | torchrun`).

The parent (`w2s run`) resolves the stage's resources (from `stage.spec`, harness.spec), generates and
validates the DeepSpeed config, writes the manifest and config next to the stage cache, and starts `python -m harness.worker` on every rank
with the chosen launcher. Rank 0 writes the stage outputs (predictions, weak labels, log.jsonl) and a
metrics file; the parent follows log.jsonl into the tracker sink while the ranks train (the stage's bar
and MLflow metrics move live) and finishes the stage as for an in-process stage. Workers never talk to the tracker (nothing in them imports mlflow).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import zero
from .store import write_json


def launched(stage) -> bool:
    return stage.spec.resources.launcher != "none"


def workdir(stage) -> Path:
    """Launch files live beside, not in, the stage directory (rank 0's store.begin() clears that)."""
    return Path(stage.spec.output_dir) / "stages" / "_launch" / stage.key[:16]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(res: dict, port: int, worker_args: list[str]) -> list[str]:
    """The launcher's command line for `python -m harness.worker WORKER_ARGS` on every rank."""
    if res["launcher"] == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={res['gpus']}",
                f"--nnodes={res['nodes']}", "--master_addr=127.0.0.1", f"--master_port={port}",
                "-m", "harness.worker", *worker_args]
    if res["launcher"] == "deepspeed":
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", *deepspeed_gpus(res), "--master_port", str(port)]
        if res["hostfile"]:
            cmd += ["--hostfile", str(res["hostfile"])]
        else:
            cmd += ["--master_addr", "127.0.0.1"]
        return cmd + ["--no_local_rank", "--module", "harness.worker", *worker_args]
    raise ValueError(f"unknown launcher {res['launcher']!r}")


def deepspeed_gpus(res: dict) -> list[str]:
    """DeepSpeed's runner ignores CUDA_VISIBLE_DEVICES once --num_gpus is given and takes GPUs 0..N-1; inside
    a Ray task (or any job given some GPUs) those belong to someone else: name the granted ones instead."""
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if res["hostfile"] or res["nodes"] > 1 or not visible or not all(d.isdigit() for d in visible):
        return ["--num_gpus", str(res["gpus"]), "--num_nodes", str(res["nodes"])]
    if len(visible) < res["gpus"]:
        raise RuntimeError(f"resources.gpus={res['gpus']} but CUDA_VISIBLE_DEVICES={','.join(visible)} grants "
                           f"{len(visible)} GPU(s); lower resources.gpus or grant more")
    return ["--include", "localhost:" + ",".join(visible[:res["gpus"]])]


SHM = Path("/dev/shm")


def release_shm(port: int) -> list[str]:
    """Unlink DeepSpeed's CPU shared-memory workspaces of the ranks launched on `port`; returns their names.

    On CPU every rank maps a 66 MB segment `deepspeed_allreduce_buffer_<uid>_<MASTER_ADDR>_<port>_<rank>`
    (deepspeed/ops/csrc/cpu/comm/shm.cpp) that nothing unlinks: each CPU DeepSpeed stage would leave
    66 MB x ranks of RAM in /dev/shm until reboot, and a later launch that draws the same port maps the
    stale segments with a finished run's collective state. Called before and after each launch; on a
    multi-node hostfile run only this node's segments are reachable."""
    gone = []
    for f in SHM.glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*_{port}_*"):
        f.unlink(missing_ok=True)
        gone.append(f.name)
    return gone


def worker_env() -> dict:
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if not cuda:
        env.setdefault("OMP_NUM_THREADS", "1")     # gloo ranks share the cores
    else:
        env["TORCH_CUDA_ARCH_LIST"] = env.get("TORCH_CUDA_ARCH_LIST", "9.0").replace("9.0a", "9.0")   # DeepSpeed 0.19.8 JIT
    return env


def follow(proc, path: Path, sink, poll: float = 1.0) -> None:
    """Until `proc` exits, hand each complete row rank 0 appends to the training log to `sink` (the stage's
    progress bar and MLflow metrics move while a launched stage trains, not once it is over)."""
    sent = 0      # bytes handed on; each poll reads only what was appended since
    while True:
        exited = proc.poll() is not None      # read once more after the exit: the last rows
        if sink is not None and path.exists():
            with open(path, "rb") as f:
                f.seek(sent)
                data = f.read()
            end = data.rfind(b"\n") + 1      # a row being written has no newline yet: next time
            for line in data[:end].decode().splitlines():
                if line.strip():
                    sink(json.loads(line))
            sent += end
        if exited:
            return
        time.sleep(poll)


def run_stage(m, stage, store, sink=None, echo=print) -> dict:
    """Train `stage` in launched workers; returns rank 0's metrics (as ground_truth/transfer would).
    The worker re-plans `m` (for the splits and to check that its stage has the driver's key) and trains
    from the stage's spec, with the DeepSpeed config generated here."""
    r = zero.resolve(stage.spec)
    cfg = zero.validate(zero.ds_config(stage.spec, r), r["world"])
    wd = workdir(stage)
    wd.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.json", "worker.log"):
        (wd / stale).unlink(missing_ok=True)
    raw = m.model_dump(mode="json")
    raw["output"]["dir"] = stage.spec.output_dir    # a Ray task trains in its own scratch dir (ray_task)
    write_json(wd / "manifest.json", raw)
    write_json(wd / "ds_config.json", cfg)
    args = ["--manifest", str(wd / "manifest.json"), "--stage", stage.key, "--ds-config", str(wd / "ds_config.json"),
            "--workdir", str(wd)]
    port = free_port()
    cmd = command(r, port, args)
    echo(f"    {zero.describe(r)}")
    release_shm(port)
    train_log = store.dir(stage.key) / "log.jsonl"
    train_log.unlink(missing_ok=True)      # an interrupted attempt's rows are not this attempt's
    try:
        with open(wd / "worker.log", "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=worker_env())
            with proc:          # on any exception (Ctrl-C included) the launcher is killed, as subprocess.run does
                try:
                    follow(proc, train_log, sink)
                except BaseException:
                    proc.kill()
                    raise
    finally:
        release_shm(port)
    if proc.returncode != 0 or not (wd / "metrics.json").exists():
        tail = "".join((wd / "worker.log").read_text(errors="replace").splitlines(True)[-40:])
        raise RuntimeError(f"{stage.slug}: the {r['launcher']} workers failed (exit {proc.returncode}); "
                           f"log: {wd / 'worker.log'}\n{tail}")
    metrics = json.loads((wd / "metrics.json").read_text())
    metrics["resources"] = {k: r[k] for k in ("launcher", "world", "zero_stage", "offload_optimizer", "offload_params")}
    return metrics
