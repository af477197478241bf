"""The reference's data flow (REFERENCE.md §1), plus seeded random sampling and carved-out test sets.

train split -> n_docs rows -> format(Random(seed)) -> shuffle(seed) -> train_test_split(0.5, seed)
   train1 = the weak half (ground-truth runs train here), train2 = the student half (weak labels)
test split  -> n_test_docs rows -> format(Random(seed)) -> shuffle(seed)
"""
from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, field

import numpy as np

from . import DATASETS, load_rows

log = logging.getLogger(__name__)


@dataclass
class Splits:
    train1: list[dict]
    train2: list[dict]
    test: list[dict]
    info: dict = field(default_factory=dict)

    def part(self, name: str) -> list[dict]:
        return {"train1": self.train1, "train2": self.train2, "test": self.test}[name]


def ids_digest(rows: list[dict]) -> str:
    return hashlib.sha256("\n".join(sorted(r["id"] for r in rows)).encode()).hexdigest()[:16]


def text_hash(txt: str) -> str:
    return hashlib.sha256(txt.encode()).hexdigest()[:16]


def _choose(pool: list[int], n: int, sampling: str, seed: int, what: str, name: str) -> list[int]:
    if n > len(pool):
        log.warning("%s: asked for %d %s rows, only %d exist; using all", name, n, what, len(pool))
        n = len(pool)
    if sampling == "head":     # the reference: the first n rows; the seed does not choose documents
        return pool[:n]
    picked = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return sorted(pool[i] for i in picked)   # keep row order: the formatter RNG is consumed in row order


def _format(spec, rows, indices: list[int], split: str, seed: int):
    import datasets

    rng = random.Random(seed)
    out = {"id": [], "txt": [], "hard_label": [], "soft_label": []}
    for idx, row in zip(indices, rows.select(indices)):
        txt, label = spec.formatter(row, rng)
        out["id"].append(f"{split}:{idx}")
        out["txt"].append(txt)
        out["hard_label"].append(int(label))
        out["soft_label"].append([1.0 - label, float(label)])
    return datasets.Dataset.from_dict(out).shuffle(seed=seed)


def make_splits(data, seed: int) -> Splits:
    """`data` is a manifest DataConfig. Deterministic in (data config, source bytes, seed)."""
    spec = DATASETS[data.name]
    train_split = data.splits.train or spec.train_split
    rows = load_rows(spec, train_split, data.source, data.revision)
    if data.splits.test == "cut":
        # A test set carved out of the train source by a fixed cut_seed: the same for every run seed.
        perm = np.random.default_rng(data.cut_seed).permutation(len(rows)).tolist()
        test_pool, train_pool = sorted(perm[: data.n_test_docs]), sorted(perm[data.n_test_docs:])
        test_rows, test_split = rows, train_split
    else:
        test_split = data.splits.test or spec.test_split
        test_rows = load_rows(spec, test_split, data.source, data.revision)
        test_pool, train_pool = list(range(len(test_rows))), list(range(len(rows)))
    train_idx = _choose(train_pool, data.n_docs, data.sampling, seed, "train", data.name)
    test_idx = _choose(test_pool, data.n_test_docs, data.sampling, seed + 1_000_003, "test", data.name)

    train = _format(spec, rows, train_idx, train_split, seed)
    halves = train.train_test_split(test_size=0.5, seed=seed)
    splits = Splits(halves["train"].to_list(), halves["test"].to_list(),
                    _format(spec, test_rows, test_idx, test_split, seed).to_list())
    check_disjoint(splits)
    splits.info = {
        name: {"rows": len(part), "ids_digest": ids_digest(part),
               "positive_frac": round(sum(r["hard_label"] for r in part) / max(1, len(part)), 4)}
        for name, part in (("train1", splits.train1), ("train2", splits.train2), ("test", splits.test))}
    return splits


def check_disjoint(splits: Splits) -> None:
    """The weak and student halves never overlap, and neither contains a test row."""
    # Raised explicitly, not with `assert`: a leakage check must not vanish under `python -O`.
    a, b, t = ({r["id"] for r in p} for p in (splits.train1, splits.train2, splits.test))
    if a & b:
        raise ValueError(f"train halves overlap in {len(a & b)} examples")
    if (a | b) & t:
        raise ValueError(f"{len((a | b) & t)} test examples leaked into training halves")
