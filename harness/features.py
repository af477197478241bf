"""Linear probes on cached features. With the backbone frozen and dropout off, a probe's forward is
head(pool(backbone(x))) with a constant inner part, so the pooled features are computed once per text
and model and reused by every stage and epoch: ceilings and students of one model share them.
Results equal the full-model probe up to float noise; the cache is content-addressed by the model's
feature identity and each text's hash, and lives in <output.dir>/features/."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import torch
from torch import nn

from .store import content_key


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


class FeatureCache:
    def __init__(self, root: str | Path, identity: dict):
        self.dir = Path(root) / "features" / content_key(identity)[:16]
        self._mem: dict[str, torch.Tensor] | None = None

    def _load(self) -> dict[str, torch.Tensor]:
        if self._mem is None:
            self._mem = {}
            for shard in sorted(self.dir.glob("*.pt")):
                data = torch.load(shard, weights_only=True)
                self._mem.update(zip(data["hashes"], data["features"]))
        return self._mem

    def get(self, model, items: list[dict], hashes: list[str], batch: int, collate) -> list[torch.Tensor]:
        mem = self._load()
        todo = sorted({h: i for i, h in enumerate(hashes) if h not in mem}.items(), key=lambda kv: len(items[kv[1]]["input_ids"]))
        if todo:
            new = embed(model, [items[i] for _, i in todo], batch, collate)
            mem.update(zip([h for h, _ in todo], new))
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.dir / f".{uuid.uuid4().hex}.tmp"
            torch.save({"hashes": [h for h, _ in todo], "features": new}, tmp)
            os.replace(tmp, self.dir / f"{uuid.uuid4().hex}.pt")   # shards are append-only
        return [mem[h] for h in hashes]


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
