"""What a person sees in the MLflow UI: the experiment is tagged as machine learning, a shared view with the
columns people look for first, the URL that opens it, the parent run's description; and parent runs left
RUNNING by a killed `w2s run` on this host are marked KILLED.

Why the URL and not only the tag: the MLflow 3.17 UI ignores `mlflow.experimentKind` for the landing page. It
reads `?workflowType=` from the URL, else the browser's saved choice (localStorage `mlflow.workflowType`),
default "genai": a bare `#/experiments/<id>` opens on the empty GenAI traces overview. The tag still names
the experiment's type (the experiment settings, older UIs)."""
from __future__ import annotations

import json
import os
import socket

KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"   # "Machine learning" in the UI
VIEW_KEY = "w2s"                     # the UI loads experiment tag mlflow.sharedViewState.<key> from ?viewStateShareKey=
VIEW_TAG = "mlflow.sharedViewState." + VIEW_KEY
UI_QUERY = f"workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"   # runs page, "Model training" mode
NOTE_TAG = "mlflow.note.content"     # a run's (or experiment's) description, markdown
COLUMNS = ["attributes.`Dataset`", "metrics.`test_acc`", "metrics.`pgr`", "metrics.`weak_acc`",
           "metrics.`ceiling_acc`", "tags.`w2s.loss`", "tags.`w2s.seed`"]


def ensure_experiment(client, name: str, artifact_location: str | None) -> str:
    """The experiment named `name` (created if missing, concurrently safe), tagged as machine learning:
    also an existing one, so experiments from older harness versions get the tag on the next run."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            exp_id = client.create_experiment(name, artifact_location=artifact_location, tags={KIND_TAG: KIND})
        except MlflowException:                 # created concurrently by another process or machine
            exp_id = client.get_experiment_by_name(name).experiment_id
        exp = client.get_experiment(exp_id)
    if exp.tags.get(KIND_TAG) != KIND:
        client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
    if NOTE_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, NOTE_TAG, (
            f"Weak-to-strong sweeps of manifest `{name}`. One parent run per `w2s run` (its description says what "
            f"it ran and where the report is); one child run per stage. The runs with the usual columns: "
            f"`#/experiments/{exp.experiment_id}/runs?{UI_QUERY}` (docs/tracking.md)."))
    return exp.experiment_id


def set_view(client, exp_id: str, parent_id: str) -> None:
    """The shared view: test accuracy and PGR as columns, newest first, this run's stages expanded."""
    state = {"selectedColumns": COLUMNS, "orderByKey": "attributes.start_time", "orderByAsc": False,
             "runsExpanded": {parent_id: True}}
    client.set_experiment_tag(exp_id, VIEW_TAG, json.dumps(state))


def view_url(base: str, exp_id: str) -> str:
    """The experiment's runs table (not the GenAI overview) with the shared view's columns."""
    return f"{base.rstrip('/')}/#/experiments/{exp_id}/runs?{UI_QUERY}"


def experiment_urls(db, base: str) -> list[str]:
    """`name: URL` for each active experiment in an sqlite store (read-only; no MLflow import)."""
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = con.execute("select experiment_id, name from experiments where lifecycle_stage = 'active' "
                               "and experiment_id != 0 order by experiment_id").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return []
    return [f"{name}: {view_url(base, str(eid))}" for eid, name in rows]


def announce(uri: str, exp_id: str, manifest_path) -> None:
    """One line on stderr: where to look at this run (a server's URL; for the embedded store, `w2s ui`)."""
    import sys

    if uri.startswith(("http://", "https://")):
        where = view_url(uri, exp_id)
    else:
        where = f"`w2s ui -f {manifest_path or '<manifest>'}`, then {view_url('http://127.0.0.1:5000', exp_id)}"
    print(f"MLflow: {where}", file=sys.stderr, flush=True)


def describe(manifest, plan, results_dir: str, manifest_path) -> str:
    """The parent run's description: what this sweep is and where its report is."""
    kinds = {s.kind for s in plan}
    gt = sorted({s.model for s in plan if s.kind == "gt"})
    pairs = sorted({f"{s.weak} -> {s.model}" for s in plan if s.kind == "transfer"})
    losses = sorted({s.loss["name"] for s in plan if s.kind == "transfer"}) or sorted({s.loss["name"] for s in plan})
    seeds = sorted({s.seed for s in plan})
    dataset = getattr(getattr(manifest, "dataset", None), "name", "?")
    lines = [f"**w2s sweep `{manifest.name}`** on `{dataset}`: {len(plan)} stages "
             f"({', '.join(sorted(kinds))}); models trained on ground truth: {', '.join(gt) or '-'}; "
             f"weak -> strong pairs: {', '.join(pairs) or '-'}; losses: {', '.join(losses)}; "
             f"seeds: {', '.join(map(str, seeds))}.",
             "",
             "Each stage is a child run (expand this row): `test_acc` on every stage, `pgr`, `weak_acc`, "
             "`ceiling_acc` on transfer stages. The weak labels: the *Datasets* column of each student run, and "
             "the artifact `weak_labels/weak_labels.parquet` of the supervisor's run.",
             "",
             f"Report: artifacts `report/report.md` (PGR table) and `report/*.png` (plots) of this run; on disk "
             f"`{results_dir}/report/report.md`. Tables: artifacts `results/` (pgr.csv, stages.csv, summary.csv). "
             f"Manifest: artifacts `manifest/` ({manifest_path or 'resolved'})."]
    return "\n".join(lines)


def liveness_tags() -> dict:
    """Who runs this parent: host, pid and the process start time (a reused pid is not the same process)."""
    import psutil

    return {"w2s.host": socket.gethostname(), "w2s.pid": str(os.getpid()),
            "w2s.pid_started": f"{psutil.Process().create_time():.2f}"}


def _alive(pid: str, started: str) -> bool:
    import psutil

    try:
        return abs(psutil.Process(int(pid)).create_time() - float(started)) < 1.0
    except (psutil.Error, ValueError):
        return False


def mark_killed(client, exp_id: str, by_run: str | None = None) -> list[str]:
    """Parents RUNNING whose process on this host is gone (kill -9, OOM, power loss) -> KILLED, with their
    RUNNING stage runs. Parents of other hosts are left to those hosts: their liveness is unknown here."""
    host = socket.gethostname()
    filt = "tags.`w2s.role` = 'parent' and attributes.status = 'RUNNING'"
    dead = []
    for r in client.search_runs([exp_id], filt, max_results=1000):
        t = r.data.tags
        if r.info.run_id == by_run or t.get("w2s.host") != host or "w2s.pid" not in t:
            continue
        if _alive(t["w2s.pid"], t.get("w2s.pid_started", "0")):
            continue
        client.set_tag(r.info.run_id, "w2s.killed_noticed_by", by_run or "")
        client.set_terminated(r.info.run_id, "KILLED")
        kids = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{r.info.run_id}' and "
                                             f"attributes.status = 'RUNNING'", max_results=1000)
        for k in kids:
            client.set_terminated(k.info.run_id, "KILLED")
        dead.append(r.info.run_id)
    return dead

