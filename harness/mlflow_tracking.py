"""MLflow tracking: one experiment per manifest name, one parent run per `w2s run`, one child run per stage.

Design constraints (docs/tracking.md, ENVIRONMENT.md §7):
- params are write-once, so a rerun or resume reattaches to the stage's existing run (found by the tag
  `w2s.stage_key`) and only logs params that run does not have yet; operational settings are tags;
- the tracking server is a cache too: `restore` downloads a finished stage (tag `w2s.complete=true`,
  set after every artifact is up) into the local stage store;
- a dead server must not cost results: `start` fails fast (before training) when the server is down, and
  any MLflow error later turns the tracker offline with one warning; the stage cache keeps the work and
  the next `w2s run` logs what is missing (`stage_cached`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .mlflow_lineage import DIGEST_LEN, log_weak_labels  # noqa: F401 - DIGEST_LEN: public name
from .mlflow_restore import NAMED_TABLES
from .mlflow_store import StoreBroken, default_uri, embedded_dir  # noqa: F401 - public names
from .tracking import NullTracker, TrackingError

# A client aimed at a dead server retries for ~4 minutes by default; a few seconds is enough here.
for _k, _v in {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}.items():
    os.environ.setdefault(_k, _v)

PARAM_MAX = 6000                     # MLflow's limit on a param value
SKIP = {"done.json", "trainer"}      # done.json is written last by restore; trainer/ is scratch
PROBE_TIMEOUT_S = 5


def resolve_uri(manifest, uri: str | None = None) -> str:
    """--tracking-uri, then $MLFLOW_TRACKING_URI, then the manifest's tracking.uri, then the embedded store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or manifest.tracking.uri or default_uri(manifest)


def flatten(obj, prefix: str = "") -> dict[str, str]:
    """Nested identity -> {"model.lr": "0.001", ...}; lists stay JSON so they remain one param."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        if obj or not prefix:
            return out
    key = prefix.rstrip(".")
    value = json.dumps(obj, sort_keys=True, default=str) if isinstance(obj, (list, dict)) else str(obj)
    out[key] = clip(value)
    return out


def clip(value: str) -> str:
    if len(value) <= PARAM_MAX:
        return value
    h = hashlib.sha256(value.encode()).hexdigest()[:16]
    return value[: PARAM_MAX - 40] + f"...[truncated, sha256:{h}]"


def metric_name(*parts) -> str:
    """MLflow metric names allow alphanumerics, _ - . / and spaces."""
    return ".".join(re.sub(r"[^A-Za-z0-9_\-/ ]", "_", str(p)) for p in parts)



def probe(uri: str) -> None:
    """Fail in seconds, not minutes, when an http(s) server is down."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as r:
            if r.status == 200:
                return
            why = f"HTTP {r.status}"
    except urllib.error.HTTPError as e:
        why = f"HTTP {e.code}"
    except (urllib.error.URLError, OSError, socket.timeout) as e:
        why = str(getattr(e, "reason", e))
    raise TrackingError(
        f"cannot reach the MLflow tracking server at {uri} ({url}: {why}). Nothing was run. Fix: start the server "
        f"(see docs/tracking.md), or point --tracking-uri / $MLFLOW_TRACKING_URI / tracking.uri at a running one, or "
        f"run with --no-tracking (stages are cached locally; a later `w2s run` with tracking logs them).")


def _image_digest() -> str | None:
    return os.environ.get("W2S_IMAGE_DIGEST") or None


