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
               echo=print) -> None:
    invalidate_corrupt(plan, store, echo)   # files that do not match done.json: recompute, with dependants
    todo = [s for s in plan if (not only or s.key.startswith(tuple(only))) and in_shard(s, shard)]
    if only and not todo:
        raise ValueError(f"--only {', '.join(only)}: no stage key starts with it (see `w2s plan`)")
    for i, stage in enumerate(todo, 1):
        if not force and not store.is_done(stage.key) and tracker.restore(stage, store):
            echo(f"[{i}/{len(todo)}] {stage.slug}: fetched from the tracking server ({stage.key[:12]})")
            continue
        if store.is_done(stage.key) and not force:
            echo(f"[{i}/{len(todo)}] {stage.slug}: cached ({stage.key[:12]})")
            tracker.stage_cached(stage, store.metrics(stage.key), store.dir(stage.key))
            continue
        if stage.teacher and not store.is_done(stage.teacher):
            raise OrderError(f"{stage.slug}: its teacher stage {stage.teacher[:12]} has not finished "
                             f"(or was found corrupt and discarded); run it first: drop --only/--shard, or add "
                             f"--only {stage.teacher[:12]}")
        echo(f"[{i}/{len(todo)}] {stage.slug}: running ({stage.key[:12]})")
        with tracker.stage(stage) as sink:
            metrics = execute(stage, sink)
            metrics.update(pgr_of(stage, metrics, store, plan))
            store.finish(stage.key, metrics)
            tracker.stage_finished(stage, metrics, store.dir(stage.key))
        echo(f"    test_acc={metrics['test_acc']:.4f}" + (f" pgr={metrics['pgr']:.3f}" if "pgr" in metrics else ""))


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
