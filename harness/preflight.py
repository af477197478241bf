"""What a manifest needs that this machine lacks, found before any compute: models missing from an
offline cache, hub datasets while offline, local files, and a GPU for billion-parameter models."""
from __future__ import annotations

import functools
import os

from .data import DATA_DIR_ENV, local_path
from .data.declared import spec_of
from .manifest import Manifest
from .model_table import MODELS, is_local

GPU_PARAMS = 1e9   # above this, CPU training is not a plan


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def problems(m: Manifest) -> list[str]:
    out = []
    spec = spec_of(m.dataset)
    splits = [m.dataset.splits.train or spec.train_split]
    if m.dataset.splits.test != "cut":
        splits.append(m.dataset.splits.test or spec.test_split)
    for split in splits:
        try:
            path = local_path(spec, split, m.dataset.source)
        except FileNotFoundError as e:
            out.append(str(e))
            continue
        if path is None and offline():
            out.append(f"dataset {m.dataset.name!r} ({spec.hub_id}, split {split!r}) comes from the hub, but "
                       f"HF_HUB_OFFLINE=1: run where the hub is reachable, or set {DATA_DIR_ENV} to local files")
    for mc in m.models:
        hub_id, revision = m.hub_id(mc)
        if is_local(hub_id):
            if not os.path.isdir(os.path.expanduser(hub_id)):
                out.append(f"model {mc.label!r}: local directory {hub_id} does not exist")
        elif offline() and not _cached(hub_id, revision):
            out.append(f"model {mc.label!r} ({hub_id}) is not in the Hugging Face cache and HF_HUB_OFFLINE=1: "
                       f"run where the hub is reachable, or fill the cache first")
        entry = MODELS.get(mc.id)
        if entry and entry.params and entry.params >= GPU_PARAMS and not _cuda():
            out.append(f"model {mc.label!r} has {entry.params / 1e9:.1f}B parameters and needs a GPU; none is visible")
    return out


def _cached(hub_id: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, "config.json", revision=revision)
    return isinstance(found, str)


@functools.lru_cache(maxsize=1)
def _cuda() -> bool:
    import torch   # only asked for a GPU-sized model: `w2s plan` of small models never imports torch

    return torch.cuda.is_available()
