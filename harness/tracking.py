"""Tracking interface used by the protocol. `NullTracker` records nothing; the MLflow tracker lives in
harness.mlflow_tracking and is chosen by `make_tracker`."""
from __future__ import annotations

import contextlib
from pathlib import Path


class NullTracker:
    def start(self, manifest, plan, manifest_path: Path | None = None) -> None:
        pass

    @contextlib.contextmanager
    def stage(self, stage):
        yield None          # a sink for per-step train logs: callable(row) or None

    def restore(self, stage, store) -> bool:
        """Fill the local stage cache from the tracking server if it holds this finished stage."""
        return False

    def stage_cached(self, stage, metrics: dict, stage_dir: Path) -> None:
        pass

    def stage_finished(self, stage, metrics: dict, stage_dir: Path) -> None:
        pass

    def finish(self, tables: dict, results_dir: Path, ok: bool = True) -> None:
        pass


def make_tracker(manifest, uri: str | None = None, enabled: bool | None = None):
    on = manifest.tracking.mlflow if enabled is None else enabled
    if not on:
        return NullTracker()
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:   # mlflow_tracking imports mlflow lazily: check here
        import sys
        print("warning: mlflow is not installed (pip install 'w2s-harness[tracking]'); nothing is tracked",
              file=sys.stderr)
        return NullTracker()
    from .mlflow_tracking import MlflowTracker

    return MlflowTracker(manifest, uri)


class TrackingError(RuntimeError):
    """The tracking server cannot be used; raised before any training."""
