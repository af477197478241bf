"""The stage loop shared by the language and vision protocols: tracking-server restore, cache hits,
teacher order, done markers and tracker hooks. Each protocol supplies `execute(stage, sink) -> metrics`."""
from __future__ import annotations

from typing import Callable

from .metrics import pgr
from .plan import Stage
from .store import StageStore, invalidate_corrupt


class OrderError(RuntimeError):
    """A stage asked for (--only, --shard) before the stage it trains on: a usage error, exit 2."""


def in_shard(stage: Stage, shard: tuple[int, int] | None) -> bool:
    """Shard i of n owns a weak supervisor together with all its students, so shards never wait on
    each other; ceilings are spread by their own key. Shards sharing a tracking server then reuse
    each other's finished stages."""
    if shard is None:
        return True
    i, n = shard
    return int((getattr(stage, "root", None) or stage.teacher or stage.key)[:12], 16) % n == i   # chains: whole


def run_stages(plan: list[Stage], store: StageStore, tracker, execute: Callable[[Stage, object], dict], *,
               force: bool = False, only: tuple[str, ...] = (), shard: tuple[int, int] | None = None,
               echo=print, backend=None) -> None:
    """`backend`: where stages train (harness.executors); default: in this process, one at a time.
    Every executor takes a stage claim first, so concurrent `w2s run`s never train a stage twice."""
    from .executors import LocalBackend, drive

    invalidate_corrupt(plan, store, echo)   # files that do not match done.json: recompute, with dependants
    todo = [s for s in plan if (not only or s.key.startswith(tuple(only))) and in_shard(s, shard)]
    if only and not todo:
        raise ValueError(f"--only {', '.join(only)}: no stage key starts with it (see `w2s plan`)")
    drive(todo, plan, store, tracker, backend or LocalBackend(execute), force=force, echo=echo, pgr_of=pgr_of,
          order_error=OrderError)


def pgr_of(stage: Stage, metrics: dict, store: StageStore, plan: list[Stage]) -> dict:
    """PGR for a transfer stage when its ceiling has finished (the results table recomputes it anyway)."""
    if stage.kind != "transfer":
        return {}
    ceiling = next((s for s in plan if s.kind == "gt" and s.model == stage.model and s.seed == stage.seed
                    and "ceiling" in s.roles), None)
    if ceiling is None or not store.is_done(ceiling.key):
        return {}
    c = store.metrics(ceiling.key)["test_acc"]
    return {"ceiling_acc": c, "pgr": pgr(metrics["weak_acc"], metrics["test_acc"], c)}
