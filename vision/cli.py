"""`w2s plan` for vision manifests (harness.cli hands them over after loading the manifest); `w2s run`
is the shared pipeline (harness.pipeline with vision.kind). Exit codes as the language path: 2 =
invalid, 3 = this machine cannot run it (reported before any compute)."""
from __future__ import annotations

import sys

from .manifest import VisionManifest


def plan(m: VisionManifest, file: str, console, check: bool = False) -> None:
    from rich.table import Table

    from harness.pipeline import plan_or_exit
    from harness.store import StageStore

    from .plan import estimate_images, preflight

    stages = plan_or_exit(m, file)
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
