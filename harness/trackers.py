"""Which tracker a run gets: the null tracker, or MLflow. Above both (harness.tracking is the interface at
the bottom, harness.mlflow_tracking implements it), so neither imports the other's chooser: no cycle."""
from __future__ import annotations

from .tracking import NullTracker


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
