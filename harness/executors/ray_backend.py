"""`w2s run --executor ray`: every uncached stage is a Ray task (the driver side; harness.executors.drive
decides what runs when, this module only ships stages out and their files back).

- Resources: a task asks for the GPUs its model's `resources` name (`gpus`; several nodes per stage
  are not supported here) when the cluster has GPUs, else one CPU (a launched CPU stage: one per rank).
  A stage no node can hold is refused before anything runs.
- A transfer is submitted as soon as its teacher has finished, with the teacher's files (put into the
  object store once per teacher); stages that do not depend on each other run at the same time.
- A task whose worker process or node dies is retried by Ray (MAX_RETRIES); an exception raised by
  the stage itself is not retried (it would fail again) and fails the sweep after the stages in flight.
- The driver writes the returned files into the stage store under the stage's claim, replays the
  training log into the tracker, and the shared loop finishes the stage: one FINISHED MLflow run each.
- Without --address (and without $RAY_ADDRESS) a private Ray instance is started on this machine and
  kept on 127.0.0.1; it stops when `w2s run` ends.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

MAX_RETRIES = 2
PROBE_TIMEOUT_S = 5


class RayUnavailable(RuntimeError):
    """Ray is missing, the cluster unreachable, or a stage no node can hold: the CLI exits 3 before compute."""


def driver_problems(problems):
    """The pre-compute checks for the driver: with Ray the GPUs that matter are the cluster's (`infeasible`
    checks them), not this machine's."""
    return lambda m: [p for p in problems(m) if "needs a GPU" not in p]


def probe(address: str) -> None:
    """A dead GCS address makes ray.init retry for minutes: find out in seconds (HOST:PORT addresses)."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return          # ray://, "auto": Ray's own resolution
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address} ({e}). Nothing was run. Fix: start its head "
                             f"(`ray start --head --port {port}`) or pass the head's --address HOST:PORT") from e


def connect(address: str | None, echo=print) -> dict:
    """ray.init; returns what was connected to (for the progress line)."""
    local = not address and not os.environ.get("RAY_ADDRESS")
    if local:     # before `import ray`: its constants read this; keeps every socket on 127.0.0.1
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # Ray starts its workers at nice 15: on a machine with any other busy process the stages then get a
        # few % of a core (measured: 3 %, a 13 s stage past 2.5 minutes). The private instance exists only
        # to run this sweep, so its stages run at the priority `--executor local` would have.
        os.environ.setdefault("RAY_worker_niceness", "0")
        if not any(k in os.environ for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
            # Ray 2.60 secures a new local instance with a token, which it would save to ~/.ray/auth_token;
            # every later `ray start --head` on this machine then requires it, and drivers that are not
            # given it fail. A token of this run only, inherited by the instance it starts, leaves no trace.
            import secrets

            os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    target = address or os.environ.get("RAY_ADDRESS")
    if not local:
        probe(target)
    try:
        import ray
    except ImportError as e:
        raise RayUnavailable("--executor ray needs Ray: pip install 'w2s-harness[ray]' (or ray==2.60.0)") from e
    try:
        # log_to_driver=False: the progress is one line per stage; task logs stay in the Ray session logs
        ctx = ray.init(address="local" if local else address, log_to_driver=False, configure_logging=False)
    except Exception as e:  # noqa: BLE001 - ConnectionError, ValueError, RuntimeError from the GCS client
        # the port answered (probe), so the head refused this driver; the reason is only in Ray's C++ log
        fix = ("a head that uses token authentication (its log says \"Token authentication is enabled\") needs "
               "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH; `ray get-auth-token` on the head) "
               "here; also check that driver and cluster run the same Ray version") if not local else \
            "see the Ray log above"
        raise RayUnavailable(f"cannot connect to the Ray cluster at {target or 'a new local instance'}: "
                             f"{type(e).__name__}: {e}. Fix: {fix}") from e
    res = ray.cluster_resources()
    dash = getattr(ctx, "dashboard_url", None)
    where = "a local Ray instance" if local else f"the Ray cluster at {ctx.address_info.get('gcs_address', address)}"
    echo(f"ray: {where}: {len(ray.nodes())} node(s), {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs; "
         f"dashboard: {'http://' + dash if dash and not dash.startswith('http') else dash or 'none (not started)'}")
    return res


def task_resources(m, stage, gpus_in_cluster: bool) -> dict:
    r = stage.spec.resources     # harness.spec: resolved when the plan was built
    if gpus_in_cluster:
        return {"num_gpus": r.gpus, "num_cpus": 1}
    return {"num_gpus": 0, "num_cpus": r.gpus if r.launcher != "none" else 1}


def infeasible(m, stages, nodes: list[dict]) -> list[str]:
    """Problems: stages no single node can hold (Ray would queue them forever)."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    gpus = any(n.get("GPU", 0) for n in alive)
    out = []
    first: dict = {}
    for s in stages:
        first.setdefault(s.model, s)
    for label, stage in first.items():      # a model's stages share one description (harness.spec)
        r, params = stage.spec.resources, stage.spec.model.params
        if r.nodes > 1:
            out.append(f"model {label}: resources.nodes={r.nodes}: one stage across several nodes is not "
                       f"supported with --executor ray; use --executor local with a DeepSpeed hostfile")
            continue
        from ..preflight import GPU_PARAMS

        if params and params >= GPU_PARAMS and not gpus:
            out.append(f"model {label} has {params / 1e9:.1f}B parameters and needs a GPU; the Ray cluster has none")
        want = task_resources(m, stage, gpus)
        if not any(n.get("CPU", 0) >= want["num_cpus"] and n.get("GPU", 0) >= want["num_gpus"] for n in alive):
            out.append(f"model {label}: a stage needs {want['num_cpus']} CPU(s) and {want['num_gpus']} GPU(s) on one "
                       f"node; the largest Ray node has fewer. Fix: lower resources.gpus or add a bigger node")
    return out


