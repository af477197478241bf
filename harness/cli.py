"""The `w2s` command line: validate, plan, run, report, ui, env."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .pipeline import load_or_exit as _load, plan_or_exit as _plan

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _console():
    from rich.console import Console

    return Console(highlight=False, emoji=False, width=int(os.environ.get("COLUMNS", 140)))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="w2s-harness")
def main():
    """Weak-to-strong generalization experiments from validated YAML manifests."""


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--override", "overrides", multiple=True, help="dotted key=value, e.g. -o dataset.n_docs=2000")
def validate(files, overrides):
    """Validate manifests; report every problem with file, line, field and a fix."""
    from .manifest import ManifestError, lint, load
    from .kinds import kind_of

    bad = 0
    for f in files:
        try:
            m = load(f, list(overrides))
        except ManifestError as e:
            bad += 1
            for p in e.problems:
                click.echo(f"error: {p}", err=True)
            continue
        for w in lint(m):
            click.echo(f"warning: {f}: {w}", err=True)
        click.echo(f"ok: {f} ({m.name}: {len(m.models)} models, {len(m.pairs_list())} pairs, "
                   f"{len(kind_of(m).loss_names(m))} losses, {len(m.seeds)} seeds)")
    sys.exit(2 if bad else 0)


@main.command()
@click.argument("file", type=click.Path())
@click.option("-o", "--override", "overrides", multiple=True)
@click.option("--models", default=None, help="comma-separated model names: run a sub-ladder")
@click.option("--check", is_flag=True, help="exit 3 if this machine cannot run the uncached stages")
def plan(file, overrides, models, check):
    """Show the stage graph, what is cached, a cost estimate, and what this machine lacks."""
    from . import preflight
    from rich.table import Table

    from .plan import estimate
    from .store import StageStore, corrupt

    m = _load(file, overrides, models)
    stages = _plan(m, file)
    from .kinds import kind_of

    if kind_of(m).show_plan(m, stages, _console(), check):    # a kind with its own plan table (vision)
        return
    store = StageStore(m.output.dir)
    table = Table(title=f"{m.name}: {len(stages)} stages")
    for col in ("key", "stage", "roles", "needs", "status", "≈PFLOP"):
        table.add_column(col)
    total, cached = 0.0, 0
    bad = corrupt(stages, store)     # files that do not match done.json (and their dependants): rerun
    for s in stages:
        done = store.is_done(s.key) and s.key not in bad
        cached += done
        est = estimate(s)
        total += (est["pflop"] or 0) if not done else 0
        table.add_row(s.key[:12], s.slug, ",".join(s.roles), (s.teacher or "")[:12],
                      "cached" if done else "corrupt: rerun" if s.key in bad else "to run",
                      f"{est['pflop']:.3g}" if est["pflop"] else "?")
    con = _console()
    con.print(table)
    for s in (s for s in stages if s.key in bad):
        con.print(f"corrupt cache: {s.slug} ({s.key[:12]}): {bad[s.key]}; `w2s run` recomputes it")
    missing = preflight.problems(m) if cached < len(stages) else []
    for p in missing:
        con.print(f"[red]cannot run here:[/red] {p}")
    con.print(f"{cached}/{len(stages)} cached; ≈{total:.3g} PFLOP to run "
              f"(≈{total * 1e15 / 3e14 / 3600:.2f} GPU-h at 300 TFLOP/s sustained)")
    from .zero import describe, resolve   # resources: launcher, ZeRO stage (auto's pick), memory estimate

    specs = {s.model: s.spec for s in stages}      # each model's resolved description (harness.spec)
    for mc in m.models:
        if mc.label in specs:
            con.print(f"resources {mc.label}: {describe(resolve(specs[mc.label]))}")
    from .lora import describe as trainable   # built on the meta device from the config: no weights read

    for mc in m.models:
        if mc.label in specs:
            con.print(f"trainable {mc.label}: {trainable(specs[mc.label])}")
    if check and missing:
        sys.exit(3)


@main.command()
@click.argument("file", type=click.Path())
@click.option("-o", "--override", "overrides", multiple=True, help="dotted key=value; validated like the YAML")
@click.option("--force", is_flag=True, help="recompute stages even if cached")
@click.option("--only", "only", multiple=True, help="run only stages whose key starts with this (repeatable)")
@click.option("--shard", default=None, metavar="I/N", help="run only shard I of N (0-based): machines sharing a tracking server split the work")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or a local sqlite store)")
@click.option("--no-tracking", is_flag=True, help="record nothing in MLflow")
@click.option("--models", default=None, help="comma-separated model names: run a sub-ladder")
@click.option("--rehearsal", is_flag=True, help="tiny random stand-ins of the same architectures, small data, own output dir and experiment (docs/rehearsal.md)")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="where stages train: this process, or one Ray task each (docs/scale-out.md)")
@click.option("--address", default=None, metavar="HOST:PORT", help="--executor ray: the cluster (default: $RAY_ADDRESS, else a local Ray instance)")
@click.option("-v", "--verbose", is_flag=True, help="show library output (HF Trainer, tqdm, DeepSpeed, MLflow) as it comes; "
              "without it, it goes to <output.dir>/logs/run-*.log and each stage's console.log")
@click.option("--log-file", default=None, type=click.Path(dir_okay=False), help="also write the full log (all library output) here")
def run(file, overrides, force, only, shard, tracking_uri, no_tracking, models, rehearsal, executor, address,
        verbose, log_file):
    """Run the plan: every uncached stage, then the results table."""
    from .tracking import TrackingError

    if address and executor != "ray":
        click.echo("error: --address is for --executor ray (add --executor ray)", err=True)
        sys.exit(2)
    if rehearsal:    # the manifest as written, models and data swapped (harness.rehearsal); then the usual run
        file, overrides, models, source = _rehearsal_manifest(file, overrides, models), (), None, file

    early = None if no_tracking else tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if early:   # a dead server is reported in seconds: before the manifest's imports load torch
        from .mlflow_tracking import probe

        try:
            probe(early)
        except TrackingError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(3)
    m = _load(file, overrides, models)
    from . import pipeline     # gate -> plan -> run stages -> collect -> report, for every kind

    after = None
    if rehearsal:   # after the tracker finishes: the rehearsal's own checks fail the run (exit 2)
        def after(m, stages, tracker, out):
            from .rehearsal import finish as rehearsal_finish
            return [f"rehearsal of {source}: {p}" for p in rehearsal_finish(m, Path(file), stages, tracker, out)]
    pipeline.run(m, file, _console(), force=force, only=only, shard=shard, tracking_uri=tracking_uri,
                 no_tracking=no_tracking, after=after, executor=executor, address=address, verbose=verbose,
                 log_file=log_file)


@main.command()
@click.argument("file", type=click.Path())
@click.option("-o", "--override", "overrides", multiple=True)
def results(file, overrides):
    """Print the results table of a manifest's finished stages (nothing is computed)."""
    from . import results as res
    from .store import StageStore, corrupt

    m = _load(file, overrides)
    stages, store = _plan(m, file), StageStore(m.output.dir)
    bad = corrupt(stages, store)
    for s in (s for s in stages if s.key in bad):
        click.echo(f"warning: corrupt cache: {s.slug} ({s.key[:12]}): {bad[s.key]}; left out of the table, "
                   f"`w2s run` recomputes it", err=True)
    if not any(store.is_done(s.key) for s in stages):    # three empty tables and exit 0 hid a wrong output.dir
        click.echo(f"error: {file}: no finished stage of {m.name!r} in {store.root.resolve()} (output.dir, "
                   f"relative to the manifest's folder); run `w2s run {file}` first", err=True)
        sys.exit(1)
    tables = res.collect(m, [s for s in stages if s.key not in bad], store)   # dependants too, as warned
    res.render(tables, _console())


