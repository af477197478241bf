"""`w2s plan` / `w2s run` for vision manifests (harness.cli hands them over after loading the manifest).
The same tracker (harness.trackers.make_tracker), stage store, results tables and exit codes as the
language path: 2 = invalid, 3 = this machine cannot run it (reported before any compute)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .manifest import VisionManifest


def plan(m: VisionManifest, file: str, console, check: bool = False) -> None:
    from rich.table import Table

    from harness.store import StageStore

    from .plan import build_plan, estimate_images, preflight

    stages = _build(m, file, build_plan)
    store = StageStore(m.output.dir)
    table = Table(title=f"{m.name}: {len(stages)} stages ({m.vision.dataset}, vision)")
    for col in ("key", "stage", "roles", "needs", "status"):
        table.add_column(col)
    cached = 0
    for s in stages:
        done = store.is_done(s.key)
        cached += done
        table.add_row(s.key[:12], s.slug, ",".join(s.roles), (s.teacher or "")[:12], "cached" if done else "to run")
    console.print(table)
    missing = preflight(m) if cached < len(stages) else []
    for p in missing:
        console.print(f"[red]cannot run here:[/red] {p}")
    console.print(f"{cached}/{len(stages)} cached; frozen models see ≈{estimate_images(m):,} images once "
                  f"(features are cached and shared by every seed)")
    if check and missing:
        sys.exit(3)


def run(m: VisionManifest, file: str, console, *, force=False, only=(), tracking_uri=None, no_tracking=False) -> None:
    from harness import results
    from harness.store import StageStore
    from harness.cli import start_run

    from . import protocol
    from .plan import build_plan, preflight

    stages = _build(m, file, build_plan)
    store = StageStore(m.output.dir)
    tracker = start_run(m, file, stages, preflight, only, tracking_uri, no_tracking)
    ok = False
    try:
        protocol.run(m, tracker, force=force, only=only, echo=console.print)
        ok = True
    finally:
        tables = collect(m, stages, store)
        out = results.write(m, tables, Path(m.output.dir) / m.name)
        tracker.finish(tables, out, ok=ok)
    results.render(tables, console)
    render_weak(tables["weak"], console)
    console.print(f"results: {out}/")


def collect(m: VisionManifest, stages, store) -> dict:
    """harness.results' tables (stages / pgr / summary), plus `weak`: supervisor accuracy on the test part
    and over every image it labelled (Q26)."""
    from harness import results

    from .protocol import weak_table

    tables = results.collect(m, stages, store)
    tables["weak"] = weak_table(m, stages, store)
    return tables


def render_weak(df, console) -> None:
    from rich.table import Table

    t = Table(title="Supervisor accuracy: test part (PGR) and all images it labelled (Q26, the reference's number)")
    for c in df.columns:
        t.add_column(c)
    for r in df.to_dict("records"):
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()])
    console.print(t)


def _build(m, file, build_plan):
    try:
        return build_plan(m)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        click.echo(f"error: {file}: {e}", err=True)
        sys.exit(2)


def is_vision(m) -> bool:
    return isinstance(m, VisionManifest)

