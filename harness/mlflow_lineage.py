"""Weak labels as MLflow datasets: the teacher logs the labels it made, each student logs the same dataset
(same name, same full-content digest) as its training input, with the teacher run's artifact as source."""
from __future__ import annotations

import warnings
from pathlib import Path

from .store import sha256_file

DIGEST_LEN = 32                      # the datasets table's digest column holds 36 characters


def log_weak_labels(tracker, stage, rid: str, d: Path) -> None:
    """`tracker` is the MlflowTracker: its client, its stage-run cache and its `_find`."""
    if stage.kind == "gt" and (d / "weak_labels.parquet").exists():
        path, producer, context = d / "weak_labels.parquet", rid, "weak_labels_produced"
    elif stage.kind in ("transfer", "chain") and stage.teacher:     # chain steps: the labels they train on
        path, context = d.parent / stage.teacher[:16] / "weak_labels.parquet", "training"
        if not path.exists():
            return
        producer = tracker._runs.get(stage.teacher)
        if producer is None:
            teacher_run = tracker._find(stage.teacher)
            producer = teacher_run.info.run_id if teacher_run else None
    else:
        return
    import mlflow.data
    import pandas as pd
    from mlflow.entities import DatasetInput, InputTag, RunTag

    sha = sha256_file(path)
    df = pd.read_parquet(path, columns=["id", "text_hash", "soft_label", "hard_label"])
    source = run_artifact_source(f"runs:/{producer}/weak_labels/weak_labels.parquet" if producer else str(path))
    teacher_model = stage.model if stage.kind == "gt" else stage.weak
    with warnings.catch_warnings():     # schema inference warns about integer columns: not a model input
        warnings.simplefilter("ignore")
        ds = mlflow.data.from_pandas(df, source=source, name=f"weak_labels.{teacher_model}.s{stage.seed}",
                                     digest=sha[:DIGEST_LEN])
        entity = ds._to_mlflow_entity()
    tracker.client.log_inputs(rid, datasets=[DatasetInput(entity, tags=[
        InputTag("mlflow.data.context", context), InputTag("w2s.sha256", sha)])])
    tracker.client.log_batch(rid, tags=[RunTag("w2s.weak_labels.sha256", sha)])


_SOURCE_CLS = None


def run_artifact_source(uri: str):
    """A dataset source naming the teacher run's artifact (`runs:/<run_id>/weak_labels/weak_labels.parquet`).
    Built on first use so that importing this module does not import mlflow (the server probe comes first)."""
    global _SOURCE_CLS
    if _SOURCE_CLS is None:
        from mlflow.data.dataset_source import DatasetSource

        class RunArtifactSource(DatasetSource):
            def __init__(self, uri: str):
                self.uri = uri

            @staticmethod
            def _get_source_type() -> str:
                return "mlflow_run_artifact"

            def load(self, dst_path=None) -> str:
                import mlflow.artifacts
                return mlflow.artifacts.download_artifacts(self.uri, dst_path=dst_path)

            @staticmethod
            def _can_resolve(raw_source) -> bool:
                return False

            @classmethod
            def _resolve(cls, raw_source):
                return cls(str(raw_source))

            def to_dict(self) -> dict:
                return {"uri": self.uri}

            @classmethod
            def from_dict(cls, source_dict: dict):
                return cls(source_dict["uri"])

        _SOURCE_CLS = RunArtifactSource
    return _SOURCE_CLS(uri)
