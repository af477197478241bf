"""What a manifest needs that this machine lacks, found before any compute: models missing from an
offline cache, hub datasets while offline, local files, and a GPU for billion-parameter models."""
from __future__ import annotations

import difflib
import functools
import os

from .data import DATA_DIR_ENV, data_dir, local_path
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
            out.append(_missing_file(spec, split, m.dataset.source, str(e)))
            continue
        if path is None and offline():
            out.append(_hub_split_offline(spec, split, m.dataset.source))
    for mc in m.models:
        hub_id, revision = m.hub_id(mc)
        if is_local(hub_id):
            if not os.path.isdir(os.path.expanduser(hub_id)):
                out.append(f"model {mc.label!r}: local directory {hub_id} does not exist")
        elif not _cached(hub_id, revision):
            if offline():
                out.append(f"model {mc.label!r} ({hub_id}) is not in the Hugging Face cache and HF_HUB_OFFLINE=1: "
                           f"run where the hub is reachable, or fill the cache first{nearest_model(hub_id)}")
            elif (why := _unreachable(hub_id, revision)):     # now, not after minutes of retries mid-sweep
                out.append(f"model {mc.label!r} ({hub_id}) is not in the Hugging Face cache and {why}"
                           f"{nearest_model(hub_id)}")
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


def cached_models() -> list[str]:
    """Model repo ids in the Hugging Face cache (its folder names: models--org--name)."""
    from huggingface_hub.constants import HF_HUB_CACHE

    try:
        names = os.listdir(HF_HUB_CACHE)
    except OSError:
        return []
    return sorted(n[len("models--"):].replace("--", "/") for n in names if n.startswith("models--"))


def nearest_model(hub_id: str) -> str:
    """'; did you mean ...?' over the cached models and the model table (names and hub ids)."""
    cached = cached_models()
    close = difflib.get_close_matches(hub_id, cached, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r} (in the cache)?"
    table = sorted({*MODELS, *(e.hub_id for e in MODELS.values())})
    close = difflib.get_close_matches(hub_id, table, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r} (in the model table)?" if close else ""


def _unreachable(hub_id: str, revision: str | None) -> str | None:
    """Why the hub cannot serve this model, asked once with a short timeout; None when it can."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        HfApi().model_info(hub_id, revision=revision, timeout=10, files_metadata=False)
    except GatedRepoError:
        return None        # gated: the download step names the missing token
    except RevisionNotFoundError:
        return f"the hub has no revision {revision!r} of it: fix `revision`"
    except RepositoryNotFoundError:
        return "the hub has no such model (or it is private): fix the id"
    except Exception as e:  # noqa: BLE001 - connection refused, DNS, timeout, proxy: all mean "not now"
        return (f"the hub is unreachable ({type(e).__name__}: {str(e)[:120]}): fill the cache where it is "
                f"reachable (docs/footguns.md), or set HF_HUB_OFFLINE=1 to use only the cache")
    return None


def _hub_split_offline(spec, split: str, source: str | None) -> str:
    root = data_dir(source)
    if root is None:
        return (f"dataset {spec.name!r} ({spec.hub_id}, split {split!r}) comes from the hub, but HF_HUB_OFFLINE=1: "
                f"run where the hub is reachable, or set {DATA_DIR_ENV} to the shared data folder")
    # W2S_DATA_DIR is set: telling the user to set it is no fix; the split itself has no local file
    local = sorted(spec.local_files)
    fix = (f"train and test on a local split instead: dataset.splits: {{train: {local[0]}, test: cut}} "
           f"(docs/footguns.md, 'Single-split local data')" if local else
           f"put {spec.name}/{split}.jsonl in {root}, or run where the hub is reachable")
    return (f"dataset {spec.name!r}: split {split!r} has no local file in {root} ({DATA_DIR_ENV} or dataset.source; "
            f"local splits: {local or 'none'}), so it would come from the hub, but HF_HUB_OFFLINE=1: {fix}")


def _missing_file(spec, split: str, source: str | None, message: str) -> str:
    root = data_dir(source)
    if root is None:
        return message
    if not root.is_dir():
        return f"dataset {spec.name!r}: data folder {root} does not exist ({DATA_DIR_ENV} or dataset.source): fix the path"
    rel = spec.local_files.get(split)
    if rel is None:       # an explicit dataset.source without this split
        return _hub_split_offline(spec, split, source).replace(", but HF_HUB_OFFLINE=1", " (dataset.source demands one)")
    return (f"dataset {spec.name!r}: {root / rel} does not exist, though {root} does: copy {rel} into it from the "
            f"shared data folder (check it against its SHA256SUMS), or point {DATA_DIR_ENV} / dataset.source at "
            f"the folder that has it")


def use_cache_if_hub_unreachable(m: Manifest, echo=print) -> bool:
    """Everything the run needs is in the cache but the hub does not answer (no network, no
    HF_HUB_OFFLINE): without this, every model load asks the hub for optional files (adapter_config.json,
    ...) with five retries each, minutes per stage. Ask once, with a short timeout; if it fails, go offline
    for this run and its workers (the environment is inherited) and say so. True when it switched."""
    if offline():
        return False
    hub = [h for h in (m.hub_id(mc) for mc in m.models) if not is_local(h[0])]
    if not hub or not all(_cached(*h) for h in hub):
        return False         # a model must be downloaded: `problems` says whether the hub can serve it
    if _unreachable(*hub[0]) is None:
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    import huggingface_hub.constants as hf   # read once at import: set the flag it already holds too

    hf.HF_HUB_OFFLINE = True
    echo("warning: the Hugging Face hub is unreachable; every model is in the cache, so this run uses the "
         "cache only (HF_HUB_OFFLINE=1; set it yourself to skip this check)")
    return True
