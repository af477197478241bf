"""Dataset registry: each entry is a loader (hub id + pinned revision, or a local file with the hub's
columns) plus a formatter. `W2S_DATA_DIR` (or a manifest's `dataset.source`) points at local files laid
out as in ../shared/data; otherwise the hub is used.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..store import sha256_file
from . import formatters as fmt
from .validate import DataError  # noqa: F401  (raised by load_rows and make_splits)

DATA_DIR_ENV = "W2S_DATA_DIR"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    formatter: Callable
    hub_id: str
    train_split: str
    test_split: str
    revision: str | None = None           # None: unpinned upstream; the resolved commit is recorded
    hub_kwargs: dict = field(default_factory=dict)
    local_files: dict[str, str] = field(default_factory=dict)  # hub split name -> path under data dir
    warning: str = ""       # printed by `w2s validate`/`run` for every manifest on this dataset (lint)
    # The raw columns the formatter reads (text | bool | label) and the label set (harness.data.validate).
    fields: dict[str, str] = field(default_factory=dict)
    labels: tuple = (0, 1)
    paths: dict[str, str] = field(default_factory=dict)  # split -> absolute file (declared datasets; wins over all)


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in DATASETS:      # a second registration would silently replace the first
        raise ValueError(f"dataset {spec.name!r} is already registered; give the new one another name")
    DATASETS[spec.name] = spec
    return spec


SCIQ_FIELDS = {"question": "text", "correct_answer": "text", "distractor1": "text", "distractor2": "text",
               "distractor3": "text"}
register(DatasetSpec("amazon_polarity", fmt.amazon_polarity, "fancyzhx/amazon_polarity", "train", "test",
                     fields={"title": "text", "content": "text", "label": "label"}))
register(DatasetSpec("sciq", fmt.sciq, "allenai/sciq", "train", "test", fields=SCIQ_FIELDS))
register(DatasetSpec("boolq", fmt.boolq, "google/boolq", "train", "validation",
                     local_files={"validation": "boolq/validation.jsonl"},
                     fields={"passage": "text", "question": "text", "answer": "bool"}))
# cosmos_qa was a loading-script dataset; datasets>=4 refuses scripts, so read the hub's parquet branch.
register(DatasetSpec("cosmos_qa", fmt.cosmos_qa, "allenai/cosmos_qa", "train", "validation",
                     revision="refs/convert/parquet",
                     local_files={"validation": "cosmos_qa/validation.jsonl"},
                     fields={"context": "text", "question": "text", **{f"answer{i}": "text" for i in range(4)},
                             "label": "label"}, labels=(0, 1, 2, 3)))
register(DatasetSpec("anthropic_hh", fmt.anthropic_hh, "Anthropic/hh-rlhf", "train", "test",
                     local_files={"test": "anthropic_hh/harmless-base-test.jsonl.gz"},
                     warning="anthropic_hh (single transcript) is at chance in the reference: its PGR is meaningless (Q20)",
                     fields={"chosen": "text", "rejected": "text"}))
register(DatasetSpec("sst2", fmt.sst2, "stanfordnlp/sst2", "train", "validation",
                     local_files={"train": "sst2/train.jsonl", "validation": "sst2/validation.jsonl"},
                     fields={"sentence": "text", "label": "label"}))
# ARC-Easy written in SciQ's schema: the offline stand-in for SciQ (not SciQ; see ../shared/data).
register(DatasetSpec("arc_easy_sciq", fmt.sciq, "allenai/ai2_arc", "test", "test",
                     local_files={"test": "arc_easy_sciq_format/test.jsonl"},
                     fields=SCIQ_FIELDS))


def data_dir(source: str | None = None) -> Path | None:
    """The local data directory: the manifest's `dataset.source`, else $W2S_DATA_DIR, else None (hub)."""
    chosen = source or os.environ.get(DATA_DIR_ENV)
    return Path(chosen).expanduser() if chosen else None


def local_path(spec: DatasetSpec, split: str, source: str | None) -> Path | None:
    """The local file for a split, or None for the hub. $W2S_DATA_DIR is a place to look first: a
    dataset it has no file for comes from the hub. A manifest's explicit `source` must have the file."""
    if split in spec.paths:
        return Path(spec.paths[split])
    if spec.paths and not spec.hub_id:
        raise FileNotFoundError(f"dataset {spec.name!r} has no file for split {split!r} (files: {', '.join(spec.paths)}) "
                                f"and no hub id; add it under dataset.declare.files, or set dataset.splits "
                                f"(`test: cut` carves a test set out of the train split)")
    root = data_dir(source)
    if root is None:
        return None
    rel = spec.local_files.get(split)
    if rel is None and (root / spec.name / f"{split}.jsonl").is_file():   # the layout's default file name
        rel = f"{spec.name}/{split}.jsonl"
    if rel is None and not source:
        return None
    if rel is None:
        raise FileNotFoundError(
            f"dataset {spec.name!r} has no local file for split {split!r} "
            f"(local splits: {sorted(spec.local_files) or 'none'}); set dataset.splits to use one of them "
            f"and `test: cut` to carve a test set out of it, or unset {DATA_DIR_ENV} to use the hub")
    path = root / rel
    if not path.exists():
        raise FileNotFoundError(f"dataset {spec.name!r}: local file {path} does not exist "
                                f"(is {DATA_DIR_ENV} pointing at the shared data folder?)")
    return path



def load_rows(spec: DatasetSpec, split: str, source: str | None, revision: str | None):
    """Rows of one source split as a `datasets.Dataset`, from a local file or the hub."""
    import datasets

    from .validate import check_columns, scan_file

    path = local_path(spec, split, source)
    if path is not None:
        if not path.is_file():
            raise DataError(f"{path}: not a file; dataset {spec.name!r} split {split!r} is a data file")
        kind = "csv" if path.suffix == ".csv" else "parquet" if path.suffix == ".parquet" else "json"
        try:
            rows = datasets.load_dataset(kind, data_files=str(path), split="train")
        except Exception as e:      # pyarrow/datasets errors name neither the line nor the field
            if kind != "json":
                raise DataError(f"{path}: cannot be read as {kind}: {type(e).__name__}: {e}") from None
            raise scan_file(spec, split, path, e) from None
    else:
        rows = datasets.load_dataset(spec.hub_id, split=split, revision=revision or spec.revision,
                                     **spec.hub_kwargs)
    check_columns(spec, split, path, rows.column_names, len(rows))
    return rows


def fingerprint(spec: DatasetSpec, splits: list[str], source: str | None, revision: str | None) -> dict:
    """What identifies the bytes a run reads: file hashes for local data, hub id + revision otherwise."""
    out = {}
    for split in sorted(set(splits)):
        path = local_path(spec, split, source)
        out[split] = (f"sha256:{sha256_file(path)}" if path is not None
                      else f"hub:{spec.hub_id}@{revision or spec.revision or 'unpinned'}")
    return out
