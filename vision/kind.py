"""The vision kind (harness.kind): frozen features and linear probes (vision.plan, vision.protocol) run by
the shared pipeline, plus the supervisor-accuracy table (Q26)."""
from __future__ import annotations

from harness.kind import Kind

from .manifest import VisionManifest


class Vision(Kind):
    name = "vision"
    schema = VisionManifest
    shardable = False      # features are computed once and shared by every stage of the run
    plan_errors = (FileNotFoundError, ValueError, RuntimeError)

    def build_plan(self, m):
        from .plan import build_plan

        return build_plan(m)

    def preflight(self, m):
        from .plan import preflight

        return preflight(m)

    def run_stages(self, m, tracker, *, force=False, only=(), shard=None, echo=print):
        from . import protocol

        protocol.run(m, tracker, force=force, only=only, echo=echo)

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
