"""The content-addressed stage cache: runs/stages/<key>/ holds stage.json (identity), metrics.json,
parquet predictions and, last, done.json. A stage without done.json never counts: it is recomputed."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_key(identity: dict) -> str:
    return hashlib.sha256(canonical(identity).encode()).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, obj) -> None:
    """Atomic: a reader (or a crash) never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


class StageStore:
    def __init__(self, root: str | Path):
        self.root = Path(root) / "stages"

    def dir(self, key: str) -> Path:
        return self.root / key[:16]

    def is_done(self, key: str) -> bool:
        marker = self.dir(key) / "done.json"
        return marker.exists() and json.loads(marker.read_text()).get("key") == key

    def begin(self, key: str, identity: dict) -> Path:
        """A fresh directory for a stage about to run; leftovers of a killed attempt are discarded."""
        d = self.dir(key)
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        write_json(d / "stage.json", {"key": key, "identity": identity})
        return d

    def finish(self, key: str, metrics: dict) -> None:
        d = self.dir(key)
        write_json(d / "metrics.json", metrics)
        write_json(d / "done.json", {"key": key, "finished_at": time.time()})

    def metrics(self, key: str) -> dict:
        return json.loads((self.dir(key) / "metrics.json").read_text())

    def write_table(self, key: str, name: str, df: pd.DataFrame) -> Path:
        path = self.dir(key) / f"{name}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return path

    def read_table(self, key: str, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        return pd.read_parquet(self.dir(key) / f"{name}.parquet", columns=columns)
