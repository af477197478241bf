"""The reference's data flow (REFERENCE.md §1), plus seeded random sampling and carved-out test sets.

train split -> n_docs rows -> format(Random(seed)) -> shuffle(seed) -> train_test_split(0.5, seed)
   train1 = the weak half (ground-truth runs train here), train2 = the student half (weak labels)
test split  -> n_test_docs rows -> format(Random(seed)) -> shuffle(seed)

Drawn rows are validated before formatting (harness.data.validate). With `fidelity.dedup: text` (the
`fixed` profile) a formatted text is used once: repeats in the training draw are dropped before the
halves are split, and test texts that occur in the training draw are dropped from the test set. The
reference does not deduplicate (`dedup: none`); the overlap is then counted and logged.
"""
from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, field

import numpy as np

from . import load_rows, local_path
from .declared import spec_of
from .validate import DataError, check_rows

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


def _format(spec, rows, indices: list[int], split: str, seed: int, path=None, skip: set | None = None):
    """Formatted rows, shuffled. Texts in `skip` (and repeats, when `skip` is given) are dropped after
    formatting, so the formatter RNG is consumed exactly as without deduplication."""
    import datasets

    chosen = rows.select(indices)
    check_rows(spec, split, path, zip(indices, chosen))
    rng = random.Random(seed)
    out = {"id": [], "txt": [], "hard_label": [], "soft_label": []}
    for idx, row in zip(indices, chosen):
        txt, label = spec.formatter(row, rng)
        if skip is not None:
            if txt in skip:
                continue
            skip.add(txt)
        out["id"].append(f"{split}:{idx}")
        out["txt"].append(txt)
        out["hard_label"].append(int(label))
        out["soft_label"].append([1.0 - label, float(label)])
    return datasets.Dataset.from_dict(out).shuffle(seed=seed)


def splits_for(m, seed: int) -> "Splits":
    """The splits of a manifest's run seed, with the sampling and dedup its fidelity resolves to."""
    fid = m.fidelity.resolved()
    return make_splits(m.dataset.model_copy(update={"sampling": m.dataset.sampling or fid["sampling"]}), seed,
                       dedup=fid.get("dedup", "none"))


def make_splits(data, seed: int, dedup: str = "none") -> Splits:
    """`data` is a manifest DataConfig. Deterministic in (data config, source bytes, seed, dedup)."""
    spec = spec_of(data)
    train_split = data.splits.train or spec.train_split
    rows = load_rows(spec, train_split, data.source, data.revision)
    if data.splits.test == "cut" and data.n_test_docs >= len(rows):
        raise DataError(f"dataset {data.name!r}: `test: cut` takes n_test_docs={data.n_test_docs} of the "
                        f"{len(rows)} rows of split {train_split!r} and leaves none to train on; lower n_test_docs")
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

    seen = set() if dedup == "text" else None
    train = _format(spec, rows, train_idx, train_split, seed, local_path(spec, train_split, data.source), seen)
    n_train_dupes = len(train_idx) - len(train)
    test = _format(spec, test_rows, test_idx, test_split, seed, local_path(spec, test_split, data.source), seen)
    if len(train) < 2 or len(test) == 0:
        raise DataError(f"dataset {data.name!r}: {len(train)} training and {len(test)} test rows are left "
                        f"(after deduplication); raise n_docs / n_test_docs or check the data")
    halves = train.train_test_split(test_size=0.5, seed=seed)
    splits = Splits(halves["train"].to_list(), halves["test"].to_list(), test.to_list())
    check_disjoint(splits, texts=dedup == "text")
    overlap = count_overlap(splits)
    dedup_info = {"mode": dedup, "train_dropped": n_train_dupes, "test_dropped": len(test_idx) - len(test),
                  "test_in_train": overlap["test_in_train"], "across_halves": overlap["across_halves"]}
    if dedup == "text" and (dedup_info["train_dropped"] or dedup_info["test_dropped"]):
        log.warning("%s seed %d: dropped %d repeated training texts and %d test texts seen in training "
                    "(fidelity.dedup: text)", data.name, seed, n_train_dupes, dedup_info["test_dropped"])
    elif overlap["test_in_train"] or overlap["across_halves"]:
        log.warning("%s seed %d: %d test texts also occur in the training halves and %d texts are in both "
                    "halves (fidelity.dedup: none, as the reference; `dedup: text` drops them)", data.name, seed,
                    overlap["test_in_train"], overlap["across_halves"])
    splits.info = {"dedup": dedup_info, **{
        name: {"rows": len(part), "ids_digest": ids_digest(part),
               "positive_frac": round(sum(r["hard_label"] for r in part) / max(1, len(part)), 4)}
        for name, part in (("train1", splits.train1), ("train2", splits.train2), ("test", splits.test))}}
    return splits


def count_overlap(splits: Splits) -> dict:
    """Formatted texts shared by the two halves, and test texts that occur in either half."""
    a, b, t = ({r["txt"] for r in p} for p in (splits.train1, splits.train2, splits.test))
    return {"across_halves": len(a & b), "test_in_train": len((a | b) & t)}


def check_disjoint(splits: Splits, texts: bool = False) -> None:
    """The weak and student halves never overlap, and neither contains a test row (by row id; with
    `texts`, also by formatted text: a duplicated row is the same example under another id)."""
    # Raised explicitly, not with `assert`: a leakage check must not vanish under `python -O`.
    for field in ("id", "txt") if texts else ("id",):
        a, b, t = ({r[field] for r in p} for p in (splits.train1, splits.train2, splits.test))
        what = "examples" if field == "id" else "texts"
        if a & b:
            raise ValueError(f"train halves overlap in {len(a & b)} {what}")
        if (a | b) & t:
            raise ValueError(f"{len((a | b) & t)} test {what} leaked into training halves")