class MlflowTracker(NullTracker):
    def __init__(self, manifest, uri: str | None = None):
        self.m = manifest
        self.uri = resolve_uri(manifest, uri)
        self.embedded = self.uri == default_uri(manifest)
        self.client = None
        self.exp_id = self.parent_id = None
        self.offline = False
        self._runs: dict[str, object] = {}       # stage key -> its run (cache of searches)

    @property
    def kind(self):
        """What differs between kinds (the dataset's name, a stage's operational settings): asked, not duck-typed."""
        from .kinds import kind_of

        return kind_of(self.m)

    # -- setup ------------------------------------------------------------------------------------
    def start(self, manifest, plan, manifest_path: Path | None = None) -> None:
        probe(self.uri)
        try:
            if self.embedded:   # created atomically, checked, relocated if the output dir moved (mlflow_store)
                from .mlflow_store import ensure
                ensure(embedded_dir(manifest.output.dir))
            self._start(manifest, plan, manifest_path)
        except TrackingError:               # StoreBroken too: its message says what to run
            raise
        except Exception as e:  # noqa: BLE001 - any MLflow/transport error means: do not start training blind
            raise TrackingError(f"MLflow tracking at {self.uri} failed before training: {type(e).__name__}: {e}. "
                                f"Fix the server/URI or run with --no-tracking.") from e

    def _start(self, manifest, plan, manifest_path):
        import mlflow
        import yaml
        from mlflow import MlflowClient

        from . import __version__
        from . import mlflow_experiment as ex
        from .envinfo import git_commit

        # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which would make the next tracker in
        # this process (tests, notebooks) write to this run's store: keep the export from leaking.
        exported = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.uri)
        if exported is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        self.client = MlflowClient(self.uri)
        loc = (embedded_dir(manifest.output.dir) / "artifacts").as_uri() if self.embedded else None
        self.exp_id = ex.ensure_experiment(self.client, manifest.name, loc)
        self.common_tags = {"w2s.harness_version": __version__, "w2s.host": socket.gethostname(),
                            "w2s.manifest": manifest.name, "w2s.dataset": self.kind.dataset_name(manifest)}
        commit = git_commit()
        if commit:
            self.common_tags.update({"w2s.git_commit": commit, "mlflow.source.git.commit": commit})
        if _image_digest():
            self.common_tags["w2s.image_digest"] = _image_digest()
        run = self.client.create_run(self.exp_id, run_name=f"{manifest.name} ({len(plan)} stages)", tags={
            **self.common_tags, "w2s.role": "parent", "w2s.n_stages": str(len(plan)),
            "w2s.manifest_path": str(manifest_path or ""), "w2s.output_dir": str(manifest.output.dir),
            **ex.liveness_tags(),
            ex.NOTE_TAG: ex.describe(manifest, plan, Path(manifest.output.dir) / manifest.name, manifest_path)})
        self.parent_id = run.info.run_id
        self._describe = (manifest, plan, manifest_path)
        ex.mark_killed(self.client, self.exp_id, by_run=self.parent_id)
        ex.set_view(self.client, self.exp_id, self.parent_id)
        ex.announce(self.uri, self.exp_id, manifest_path)
        from mlflow.entities import Param
        ident = manifest.model_dump(mode="json", exclude={"output", "tracking"})
        params = [Param(k, v) for k, v in flatten(ident).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.parent_id, params=params[i:i + 100])
        with tempfile.TemporaryDirectory() as tmp:
            resolved = Path(tmp) / "manifest.resolved.yaml"
            resolved.write_text(yaml.safe_dump(manifest.model_dump(mode="json"), sort_keys=False))
            self.client.log_artifact(self.parent_id, str(resolved), "manifest")
        if manifest_path and Path(manifest_path).is_file():
            self.client.log_artifact(self.parent_id, str(manifest_path), "manifest")

    # -- failure policy ---------------------------------------------------------------------------
    def _guard(self, fn, *a, **kw):
        """Run an MLflow call; on any error go offline (warn once) instead of stopping training."""
        if self.offline or self.client is None:
            return None
        try:
            return fn(*a, **kw)
        except Exception as e:  # noqa: BLE001
            self.offline = True
            print(f"warning: MLflow tracking at {self.uri} failed ({type(e).__name__}: {str(e)[:300]}); "
                  f"continuing without tracking. Finished stages stay in the local stage cache; rerun "
                  f"`w2s run` when the server is back to log them.", file=sys.stderr, flush=True)
            return None

    # -- child runs -------------------------------------------------------------------------------
    def _find(self, key: str, complete_only: bool = False):
        filt = f"tags.`w2s.stage_key` = '{key}'"
        if complete_only:
            filt += " and tags.`w2s.complete` = 'true' and attributes.status = 'FINISHED'"
        runs = self.client.search_runs([self.exp_id], filt, max_results=50, order_by=["attributes.start_time DESC"])
        done = [r for r in runs if r.data.tags.get("w2s.complete") == "true" and r.info.status == "FINISHED"]
        return (done or runs or [None])[0]

    def _stage_tags(self, stage) -> dict:
        t = {**self.common_tags, "w2s.role": "stage", "w2s.stage_kind": stage.kind, "w2s.stage_key": stage.key,
             "w2s.model": stage.model, "w2s.loss": stage.loss["name"], "w2s.seed": str(stage.seed),
             "w2s.half": stage.half, "w2s.roles": ",".join(stage.roles), "mlflow.runName": stage.slug,
             "mlflow.parentRunId": self.parent_id}
        if stage.kind in ("transfer", "chain"):     # a chain step's weak: the chain so far (harness.chains)
            t.update({"w2s.weak": stage.weak, "w2s.strong": stage.model, "w2s.teacher_key": stage.teacher})
        # operational settings: tags, never params; declared once, in the stage's description (harness.spec,
        # vision.spec)
        t.update({f"w2s.op.{k}": str(v) for k, v in stage.spec.operational().items()})
        return t

    def _open(self, stage):
        """The stage's run, created or reattached (params only where missing: they are write-once)."""
        from mlflow.entities import Param, RunTag

        run = self._find(stage.key)
        if run is None:
            run = self.client.create_run(self.exp_id, run_name=stage.slug, tags=self._stage_tags(stage))
            have = {}
        else:
            self.client.update_run(run.info.run_id, status="RUNNING")
            with contextlib.suppress(Exception):
                self.client.delete_tag(run.info.run_id, "w2s.complete")
            for k, v in self._stage_tags(stage).items():
                self.client.set_tag(run.info.run_id, k, v)
            have = run.data.params
        rid = run.info.run_id
        new = [Param(k, v) for k, v in flatten(stage.identity).items() if k not in have]
        changed = [k for k, v in flatten(stage.identity).items() if k in have and have[k] != v]
        for i in range(0, len(new), 100):
            self.client.log_batch(rid, params=new[i:i + 100])
        if changed:
            self.client.log_batch(rid, tags=[RunTag("w2s.params_changed", ",".join(changed)[:5000])])
        self._runs[stage.key] = rid
        return rid

    @contextlib.contextmanager
    def stage(self, stage):
        rid = self._guard(self._open, stage)
        try:
            yield self._sink(rid) if rid else None
        except BaseException as e:
            if rid:
                self._guard(self.client.set_terminated, rid,
                            "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            raise

    def _sink(self, rid):
        from mlflow.entities import Metric

        names = {"loss": "train_loss", "train_accuracy": "train_accuracy", "learning_rate": "learning_rate",
                 "grad_norm": "grad_norm", "epoch": "epoch", "progress": "progress"}

        def sink(row: dict) -> None:
            if "loss" not in row and "train_accuracy" not in row:
                return                                  # the Trainer's end-of-training summary row
            now, step = int(time.time() * 1000), int(row.get("step", 0))
            ms = []
            for k, name in names.items():
                try:
                    v = float(row[k])
                except (KeyError, TypeError, ValueError):
                    continue
                if math.isfinite(v):
                    ms.append(Metric(name, v, now, step))
            if ms:
                self._guard(self.client.log_batch, rid, metrics=ms)
        return sink

    def stage_finished(self, stage, metrics: dict, stage_dir: Path) -> None:
        rid = self._runs.get(stage.key)
        if rid:
            self._guard(self._complete, stage, rid, metrics, Path(stage_dir))

    def stage_cached(self, stage, metrics: dict, stage_dir: Path) -> None:
        """Sync: a stage finished locally (maybe while the server was down) gets its run now."""
        def sync():
            run = self._find(stage.key)
            if run is not None and run.data.tags.get("w2s.complete") == "true" and run.info.status == "FINISHED":
                return
            self._complete(stage, self._open(stage), metrics, Path(stage_dir))
        self._guard(sync)

    def _complete(self, stage, rid: str, metrics: dict, d: Path) -> None:
        from mlflow.entities import Metric, RunTag

        now, step = int(time.time() * 1000), int(metrics.get("steps") or 0)
        ms = [Metric(k, float(v), now, step) for k, v in metrics.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        self.client.log_batch(rid, metrics=ms, tags=[RunTag("w2s.versions", json.dumps(metrics.get("versions", {})))])
        with tempfile.TemporaryDirectory() as tmp:
            small = Path(tmp) / "stage"
            small.mkdir()
            for f in sorted(d.iterdir()):
                if f.name in SKIP or f.name.startswith(".") or not f.is_file():
                    continue
                if f.name in NAMED_TABLES:
                    self.client.log_artifact(rid, str(f), NAMED_TABLES[f.name])
                else:
                    shutil.copy2(f, small / f.name)
            self.client.log_artifacts(rid, str(small), "stage")
        log_weak_labels(self, stage, rid, d)
        self.client.set_tag(rid, "w2s.complete", "true")        # last: restore trusts only complete runs
        self.client.set_terminated(rid, "FINISHED")

    # -- the server as a stage cache ----------------------------------------------------------------
    def restore(self, stage, store) -> bool:
        if self.offline or self.client is None:
            return False
        from .mlflow_restore import restore
        return bool(self._guard(restore, self, stage, store))

    # -- the parent run -----------------------------------------------------------------------------
    def record(self, tables: dict, results_dir: Path, ok: bool = True) -> None:
        """Called by NullTracker.finish once the report is built (harness.tracking)."""
        if self.parent_id:
            self._guard(self._finish, tables, Path(results_dir), ok)

    def _finish(self, tables, results_dir: Path, ok: bool) -> None:
        from mlflow.entities import Metric

        now, ms = int(time.time() * 1000), {}
        for r in tables["pgr"].to_dict("records"):
            ms[metric_name("pgr", r["weak"], r["strong"], r["loss"], f"s{r['seed']}")] = r["pgr"]
            ms[metric_name("w2s_acc", r["weak"], r["strong"], r["loss"], f"s{r['seed']}")] = r["w2s_acc"]
        for r in tables["stages"].to_dict("records") if len(tables["stages"]) else []:
            if r["kind"] == "gt":
                ms[metric_name("gt_acc", r["model"], r["half"], f"s{r['seed']}")] = r["test_acc"]
        for r in tables["summary"].to_dict("records"):
            # an unresolved summary is NaN and not logged; the counts say why it is missing
            for col in ("median_pgr", "median_ci_low", "median_ci_high", "mean_pgr", "mean_ci_low", "mean_ci_high",
                        "pgr_reference", "pairs_resolved", "pairs_left_out"):
                ms[metric_name(col, r["loss"])] = r[col]
        good = [Metric(k, float(v), now, 0) for k, v in ms.items()
                if v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))]
        for i in range(0, len(good), 500):
            self.client.log_batch(self.parent_id, metrics=good[i:i + 500])
        for f in sorted(results_dir.glob("*")):
            if f.is_file():
                self.client.log_artifact(self.parent_id, str(f), "results")
        if (results_dir / "report").is_dir():
            self.client.log_artifacts(self.parent_id, str(results_dir / "report"), "report")
        from .mlflow_experiment import NOTE_TAG, describe
        self.client.set_tag(self.parent_id, NOTE_TAG, describe(*self._describe[:2], results_dir, self._describe[2]))
        self.client.set_terminated(self.parent_id, "FINISHED" if ok else "FAILED")
