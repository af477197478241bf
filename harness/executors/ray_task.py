"""One stage inside a Ray task, on whichever node Ray picked (harness.executors.ray_backend submits it).

The task needs no shared filesystem: it gets the manifest, the stage and its teacher's files as
arguments, trains in a private scratch output dir on its node, and returns the stage directory's files
as bytes; the driver alone writes the stage store and MLflow. What a node needs locally is what any
`w2s run` needs: the harness at the driver's version (checked: a stage trained by other code would
not match its key), the data (W2S_DATA_DIR or the HF cache) and the model weights.

Scratch: $W2S_RAY_SCRATCH (default <tmp>/w2s-ray) holds a per-task directory, deleted when the task
ends, and `features/`, the linear-probe feature cache shared by the tasks of that node.
`attempts.jsonl` there gets one line per stage attempt (a retried task shows up twice).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path


def scratch_root() -> Path:
    return Path(os.environ.get("W2S_RAY_SCRATCH") or Path(tempfile.gettempdir()) / "w2s-ray")


def code_mismatch(m, stage) -> str | None:
    """Why this node's harness cannot train `stage` as keyed, or None."""
    from .. import __version__
    from ..code_identity import stage_code

    if stage.identity.get("harness") != __version__:
        return f"harness {__version__} here, {stage.identity.get('harness')} on the driver"
    if stage.identity.get("code") != stage_code(m.dataset.name, stage.loss["name"]):
        return "its harness source differs from the driver's (code digests differ)"
    return None


def train(m, stage, teacher_files: dict | None) -> dict:
    """Train `stage`; returns {"metrics", "files": {name: bytes}, "host", "seconds"}."""
    from ..store import StageStore

    started = time.time()
    why = code_mismatch(m, stage)
    if why:
        raise RuntimeError(f"{stage.slug}: node {socket.gethostname()} cannot train this stage: {why}. Fix: "
                           f"install the same w2s-harness on every Ray node (the same image)")
    root = scratch_root()
    (root / "features").mkdir(parents=True, exist_ok=True)
    with open(root / "attempts.jsonl", "a") as f:      # one short O_APPEND write: lines never interleave
        f.write(json.dumps({"key": stage.key, "slug": stage.slug, "pid": os.getpid(), "nice": os.nice(0),
                            "host": socket.gethostname(), "t": started}) + "\n")
    task_dir = root / "tasks" / f"{stage.key[:16]}-{uuid.uuid4().hex[:8]}"
    task_dir.mkdir(parents=True)
    try:
        os.symlink(root / "features", task_dir / "features")
        # the same stage (same key: output.dir is operational), trained in this task's scratch dir
        local = dataclasses.replace(stage, spec=dataclasses.replace(stage.spec, output_dir=str(task_dir)))
        store = StageStore(task_dir)
        if teacher_files:
            d = store.dir(stage.teacher)
            d.mkdir(parents=True)
            for name, data in teacher_files.items():
                (d / name).write_bytes(data)
        metrics = _run(m, local, store)
        files = {f.name: f.read_bytes() for f in store.files(stage.key)}
        return {"metrics": metrics, "files": files, "host": socket.gethostname(),
                "seconds": round(time.time() - started, 1)}
    finally:
        shutil.rmtree(task_dir, ignore_errors=True)


def _run(m, stage, store) -> dict:
    from .. import launch, protocol
    from ..data.splits import splits_for

    if launch.launched(stage):   # DeepSpeed / torchrun ranks on the GPUs Ray gave this task
        return launch.run_stage(m, stage, store, None, echo=lambda *_: None)
    fn = protocol.ground_truth if stage.kind == "gt" else protocol.transfer
    return fn(stage, splits_for(m, stage.seed), store, None)
