"""The interface a kind of experiment implements, and the language kind. harness.pipeline runs every kind
the same way (gate -> plan -> run stages -> collect -> report); a kind supplies only what differs:
its manifest schema, its stages, what this machine lacks, how stages compute, and its extra tables.

A new kind is a new folder with a schema (built on harness.manifest_base), a plan producing
harness.plan.Stage objects, a protocol computing them through harness.runner.run_stages, and a Kind
subclass; then one line in harness.kinds.KINDS and one in harness.manifest.load's sections.

Everything heavy (torch, transformers) is imported inside the methods: `w2s run` reports a dead
tracking server or an invalid manifest before any of it loads."""
from __future__ import annotations

from .manifest import Manifest


class Kind:
    name: str = "?"
    schema: type = object          # the pydantic manifest schema of this kind
    shardable: bool = True         # can `--shard I/N` split its stages between machines
    distributable: bool = True     # can `--executor ray` train its stages as cluster tasks
    plan_errors: tuple = (FileNotFoundError, ValueError)   # from build_plan: bad input, exit 2

    @property
    def input_errors(self) -> tuple:
        """From run_stages: bad input found before a stage trains (exit 2): a stage order the runner refuses."""
        from .runner import OrderError

        return (OrderError,)

    def build_plan(self, m) -> list:
        """The content-addressed stages (harness.plan.Stage), dependencies first."""
        raise NotImplementedError

    def preflight(self, m) -> list[str]:
        """What this machine lacks to run the uncached stages (data, weights, GPUs), before any compute."""
        raise NotImplementedError

    def run_stages(self, m, tracker, *, force=False, only=(), shard=None, echo=print) -> None:
        raise NotImplementedError

    def data_identity(self, m) -> dict:
        """What the data is (results.json provenance; the stages' keys hold it too)."""
        raise NotImplementedError

    def dataset_name(self, m) -> str:
        """The data's name in results.json and the tracker's tags."""
        return m.dataset.name

    def loss_names(self, m) -> list[str]:
        """The losses its students train with (results.json, `w2s report`)."""
        return [lc.name for lc in m.losses]

    def show_plan(self, m, stages, console, check: bool) -> bool:
        """Print the kind's own `w2s plan` table and return True; False: the CLI's (language) table."""
        return False

    def collect(self, m, stages, store) -> dict:
        """The results tables (harness.results.collect, plus any of the kind's own)."""
        from . import results

        return results.collect(m, stages, store)

    def render(self, tables: dict, console) -> None:
        from . import results

        results.render(tables, console)


class Language(Kind):
    """Text classification with HF models (harness.plan, harness.protocol): the paper's NLP tier."""
    name = "language"
    schema = Manifest

    def build_plan(self, m):
        from .plan import build_plan

        return build_plan(m)

    def data_identity(self, m):
        from .plan import data_identity

        return data_identity(m)

    def preflight(self, m):
        from .preflight import problems, use_cache_if_hub_unreachable

        use_cache_if_hub_unreachable(m)     # before any model load: no minutes of retries per stage
        return problems(m)

    @property
    def input_errors(self):
        from .data import DataError      # names the file, row and field; raised before the stage trains

        return (DataError, *super().input_errors)

    def run_stages(self, m, tracker, *, force=False, only=(), shard=None, echo=print, backend=None):
        from . import protocol

        protocol.run(m, tracker, force=force, only=only, shard=shard, echo=echo, backend=backend)
