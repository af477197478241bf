"""The tracking server as a stage cache: a FINISHED run tagged `w2s.complete=true` (set after every artifact
is up) is downloaded into the local stage store, done.json last."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

NAMED_TABLES = {"predictions_test.parquet": "predictions", "weak_labels.parquet": "weak_labels"}


def restore(tracker, stage, store) -> bool:
    run = tracker._find(stage.key, complete_only=True)
    if run is None:
        return False
    client = tracker.client
    rid = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        have = {a.path for a in client.list_artifacts(rid)}
        for folder in ["stage", *sorted(set(NAMED_TABLES.values()))]:
            if folder in have:
                client.download_artifacts(rid, folder, tmp)
        info = json.loads((Path(tmp) / "stage" / "stage.json").read_text())
        if info.get("key") != stage.key:
            raise RuntimeError(f"run {rid} holds stage {info.get('key')}, not {stage.key}")
        d = store.dir(stage.key)
        if d.exists():
            shutil.rmtree(d)            # leftovers of a killed local attempt
        d.mkdir(parents=True)
        for f in Path(tmp).rglob("*"):
            if f.is_file() and f.name != "done.json":
                shutil.copy2(f, d / f.name)
    metrics = json.loads((d / "metrics.json").read_text())
    store.finish(stage.key, metrics)    # done.json last: a crash mid-copy leaves the stage not done
    tracker._runs[stage.key] = rid
    return True
