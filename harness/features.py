"""Linear probes on cached features. With the backbone frozen and dropout off, a probe's forward is
head(pool(backbone(x))) with a constant inner part, so the pooled features are computed once per text
and model and reused by every stage and epoch: ceilings and students of one model share them.
Results equal the full-model probe up to float noise; the cache is content-addressed by the model's
feature identity and each text's hash, and lives in <output.dir>/features/. Vision's frozen features
(vision/features.py) live in the same store, keyed by each image's content hash."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import torch
from torch import nn

from .store import _fsync, content_key


class HeadOnly(nn.Module):
    """The classifier's head applied to precomputed features."""

    def __init__(self, score: nn.Linear):
        super().__init__()
        self.score = score

    def forward(self, features, **_):
        return self.score(features.to(self.score.weight.dtype))


def fresh_head(like: nn.Linear, how: str) -> nn.Linear:
    """A new head shaped like `like`, initialised as configured (every stage starts from scratch)."""
    from .models import init_head

    head = nn.Linear(like.in_features, like.out_features, bias=False, dtype=like.weight.dtype)
    init_head(head, how)
    return head


class FeatureCollator:
    def __call__(self, batch: list[dict]) -> dict:
        out = {"features": torch.stack([b["features"] for b in batch])}
        if "soft_label" in batch[0]:
            out["soft_label"] = torch.tensor([b["soft_label"] for b in batch], dtype=torch.float32)
        return out


_SHARED: dict[Path, tuple[dict, set, dict]] = {}   # store dir -> (features by hash, shards read, meta)


class FeatureCache:
    """One feature store for every kind: <root>/features/<key16>/, key16 = the content key of what the
    features depend on (model, weights, pooling or transform, the code that computes them). Rows are
    keyed by their input's content hash (a text's, an image's). Shards are append-only; each is written
    to a temporary name, fsynced and renamed, so the done rule is "a *.pt shard exists": a killed
    writer leaves only a dot-file that is never read. `shared=True` keeps what was read in a process-wide
    memo keyed by the store's own directory (vision: every stage of a run reads the same features)."""

    def __init__(self, root: str | Path, identity: dict, shared: bool = False):
        self.key = content_key(identity)
        self.dir = Path(root) / "features" / self.key[:16]
        self._state = _SHARED.setdefault(self.dir.resolve(), ({}, set(), {})) if shared else ({}, set(), {})

    @property
    def meta(self) -> dict:
        """What the shards' writers recorded (vision: seconds, images/s, weights sha256, device)."""
        return {**self._state[2], "key": self.key}

    def _load(self) -> dict[str, torch.Tensor]:
        mem, seen, meta = self._state
        for shard in sorted(self.dir.glob("*.pt")):      # also shards another process wrote meanwhile
            if shard.name not in seen:
                data = torch.load(shard, weights_only=True)
                mem.update(zip(data["hashes"], data["features"]))
                meta.update(data.get("meta") or {})
                seen.add(shard.name)
        return mem

    def fetch(self, hashes: list[str], compute) -> list[torch.Tensor]:
        """Rows for `hashes`, in order. `compute(missing_rows) -> (hashes, features[N,d], meta)` computes
        the rows not stored yet (indexes into `hashes`); its result is stored as one new shard."""
        mem = self._load()
        missing = [i for i, h in enumerate(hashes) if h not in mem]
        if missing:
            new_hashes, new, meta = compute(missing)
            mem.update(zip(new_hashes, new))
            self._state[2].update(meta or {})
            self._write(new_hashes, new, meta)
        return [mem[h] for h in hashes]

    def _write(self, hashes: list[str], features: torch.Tensor, meta: dict | None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        self._state[1].add(f"{name}.pt")                # already in memory: never read it back
        tmp = self.dir / f".{name}.tmp"
        torch.save({"hashes": hashes, "features": features, **({"meta": meta} if meta else {})}, tmp)
        _fsync(tmp)
        os.replace(tmp, self.dir / f"{name}.pt")

    def get(self, model, items: list[dict], hashes: list[str], batch: int, collate) -> list[torch.Tensor]:
        """Language probes: pooled backbone features of tokenized `items`, embedded shortest first."""
        def compute(missing):
            todo = sorted({hashes[i]: i for i in missing}.items(), key=lambda kv: len(items[kv[1]]["input_ids"]))
            return [h for h, _ in todo], embed(model, [items[i] for _, i in todo], batch, collate), None

        return self.fetch(hashes, compute)


@torch.no_grad()
def embed(model, items: list[dict], batch: int, collate) -> torch.Tensor:
    """Pooled backbone features [N,H] (float32), in the order given; rows arrive sorted by length."""
    from .models import pool

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.eval().to(device)
    chunks = []
    for start in range(0, len(items), batch):
        b = collate(items[start: start + batch])
        ids, mask = b["input_ids"].to(device), b["attention_mask"].to(device)
        hidden = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        chunks.append(pool(hidden, ids, mask, model.pooling).float().cpu())
    return torch.cat(chunks) if chunks else torch.zeros((0, 0))


def as_feature_items(items: list[dict], feats: list[torch.Tensor]) -> list[dict]:
    return [{"features": f, "soft_label": it["soft_label"]} for it, f in zip(items, feats)]
