"""The tracking interface at the bottom of the layers: `NullTracker` records nothing (but builds the report),
`TrackingError`. The MLflow implementation (harness.mlflow_*) builds on it; harness.trackers.make_tracker
chooses between them. Nothing here imports an implementation."""
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
        """The report into <results_dir>/report (with or without tracking), then `record` it."""
        build_report_quietly(Path(results_dir))
        self.record(tables, Path(results_dir), ok)

    def record(self, tables: dict, results_dir: Path, ok: bool = True) -> None:
        pass


def build_report_quietly(results_dir: Path) -> None:
    """A plotting problem must not fail a finished sweep: warn and go on."""
    if not (results_dir / "stages.csv").exists():
        return
    try:
        from .report import build_report

        build_report(results_dir, results_dir / "report")
    except Exception as e:  # noqa: BLE001
        import sys
        print(f"warning: report not built: {type(e).__name__}: {e}", file=sys.stderr)


class TrackingError(RuntimeError):
    """The tracking server cannot be used; raised before any training."""
