"""The embedded MLflow store (<output.dir>/mlflow/mlflow.db): created atomically and once, checked before use,
repaired only on request (`w2s store repair`), and relocated when the output dir is moved or copied.

Why: MLflow creates its sqlite schema in place, table by table (~100 migrations). A run killed meanwhile, or
two first runs racing, leave a file whose alembic revision and tables disagree; every later open then fails
("table secrets already exists"). Here the schema is built in a private temporary file under an flock and
renamed into place: the final path holds either nothing or a complete store.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from pathlib import Path

from .tracking import TrackingError

DB = "mlflow.db"
LOCK = ".mlflow.db.lock"
TMP_PREFIX = ".mlflow.db.creating-"


class StoreBroken(TrackingError):
    """The embedded store exists but cannot be used; the message says why and what to run."""


def embedded_dir(output_dir) -> Path:
    return Path(output_dir).expanduser().resolve() / "mlflow"


def default_uri(manifest) -> str:
    return "sqlite:///" + str(embedded_dir(manifest.output.dir) / DB)


def artifacts_uri(d: Path) -> str:
    return (Path(d) / "artifacts").as_uri()


@contextlib.contextmanager
def locked(d: Path):
    """An exclusive flock on <d>/.mlflow.db.lock: the kernel drops it when its holder dies (kill -9 too)."""
    d.mkdir(parents=True, exist_ok=True)
    with open(d / LOCK, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def head_revision() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def diagnose(db: Path) -> str | None:
    """None when `db` is a complete MLflow store at this MLflow's schema head, else why not. Opened read-write
    (never created): a run SIGKILLed mid-transaction leaves a hot journal (mlflow.db-journal) that only a
    writable connection rolls back; read-only, sqlite refuses the whole file ("readonly database")."""
    from mlflow.store.db.base_sql_model import Base
    from mlflow.store.db.utils import _get_latest_schema_revision  # noqa: F401 - registers every ORM table

    try:
        con = sqlite3.connect(f"file:{db}?mode=rw", uri=True)
        try:
            tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
            rev = con.execute("select version_num from alembic_version").fetchall() if "alembic_version" in tables else []
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        return f"not a readable sqlite database ({e})"
    head = head_revision()
    missing = sorted(set(Base.metadata.tables) - tables)
    if not rev:
        return (f"no schema revision recorded and {len(missing)} of {len(Base.metadata.tables)} tables missing: "
                f"MLflow was stopped while creating it")
    if rev[0][0] != head or missing:
        return (f"schema revision {rev[0][0]} (this MLflow expects {head}), {len(missing)} tables missing"
                f"{' (' + ', '.join(missing[:5]) + ')' if missing else ''}: MLflow was stopped while creating or "
                f"upgrading it, or two first runs created it at once")
    return None


def _build(tmp: Path, d: Path) -> None:
    """Every table and migration, into `tmp`; the engine is closed afterwards (no -journal left behind)."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    engine = sqlalchemy.create_engine(f"sqlite:///{tmp}", poolclass=sqlalchemy.pool.NullPool)
    try:
        _initialize_tables(engine)
        with engine.begin() as con:   # the Default experiment MLflow would add on first open, pointed here
            con.exec_driver_sql("update experiments set artifact_location = ? where experiment_id = 0",
                                (artifacts_uri(d) + "/0",))
    finally:
        engine.dispose()
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())


def _create(d: Path) -> None:
    tmp = d / f"{TMP_PREFIX}{os.getpid()}"
    tmp.unlink(missing_ok=True)
    _build(tmp, d)
    os.replace(tmp, d / DB)
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure(d: Path, relocate_artifacts: bool = True) -> Path:
    """The embedded store in `d`, created if absent (atomically, one creator at a time); raises StoreBroken
    for a store an old crash left incomplete; rewrites artifact paths when `d` has moved."""
    d = Path(d)
    db = d / DB
    with locked(d):
        for stale in d.glob(TMP_PREFIX + "*"):      # what a killed creator left: never the real store
            stale.unlink(missing_ok=True)
        if not db.exists() or db.stat().st_size == 0:
            _create(d)                              # an empty file holds nothing: MLflow would init it too
        else:
            why = diagnose(db)
            if why:
                raise StoreBroken(broken_message(db, why))
            if relocate_artifacts:
                relocate(db, d)
    return db


def broken_message(db: Path, why: str) -> str:
    out = db.parent.parent
    return (f"the embedded MLflow store {db} is incomplete: {why}. Nothing was run. Your finished stages are safe "
            f"in {out}/stages. Fix: `w2s store repair {out}` moves the broken file aside (kept as "
            f"{DB}.broken-<time>) and creates a fresh store; the next `w2s run` logs every cached stage into it. "
            f"Or run with --no-tracking.")


def repair(d: Path) -> tuple[Path | None, Path]:
    """Move a broken store aside and create a fresh one. Returns (moved-aside path or None, new store)."""
    d = Path(d)
    db = d / DB
    with locked(d):
        moved = None
        if db.exists() and db.stat().st_size and diagnose(db) is None:
            return None, db
        if db.exists():
            moved = d / f"{DB}.broken-{time.strftime('%Y%m%d-%H%M%S')}"
            os.replace(db, moved)
            for side in ("-journal", "-wal", "-shm"):
                if Path(str(db) + side).exists():
                    os.replace(str(db) + side, str(moved) + side)
        _create(d)
    return moved, db


def relocate(db: Path, d: Path) -> list[tuple[str, str]]:
    """Artifact locations follow the output dir: experiments and runs recorded under another
    .../mlflow/artifacts root (the dir was moved or copied) are pointed at `d`/artifacts. Returns the
    (old, new) roots rewritten."""
    new = artifacts_uri(d)
    done = []
    con = sqlite3.connect(db, timeout=60)
    try:
        with con:
            olds = {loc[: loc.index("/mlflow/artifacts") + len("/mlflow/artifacts")]
                    for (loc,) in con.execute("select artifact_location from experiments")
                    if loc and loc.startswith("file://") and "/mlflow/artifacts" in loc}
            for old in sorted(olds - {new}):
                n = len(old)
                con.execute("update experiments set artifact_location = ? || substr(artifact_location, ?) "
                            "where substr(artifact_location, 1, ?) = ?", (new, n + 1, n, old))
                con.execute("update runs set artifact_uri = ? || substr(artifact_uri, ?) "
                            "where substr(artifact_uri, 1, ?) = ?", (new, n + 1, n, old))
                done.append((old, new))
    finally:
        con.close()
    return done


def find_store_dir(target: str | None) -> Path:
    """<output.dir>/mlflow from a manifest, an output dir, or that folder itself (default ./runs)."""
    if target and Path(target).is_file():
        from .manifest import load

        out = Path(load(target).output.dir)
    else:
        out = Path(target or "runs")
    for cand in (out / "mlflow", out):
        if (cand / DB).exists() or cand.name == "mlflow":
            return cand.resolve()
    return (out / "mlflow").resolve()
