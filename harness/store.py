"""The content-addressed stage cache: runs/stages/<key>/ holds stage.json (identity), metrics.json,
parquet predictions and, last, done.json. A stage without done.json never counts: it is recomputed.

done.json records the size and sha256 of every file of the stage; a stage whose files no longer match
(a truncated parquet, a missing metrics.json, a garbage done.json) is not done: `problem()` says why,
and the runner recomputes it with its dependants (docs/caching.md). Every file is fsynced before
done.json is written, so a power loss cannot leave a done marker over half-written files."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # pandas loads only where tables are read or written (`w2s validate` stays fast)
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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:       # some filesystems refuse fsync on directories: best effort there
        pass
    finally:
        os.close(fd)


def write_json(path: Path, obj) -> None:
    """Atomic and durable: a reader (or a crash, or a power loss) never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True, default=str))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class StageStore:
    SKIP = {"done.json", "trainer", "console.log"}   # the marker itself; trainer/ is HF scratch; console.log: harness.console

    def __init__(self, root: str | Path):
        self.root = Path(root) / "stages"
        self._checked: dict[tuple, str | None] = {}

    def dir(self, key: str) -> Path:
        return self.root / key[:16]

    def files(self, key: str) -> list[Path]:
        d = self.dir(key)
        return sorted(f for f in d.iterdir() if f.is_file() and f.name not in self.SKIP
                      and not f.name.startswith(".")) if d.is_dir() else []

    def problem(self, key: str) -> str | None:
        """Why a stage that has a done marker cannot be trusted, or None (fine, or simply not finished)."""
        marker = self.dir(key) / "done.json"
        if not marker.exists():
            return None
        try:
            st = marker.stat()
            sig = (key, st.st_mtime_ns, st.st_size, tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                                                          for f in self.files(key)))
        except OSError as e:
            return f"unreadable: {e}"
        if sig not in self._checked:      # hashing is cheap, but plan/run/results ask many times
            self._checked[sig] = self._verify(key, marker)
        return self._checked[sig]

    def _verify(self, key: str, marker: Path) -> str | None:
        try:
            done = json.loads(marker.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            return "done.json is not valid JSON"
        if not isinstance(done, dict) or done.get("key") != key:
            return "done.json belongs to another stage"
        d = self.dir(key)
        for name, want in (done.get("files") or {}).items():
            f = d / name
            if not f.is_file():
                return f"{name} is missing"
            if f.stat().st_size != want.get("size") or sha256_file(f) != want.get("sha256"):
                return f"{name} does not match its recorded sha256 (truncated or changed)"
        try:     # markers written before hashes were recorded: at least the metrics must be readable
            json.loads((d / "metrics.json").read_text())
        except FileNotFoundError:
            return "metrics.json is missing"
        except (OSError, UnicodeDecodeError, ValueError):
            return "metrics.json is not valid JSON"
        return None

    def is_done(self, key: str) -> bool:
        return (self.dir(key) / "done.json").exists() and self.problem(key) is None

    def discard(self, key: str) -> None:
        """Forget a finished stage (its files stay for inspection until it is recomputed)."""
        (self.dir(key) / "done.json").unlink(missing_ok=True)

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
        files = {}
        for f in self.files(key):       # files written by others (log.jsonl, restored copies) too
            _fsync(f)
            files[f.name] = {"size": f.stat().st_size, "sha256": sha256_file(f)}
        _fsync(d)                       # the renames above are durable before the marker exists
        write_json(d / "done.json", {"key": key, "finished_at": time.time(), "files": files})
        _fsync(d)

    def metrics(self, key: str) -> dict:
        return json.loads((self.dir(key) / "metrics.json").read_text())

    def write_table(self, key: str, name: str, df: pd.DataFrame) -> Path:
        path = self.dir(key) / f"{name}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        df.to_parquet(tmp, index=False)
        _fsync(tmp)
        os.replace(tmp, path)
        return path

    def read_table(self, key: str, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(self.dir(key) / f"{name}.parquet", columns=columns)


def corrupt(plan: list, store: StageStore) -> dict:
    """{key: why} for stages whose cached files do not verify, and for every stage that depends on one
    (a student trained on the weak labels of a teacher that will be recomputed)."""
    bad = {s.key: why for s in plan if (why := store.problem(s.key))}
    for s in plan:
        if s.teacher in bad and s.key not in bad and (store.dir(s.key) / "done.json").exists():
            bad[s.key] = f"its teacher {s.teacher[:12]} is recomputed"
    return bad


def invalidate_corrupt(plan: list, store: StageStore, echo=print) -> dict:
    """Forget (un-done) the stages `corrupt` finds, saying which and why; they are then recomputed."""
    bad = corrupt(plan, store)
    for s in plan:
        if s.key in bad:
            echo(f"corrupt cache: {s.slug} ({s.key[:12]}, {store.dir(s.key)}): {bad[s.key]}; recomputing it")
            store.discard(s.key)
    return bad
