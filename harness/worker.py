"""One rank of a launched stage: `python -m harness.worker --manifest FILE --stage KEY [-o k=v ...]`.

Every rank runs the same protocol code (ground_truth / transfer -> fine_tune), passing it the DeepSpeed
config (an argument, not a global: what a stage trains with is visible at the call); HF Trainer + DeepSpeed shard the work, gather predictions in example order and
gather logconf's batch statistics across ranks. Rank 0 alone writes the stage directory; other ranks
write to a private scratch directory (so code that reads back what it wrote still works). Nothing
here imports mlflow or datasets-backed tracking: the parent `w2s run` does the tracking.
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import sys
from pathlib import Path

from .store import StageStore, write_json


class RankStore(StageStore):
    """Rank 0: the real stage store. Other ranks: reads fall back to it, writes go to scratch."""

    def __init__(self, root, rank: int, scratch: Path):
        super().__init__(root)
        self.rank, self.scratch = rank, StageStore(scratch)

    def begin(self, key, identity):
        return super().begin(key, identity) if self.rank == 0 else self.scratch.begin(key, identity)

    def finish(self, key, metrics):
        (super().finish if self.rank == 0 else self.scratch.finish)(key, metrics)

    def write_table(self, key, name, df):
        return (super().write_table if self.rank == 0 else self.scratch.write_table)(key, name, df)

    def read_table(self, key, name, columns=None):
        if self.rank != 0 and (self.scratch.dir(key) / f"{name}.parquet").exists():
            return self.scratch.read_table(key, name, columns)
        return super().read_table(key, name, columns)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.worker", description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True, help="manifest (YAML, or the JSON `w2s run` writes)")
    ap.add_argument("--stage", required=True, help="stage key or a unique prefix (see `w2s plan`)")
    ap.add_argument("-o", "--override", dest="overrides", action="append", default=[])
    ap.add_argument("--ds-config", help="DeepSpeed config JSON (default: generated from the stage's spec)")
    ap.add_argument("--workdir", help="metrics.json and rank scratch (default: beside the stage cache)")
    ap.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)   # some launchers add it
    a = ap.parse_args(argv)
    # `kill -USR1 <rank pid>` prints every thread's Python stack into worker.log and carries on: where a
    # rank that seems hung is waiting (a collective, a JIT-build lock, a store) without stopping the run
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    import torch
    import torch._dynamo  # noqa: F401  (imported before zero.Init patches tensor creation, ENVIRONMENT.md §8)
    import transformers  # noqa: F401

    from . import launch, protocol, zero
    from .data.splits import splits_for
    from .manifest import ManifestError, load
    from .plan import build_plan

    try:
        m = load(a.manifest, a.overrides)
    except ManifestError as e:
        print("\n".join(e.problems), file=sys.stderr)
        return 2
    matches = [s for s in build_plan(m) if s.key.startswith(a.stage)]
    if len(matches) != 1:
        why = ("give a longer key (see `w2s plan`)" if len(a.stage) < 64 else
               # the driver passes the full key: the worker's own plan differs, i.e. the harness code (part of
               # every key, docs/caching.md) or the manifest changed after the driver planned
               "the harness code or the manifest changed since `w2s run` planned this stage; run it again")
        print(f"--stage {a.stage}: {len(matches)} stages match; {why}", file=sys.stderr)
        return 2
    stage = matches[0]      # stage.spec: the resolved description it trains from (harness.spec)
    cfg = json.loads(Path(a.ds_config).read_text()) if a.ds_config else zero.ds_config(stage.spec)
    world = int(os.environ.get("WORLD_SIZE", 1))
    zero.validate(cfg, world)
    import deepspeed   # its comm layer must be up before zero.Init (else it parses the config for world size 1)

    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    rank = int(os.environ.get("RANK", 0))
    wd = Path(a.workdir) if a.workdir else launch.workdir(stage)
    wd.mkdir(parents=True, exist_ok=True)
    store = RankStore(stage.spec.output_dir, rank, wd / f"rank{rank}")
    splits = splits_for(m, stage.seed)
    try:
        fn = protocol.ground_truth if stage.kind == "gt" else protocol.transfer
        metrics = fn(stage, splits, store, None, deepspeed=cfg)
        metrics["world_size"] = world
        if rank == 0:
            write_json(wd / "metrics.json", metrics)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
