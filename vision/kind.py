"""The vision kind (harness.kind): frozen features and linear probes (vision.plan, vision.protocol) run by
the shared pipeline (harness.pipeline), plus its `w2s plan` table and the supervisor-accuracy table (Q26)."""
from __future__ import annotations

import sys

from harness.kind import Kind

from .manifest import VisionManifest


class Vision(Kind):
    name = "vision"
    schema = VisionManifest
    shardable = False      # features are computed once and shared by every stage of the run
    distributable = False  # the same: one process computes the shared features
    plan_errors = (FileNotFoundError, ValueError, RuntimeError)

    def dataset_name(self, m):
        return m.vision.dataset

    def loss_names(self, m):
        from .plan import XENT

        return [XENT["name"]]     # the probe's registry loss (soft-target CE), the reference's only one

    def build_plan(self, m):
        from .plan import build_plan
        from .protocol import stage_code

        return build_plan(m, stage_code())

    def data_identity(self, m):
        from .plan import data_identity

        return data_identity(m)

    def preflight(self, m):
        from .plan import preflight

        return preflight(m)

    def run_stages(self, m, tracker, *, force=False, only=(), shard=None, echo=print):
        from . import protocol

        protocol.run(m, tracker, force=force, only=only, echo=echo)

    def show_plan(self, m, stages, console, check):
        """`w2s plan`: the stages and what is cached; exit 3 with --check if this machine lacks something."""
        from rich.table import Table

        from harness.store import StageStore, corrupt

        from .plan import estimate_images, preflight

        store = StageStore(m.output.dir)
        table = Table(title=f"{m.name}: {len(stages)} stages ({m.vision.dataset}, vision)")
        for col in ("key", "stage", "roles", "needs", "status"):
            table.add_column(col)
        cached = 0
        bad = corrupt(stages, store)     # files that do not match done.json (and their dependants): rerun
        for s in stages:
            done = store.is_done(s.key) and s.key not in bad
            cached += done
            table.add_row(s.key[:12], s.slug, ",".join(s.roles), (s.teacher or "")[:12],
                          "cached" if done else "corrupt: rerun" if s.key in bad else "to run")
        console.print(table)
        for s in (s for s in stages if s.key in bad):     # the same lines as the language plan
            console.print(f"corrupt cache: {s.slug} ({s.key[:12]}): {bad[s.key]}; `w2s run` recomputes it")
        missing = preflight(m) if cached < len(stages) else []
        for p in missing:
            console.print(f"[red]cannot run here:[/red] {p}")
        console.print(f"{cached}/{len(stages)} cached; frozen models see ≈{estimate_images(m):,} images once "
                      f"(features are cached and shared by every seed)")
        if check and missing:
            sys.exit(3)
        return True

    def collect(self, m, stages, store):
        """harness.results' tables, plus `weak`: supervisor accuracy on the test part and over every image
        it labelled (Q26)."""
        from .protocol import weak_table

        tables = super().collect(m, stages, store)
        tables["weak"] = weak_table(m, stages, store)
        return tables

    def render(self, tables, console):
        from rich.table import Table

        super().render(tables, console)
        t = Table(title="Supervisor accuracy: test part (PGR) and all images it labelled (Q26, the reference's number)")
        for c in tables["weak"].columns:
            t.add_column(c)
        for r in tables["weak"].to_dict("records"):
            t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()])
        console.print(t)
