"""`w2s report` and `w2s ui` (registered on the `w2s` group by harness.cli)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click


def _results_dirs(source: str, tracking_uri: str | None, scratch: Path) -> list[Path]:
    """A results dir, an output dir holding several, a manifest, or a parent run id on the tracking server."""
    p = Path(source)
    if p.is_dir():
        if (p / "stages.csv").exists():
            return [p]
        found = sorted(d for d in p.iterdir() if (d / "stages.csv").exists())
        if found:
            return found
        raise click.ClickException(f"{p.resolve()}: no results here (no stages.csv in it or one level down); "
                                   f"give the results dir that `w2s run` printed (<output.dir>/<name>/)")
    if p.is_file() and p.suffix in (".yaml", ".yml"):
        from .manifest import ManifestError, load

        try:
            m = load(p)
        except ManifestError as e:
            raise click.ClickException("\n".join(e.problems)) from None
        d = Path(m.output.dir) / m.name
        if not (d / "stages.csv").exists():
            raise click.ClickException(f"{d.resolve()}: no results yet; run `w2s run {p}` first")
        return [d]
    if p.exists():
        raise click.ClickException(f"{p.resolve()}: not a results dir, output dir or manifest")
    if "/" in source:    # a path, not a run id: say plainly that it is not there
        raise click.ClickException(f"{p.resolve()}: no such file or directory (not a results dir, output dir or manifest)")
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise click.ClickException(f"{p.resolve()}: no such file or directory; if {source} is a parent run id, "
                                   f"pass --tracking-uri (or set MLFLOW_TRACKING_URI)")
    from .mlflow_tracking import probe
    from .tracking import TrackingError

    try:
        probe(uri)
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        run = client.get_run(source)
        if run.data.tags.get("w2s.role") == "stage":
            source = run.data.tags["mlflow.parentRunId"]     # a stage run: report its sweep
        dst = scratch / source
        dst.mkdir(parents=True, exist_ok=True)
        client.download_artifacts(source, "results", str(dst))
    except TrackingError as e:
        raise click.ClickException(str(e)) from None
    except Exception as e:  # noqa: BLE001
        raise click.ClickException(f"run {source} at {uri}: {type(e).__name__}: {e}") from None
    return [dst / "results"]


@click.command()
@click.argument("source", required=False, default=None)
@click.option("--compare", "compare", type=click.Path(exists=True, dir_okay=False),
              help="expected-numbers YAML (experiments/expected/README.md); exit 1 if a row fails")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="where report.md and the PNGs go (default: <results dir>/report)")
@click.option("--tracking-uri", default=None, help="tracking server, when SOURCE is a parent run id")
def report(source, compare, out, tracking_uri):
    """Markdown report + plots for RUN (parent run id), a results dir, or a manifest; optionally --compare."""
    from .report import build_report, compare_rows, load_expected, load_results

    if source is None:
        raise click.ClickException("give a results dir (<output.dir>/<name>/), a manifest, or a parent run id")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        dirs = _results_dirs(source, tracking_uri, Path(tmp))
        for d in dirs:
            dest = Path(out) / d.name if out and len(dirs) > 1 else Path(out) if out else d / "report"
            try:
                spec = load_expected(Path(compare)) if compare else None
                built = build_report(d, dest, Path(compare) if compare else None)
            except (ValueError, FileNotFoundError) as e:
                raise click.ClickException(str(e)) from None
            click.echo(f"report: {built / 'report.md'}")
            for fig in sorted([*built.glob("*.png"), *built.glob("*.pdf")]):
                click.echo(f"plot: {fig}")
            if spec is None:
                continue
            rows = compare_rows(load_results(d), spec)
            width = max(len(r["what"]) for r in rows) if rows else 10
            for r in rows:
                got = "—" if r["got"] != r["got"] or isinstance(r["got"], str) else f"{r['got']:.4f}"
                click.echo(f"{r['status']:4}  {r['what']:<{width}}  got {got:>8}  expected {r['want']}"
                           + (f"  ({r['why']})" if r["why"] else ""))
            n = {k: sum(r["status"] == k for r in rows) for k in ("PASS", "FAIL", "SKIP")}
            failed |= n["FAIL"] > 0
            click.echo(f"{d.name}: {n['PASS']} passed, {n['FAIL']} failed, {n['SKIP']} skipped (vs {compare})")
    sys.exit(1 if failed else 0)


def _store_dir(target: str | None) -> Path:
    """The embedded store's folder (<output.dir>/mlflow) from a manifest, an output dir, or that folder."""
    if target and Path(target).is_file():
        from .manifest import ManifestError, load

        try:
            out = Path(load(target).output.dir)
        except ManifestError as e:
            raise click.ClickException("\n".join(e.problems)) from None
    else:
        out = Path(target or "runs")
    for cand in (out / "mlflow", out, out.parent / "mlflow"):
        if (cand / "mlflow.db").exists():
            return cand.resolve()
    raise click.ClickException(f"no embedded MLflow store under {out} (looked for mlflow/mlflow.db); "
                               f"run `w2s run` first, or give -f MANIFEST / -f OUTPUT_DIR")


@click.command()
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("-f", "target", default=None, help="manifest or output dir (default: ./runs)")
def ui(port, target):
    """Start the MLflow UI on 127.0.0.1 for the embedded store (Ctrl-C stops it)."""
    d = _store_dir(target)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
           "DO_NOT_TRACK": "true"}
    # job execution off: it spawns 7 extra worker processes (2 GB) that a local viewer does not need
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{d / 'mlflow.db'}",
           "--default-artifact-root", (d / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    _check_port(port)
    click.echo(f"MLflow UI: http://127.0.0.1:{port}  (store {d}; Ctrl-C to stop)")
    from .mlflow_experiment import experiment_urls   # the runs table of each experiment, not the GenAI overview
    for line in experiment_urls(d / "mlflow.db", f"http://127.0.0.1:{port}"):
        click.echo(f"  {line}")
    # Its own process group: mlflow server forks uvicorn/gunicorn workers, and `kill <pid of w2s ui>` must
    # stop all of them (a plain terminate() stops only the mlflow launcher and leaves the port served).
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def on_signal(signum, _frame):  # raise out of proc.wait() (which holds its lock), clean up below
        raise _Stopped(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        rc = proc.wait()
    except KeyboardInterrupt:       # Ctrl-C: the user's normal way to stop the viewer
        _stop_group(proc)
        sys.exit(0)
    except _Stopped as e:           # `kill <pid>`: stop the server too, exit as a killed process would
        _stop_group(proc)
        sys.exit(128 + e.args[0])
    _stop_group(proc)               # workers outliving their launcher
    raise click.ClickException(f"the MLflow server stopped by itself (exit {rc}); its messages are above")


class _Stopped(Exception):
    """SIGTERM/SIGHUP reached `w2s ui`."""


def _check_port(port: int) -> None:
    """Fail before starting when something already listens there (the server would log it and exit 0)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # as uvicorn binds: TIME_WAIT is not "busy"
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise click.ClickException(f"port {port} on 127.0.0.1 is in use ({e.strerror}); pick another with "
                                       f"--port, or stop what listens there") from None


def _stop_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the server's process group, wait for it to go, then SIGKILL whatever is left."""
    def signal_group(sig) -> bool:
        try:
            os.killpg(proc.pid, sig)
            return True
        except ProcessLookupError:   # the group is empty: everything has exited
            return False

    if not signal_group(signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()                  # reap the leader, or the group never empties
        if not signal_group(0):
            return
        time.sleep(0.2)
    signal_group(signal.SIGKILL)
    proc.wait()


COMMANDS = [report, ui]