@main.command()
def env():
    """Print versions, OS, CPU/GPU/CUDA, data/cache variables and the checkout (paste into bug reports)."""
    from .envinfo import system, versions

    for k, v in {**versions(), **system()}.items():
        click.echo(f"{k}: {v}")


@main.command("schema-docs", hidden=True)
def schema_docs():
    """Print docs/manifest.md (generated from the schema)."""
    from .schema_docs import render

    click.echo(render(), nl=False)


def _rehearsal_manifest(file, overrides, models) -> str:
    from .manifest import ManifestError
    from .rehearsal import RehearsalError, prepare

    try:
        return str(prepare(file, overrides, models))
    except ManifestError as e:
        for p in e.problems:
            click.echo(f"error: {p}", err=True)
    except RehearsalError as e:
        click.echo(f"error: {e}", err=True)
    sys.exit(2)


def _register_optional_commands():
    # `report` and `ui` live in harness.cli_report (they need matplotlib / mlflow).
    try:
        from .cli_report import COMMANDS
    except ImportError:
        return
    for cmd in COMMANDS:
        main.add_command(cmd)


_register_optional_commands()
from .cli_store import store as _store   # noqa: E402  (`w2s store check|repair`: the embedded MLflow store)
main.add_command(_store)
from .reference_cli import reference as _reference   # noqa: E402  (`w2s reference ...`: the reference's command lines)
main.add_command(_reference)
from .cli_data import COMMANDS as _data_commands   # noqa: E402  (`w2s data preview`, `w2s datasets`, `w2s models`)
for _cmd in _data_commands:
    main.add_command(_cmd)

if __name__ == "__main__":
    main()