class RayBackend:
    name = "ray"

    def __init__(self, m, stages, address: str | None = None, echo=print):
        from ..store import StageStore

        self.m, self.echo = m, echo
        self.store = StageStore(m.output.dir)
        res = connect(address, echo)
        import ray

        bad = infeasible(m, stages, ray.nodes())
        if bad:
            ray.shutdown()
            raise RayUnavailable("; ".join(bad))
        self.gpus = res.get("GPU", 0) > 0
        from .ray_task import train

        self._remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(train)
        self._m_ref = None
        self._teachers: dict[str, object] = {}
        self._refs: dict[object, tuple] = {}
        self._seeds: set[int] = set()

    def room(self, running: int) -> bool:
        return True      # Ray queues what the cluster cannot start yet

    def start(self, stage, sink) -> None:
        import ray

        if stage.seed not in self._seeds:    # bad data is a DataError here, before any task trains on it
            from ..data.splits import splits_for

            splits_for(self.m, stage.seed)
            self._seeds.add(stage.seed)
        if self._m_ref is None:
            self._m_ref = ray.put(self.m)
        teacher = None
        if stage.teacher:
            if stage.teacher not in self._teachers:
                self._teachers[stage.teacher] = ray.put({f.name: f.read_bytes() for f in self.store.files(stage.teacher)})
            teacher = self._teachers[stage.teacher]
        opts = {**task_resources(self.m, stage, self.gpus), "name": f"w2s {stage.slug}"}
        ref = self._remote.options(**opts).remote(self._m_ref, stage, teacher)
        self._refs[ref] = (stage, sink)

    def wait(self) -> list:
        import ray

        ready, _ = ray.wait(list(self._refs), num_returns=1)
        more, _ = ray.wait([r for r in self._refs if r not in ready], num_returns=len(self._refs) - len(ready),
                           timeout=0) if len(self._refs) > len(ready) else ([], [])
        out = []
        for ref in [*ready, *more]:
            stage, sink = self._refs.pop(ref)
            try:
                res = ray.get(ref)
                self._adopt(stage, res, sink)
                out.append((stage.key, res["metrics"]))
            except Exception as e:  # noqa: BLE001 - the loop marks the stage failed and stops the sweep
                out.append((stage.key, e))
        return out

    def _adopt(self, stage, res: dict, sink) -> None:
        """The returned files into a fresh stage directory (the loop then writes metrics and done.json)."""
        from ..store import _fsync

        d = self.store.begin(stage.key, stage.identity)
        for name, data in res["files"].items():
            if "/" in name or name.startswith(".") or name in self.store.SKIP or name == "metrics.json":
                continue
            tmp = d / f".{name}.tmp"
            tmp.write_bytes(data)
            _fsync(tmp)
            os.replace(tmp, d / name)
        log = d / "log.jsonl"
        if sink is not None and log.exists():
            for line in log.read_text().splitlines():
                sink(json.loads(line))

    def cancel(self) -> None:
        import ray

        for ref in list(self._refs):
            ray.cancel(ref, force=True)
        self._refs.clear()

    def close(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def scratch_attempts(root: str | Path | None = None) -> list[dict]:
    """The attempt log of this node's tasks (harness.executors.ray_task)."""
    from .ray_task import scratch_root

    path = Path(root) if root else scratch_root()
    f = path / "attempts.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []
