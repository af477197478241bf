"""Small on-disk memos for what `w2s plan` needs but would otherwise import torch for.

Counting a model's parameters means building it from its config on the meta device, and the code digests in
stage keys (harness.code_identity) walk the imported training code; both import torch and transformers
(about 5 s on a 2-core machine). Each is a pure function of bytes we can hash without importing anything:
a parameter count of the model's config.json (plus the head/LoRA/trust flags that change it), a code digest of
the harness's own source files. So the first plan after a change pays the imports, later ones read a JSON
file. A stale entry cannot be served: its key holds the digest of everything its value depends on.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

MEMO_ENV = "W2S_MEMO_DIR"


def memo_dir() -> Path:
    return Path(os.environ.get(MEMO_ENV, "~/.cache/w2s-harness/memo")).expanduser()


def config_digest(hub_id: str, revision: str | None) -> str | None:
    """sha256 of the model's config.json in a local folder or the HF cache; None when it is not here."""
    local = Path(hub_id).expanduser()
    if local.is_dir():
        found: str | None = str(local / "config.json") if (local / "config.json").is_file() else None
    else:
        from huggingface_hub import try_to_load_from_cache   # light: no torch, no transformers

        hit = try_to_load_from_cache(hub_id, "config.json", revision=revision)
        found = hit if isinstance(hit, str) else None
    return hashlib.sha256(Path(found).read_bytes()).hexdigest() if found else None


def library_versions(*dists: str) -> dict:
    """Installed versions, read from package metadata (no import): a model built by another transformers
    may count differently."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for d in dists:
        try:
            out[d] = version(d)
        except PackageNotFoundError:
            out[d] = None
    return out


def source_digest(packages: tuple[str, ...]) -> str:
    """sha256 over every .py file of these top-level packages (path and bytes), read without importing them."""
    import importlib.util

    h = hashlib.sha256()
    for pkg in packages:
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        for f in sorted(root.rglob("*.py")):
            h.update(f"{pkg}/{f.relative_to(root).as_posix()}\n".encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def remembered(name: str, key: dict, compute: Callable[[], object]):
    """`compute()`, remembered in <memo dir>/<name>.json under `key` (which must hold a digest of every
    input the value depends on). None results are not remembered (e.g. a config that is not here yet)."""
    k = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    path = memo_dir() / f"{name}.json"
    try:
        memo = json.loads(path.read_text())
    except (OSError, ValueError):    # missing, or torn by a concurrent writer: recompute and rewrite
        memo = {}
    if k in memo:
        return memo[k]
    value = compute()
    if value is not None:
        memo[k] = value
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(memo))
            os.replace(tmp, path)    # atomic: a reader sees the old or the new memo, never half of one
        except OSError:              # a read-only home still plans, just without the memo
            pass
    return value
