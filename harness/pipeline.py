"""One pipeline for every kind of experiment: gate -> plan -> run stages -> collect -> report.

The CLI (harness.cli, harness.reference_cli) parses arguments and calls these; what differs between
kinds (language, vision) comes from the manifest's kind (harness.kinds.kind_of, harness.kind.Kind).
Exit codes: 2 = invalid input (manifest, flags, data), 3 = this machine or the tracker cannot run it;
both are reported before any compute."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .console import say_err   # stdlib only: `w2s validate` stays light


def load_or_exit(path: str, overrides=(), models: str | None = None):
    """The validated manifest (a sub-ladder with `models`), its lint warnings on stderr; exit 2 if invalid."""
    from .manifest import ManifestError, lint, load

    try:
        m = load(path, list(overrides))
        if models:
            m = m.select_models([x.strip() for x in models.split(",") if x.strip()])
    except ManifestError as e:
        for p in e.problems:
            click.echo(f"error: {p}", err=True)
        click.echo(f"{path}: {len(e.problems)} problem(s); nothing was run.", err=True)
        sys.exit(2)
    for w in lint(m):
        click.echo(f"warning: {path}: {w}", err=True)
    return m


def plan_or_exit(m, path):
    """The manifest's stages; exit 2 if its inputs cannot make them (a missing file, a bad value)."""
    from .kinds import kind_of

    kind = kind_of(m)
    try:
        return kind.build_plan(m)
    except kind.plan_errors as e:
        click.echo(f"error: {path}: {e}", err=True)
        sys.exit(2)


def gate(m, file, stages, problems, only, tracking_uri, no_tracking):
    """What every `w2s run` does before any compute: refuse what this machine cannot run (exit 3), check
    --only (exit 2), and start the tracker (exit 3 if it is unreachable)."""
    from .store import StageStore
    from .trackers import make_tracker
    from .tracking import TrackingError

    if not all(StageStore(m.output.dir).is_done(s.key) for s in stages):
        missing = problems(m)
        for p in missing:
            say_err(f"error: cannot run here: {p}")
        if missing:
            sys.exit(3)
    if only and not any(s.key.startswith(tuple(only)) for s in stages):
        say_err(f"error: --only {', '.join(only)}: no stage key starts with it (see `w2s plan {file}`)")
        sys.exit(2)
    try:
        tracker = make_tracker(m, tracking_uri, enabled=False if no_tracking else None)
        tracker.start(m, stages, Path(file))
    except TrackingError as e:
        say_err(f"error: {e}")
        sys.exit(3)
    return tracker


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    if shard is None:
        return None
    try:
        i, n = (int(x) for x in shard.split("/"))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        say_err(f"error: --shard {shard}: expected I/N with 0 <= I < N, e.g. --shard 0/4")
        sys.exit(2)
    return i, n


def run(m, file, console, *, verbose=None, log_file=None, **kw) -> None:
    """`run_quiet` with library noise in <output.dir>/logs (harness.console), or as it comes with verbose=None
    (callers that predate the console) or verbose=True (the logs are still written)."""
    if verbose is None and log_file is None:
        return run_quiet(m, file, console, **kw)
    from .console import capture

    with capture(console, Path(m.output.dir) / "logs", verbose=bool(verbose), log_file=log_file,
                 where=where) as echo:
        run_quiet(m, file, console, echo=echo, **kw)


def where(stage) -> str:
    """Where a stage trains under the local executor: "in process", or its launcher and rank count, as its
    resolved description says (harness.spec); a kind without one (vision) trains here."""
    r = getattr(getattr(stage, "spec", None), "resources", None)
    return "in process" if r is None or r.launcher == "none" else f"{r.launcher} x{r.world}"


def run_quiet(m, file, console, *, force=False, only=(), shard=None, tracking_uri=None, no_tracking=False,
              after=None, executor: str = "local", address: str | None = None, echo=None) -> None:
    """Gate, run the uncached stages, then collect, write and track the results tables, and print them.
    The tables are written even when a stage fails: what finished is kept and reported. `after(m, stages,
    tracker, out) -> problems`, if given, checks the finished run (the rehearsal's); a problem fails it (exit 2).
    `echo`: the stage loop's printer (default console.print)."""
    from .kinds import kind_of

    echo = echo or console.print

    kind = kind_of(m)
    if shard is not None and not kind.shardable:
        say_err(f"error: --shard is not supported for {kind.name} manifests (features are shared by all stages)")
        sys.exit(2)
    if executor != "local" and not kind.distributable:
        say_err(f"error: --executor {executor} is not supported for {kind.name} manifests; use --executor local")
        sys.exit(2)
    stages = plan_or_exit(m, file)
    shard = parse_shard(shard)
    backend, problems, extra = None, kind.preflight, {}
    if executor == "ray":    # an unreachable cluster, or a stage no node can hold: exit 3 before anything runs
        from .executors.ray_backend import RayBackend, RayUnavailable, driver_problems

        try:
            backend, problems = RayBackend(m, stages, address, console.print), driver_problems(kind.preflight)
        except RayUnavailable as e:
            say_err(f"error: {e}")
            sys.exit(3)
        extra = {"backend": backend}     # harness.executors: where the stages train (docs/scale-out.md)
    tracker = gate(m, file, stages, problems, only, tracking_uri, no_tracking)
    # torch/transformers load only now: a dead tracking server is reported within seconds, before this
    from . import results
    from .store import StageStore

    ok = False
    try:
        kind.run_stages(m, tracker, force=force, only=only, shard=shard, echo=echo, **extra)
        ok = True
    except kind.input_errors as e:     # bad input found before the stage trains
        say_err(f"error: {e}")
    finally:
        if backend is not None:
            backend.close()
        from .claims import Claims

        with Claims(m.output.dir).wait(f"results-{m.name}"):    # another `w2s run` on this output dir may write them too
            tables = kind.collect(m, stages, StageStore(m.output.dir))
            out = results.write(m, tables, Path(m.output.dir) / m.name, kind)
            tracker.finish(tables, out, ok=ok)
        if after is not None:
            problems = after(m, stages, tracker, out)
            for p in problems:
                say_err(f"error: {p}")
            ok = ok and not problems
    if not ok:      # only an input error gets here (anything else propagates): exit 2
        sys.exit(2)
    kind.render(tables, console)
    console.print(f"results: {out}/", soft_wrap=True)
