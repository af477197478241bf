"""Frozen-model outputs (strong features, pretrained weak logits), computed once per (model, weights,
transform, code) and image, and kept in the feature store the language probes use
(harness.features.FeatureCache: <output.dir>/features/<key16>/, rows keyed by each image's content hash,
append-only shards written atomically; Q27: the reference recomputed embeddings on every run)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from harness.features import FeatureCache

from . import data, models


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def identity(r: dict, what: str) -> dict:
    """What one image's output depends on besides its bytes (the rows are keyed by those)."""
    from harness.code_identity import code_digest

    # the code that builds the model and feeds it images: a change there must not reuse old features
    return {"kind": "vision", "what": what, "model": {k: r[k] for k in ("id", "weights", "sha256", "hub_commit")},
            "transform": data.transform_id(r["transform"], r["image_size"]), "code": code_digest(models.load, data.batches)}


def outputs(out_dir: str | Path, r: dict, ds: data.ImageSet, what: str, batch: int, echo=print) -> tuple[np.ndarray, dict]:
    """(N, d) float32 features or logits of `ds` in its order, and the store's metadata (its key, the
    seconds and weights sha256 recorded by the run that computed them)."""
    cache = FeatureCache(out_dir, identity(r, what), shared=True)

    def compute(missing: list[int]):
        # all images missing (the usual case): the whole set in its order, the batches of a cold run
        part = ds if len(missing) == len(ds.ids) else ds.subset(np.array(missing))
        echo(f"    {what} of {r['id']} on {len(part.ids)} images ({r['transform']} {r['image_size']}px): "
             f"computing ({cache.key[:12]})")
        arr, meta = run_model(r, part, what, batch)
        echo(f"    {what}: {tuple(arr.shape)} in {meta['seconds']:.1f}s ({meta['images_per_s']} images/s)")
        return list(part.hashes), arr, meta

    rows = cache.fetch(ds.hashes, compute)
    return torch.stack(rows).numpy(), cache.meta


def run_model(r: dict, ds: data.ImageSet, what: str, batch: int) -> tuple[torch.Tensor, dict]:
    started = time.time()
    dev = device()
    model = models.load(r).to(dev)
    fn = model.features if what == "features" else model.logits
    cpu = dev.type == "cpu"
    if cpu:   # depthwise convolutions run ~1.5-2x faster in channels_last on CPU
        model = model.to(memory_format=torch.channels_last)
    workers = 0 if cpu else min(8, (os.cpu_count() or 2) - 1)
    chunks = []
    with torch.inference_mode():          # Q27: no autograd graph (identical numbers, far less memory)
        for x in data.batches(ds, r["transform"], r["image_size"], batch, workers):
            x = x.to(dev, non_blocking=True)
            if cpu:
                x = x.contiguous(memory_format=torch.channels_last)
            chunks.append(fn(x).float().cpu())
    arr = torch.cat(chunks)
    seconds = time.time() - started
    return arr, {"seconds": round(seconds, 2), "images_per_s": round(len(arr) / max(seconds, 1e-9), 2),
                 "weights_sha256": model.weights_sha256, "device": str(dev)}
