"""Where stages train, and the one stage loop every executor shares (`drive`).

The loop, in this process (the driver), owns everything durable: stage claims, the stage store and the
tracker. An executor only trains: `local` calls the protocol in this process (or its launched DeepSpeed
workers), one stage at a time; `ray` (harness.executors.ray_backend) sends each ready stage to a Ray
task and hands back its files. For each stage of the plan, in order:

  done and not --force            -> "cached" (and the tracker logs what it misses)
  its teacher is being trained    -> wait (here, or by another `w2s run` that holds the teacher's claim)
  claim it, or wait while another process holds it (harness.claims)
  done now (finished meanwhile)   -> "cached";  restored from the tracking server -> "fetched"
  else                            -> "running": the executor trains it; the driver writes the store,
                                     finishes the tracker run, releases the claim.

So two `w2s run` on one output dir split the stages between them and never train one twice, and a
process SIGKILLed mid-stage leaves a claim that the next one takes at once (the kernel dropped it).
Which executor ran a stage is operational: it is in no cache key and no MLflow param.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from ..claims import Claims, describe

POLL_S = 2.0      # how often a driver blocked only by other processes' claims looks again


class LocalBackend:
    """Trains each stage in this process, one at a time (the protocol's `execute`)."""
    name = "local"

    def __init__(self, execute):
        self.execute = execute
        self._done: list = []

    def room(self, running: int) -> bool:
        return running == 0

    def start(self, stage, sink) -> None:
        try:
            self._done.append((stage.key, self.execute(stage, sink)))
        except BaseException as e:  # noqa: BLE001 - handed to the loop, which marks the run and re-raises
            self._done.append((stage.key, e))

    def wait(self) -> list:
        done, self._done = self._done, []
        return done

    def cancel(self) -> None:
        pass


@dataclass
class _Active:
    stage: object
    claim: object
    run: object                  # the tracker's stage context (entered)
    started: float = field(default_factory=time.time)


def drive(todo, plan, store, tracker, backend, *, force: bool = False, echo=print, pgr_of=None,
          order_error=RuntimeError) -> None:
    n = len(todo)
    pos = {s.key: i for i, s in enumerate(todo, 1)}
    claims = Claims(store.root.parent)
    waiting, active, told = list(todo), {}, set()
    failure: BaseException | None = None
    rep = echo if hasattr(echo, "stage_started") else None    # harness.console: stage lines, bars, logs
    if rep is not None:
        rep.sweep(sum(1 for s in todo if force or not store.is_done(s.key)))

    def cached(stage, how: str, sync: bool = True) -> None:
        i = pos[stage.key]
        if how == "fetched":
            echo(f"[{i}/{n}] {stage.slug}: fetched from the tracking server ({stage.key[:12]})")
            return
        echo(f"[{i}/{n}] {stage.slug}: cached ({stage.key[:12]})")
        if sync:
            tracker.stage_cached(stage, store.metrics(stage.key), store.dir(stage.key))

    def blocked_by_teacher(stage) -> bool:
        t = stage.teacher
        if not t or store.is_done(t):
            return False
        if t in active or any(w.key == t for w in waiting) or claims.holder(t):
            return True          # trained here or by another process: wait for its labels
        raise order_error(f"{stage.slug}: its teacher stage {t[:12]} has not finished (or was found corrupt and "
                          f"discarded); run it first: drop --only/--shard, or add --only {t[:12]}")

    def try_start(stage) -> bool:
        """True when the stage left the waiting list (cached, fetched or started)."""
        if not force and store.is_done(stage.key):
            # still claimed: its holder has just written done.json and is logging it; it alone does
            cached(stage, "cached", sync=not claims.holder(stage.key))
            return True
        if blocked_by_teacher(stage):
            return False
        claim = claims.take(stage.key, stage.slug)
        if claim is None:
            if stage.key not in told and (h := claims.holder(stage.key)):
                told.add(stage.key)
                echo(f"[{pos[stage.key]}/{n}] {stage.slug}: held by {describe(h)}; waiting for it")
            return False
        try:
            if not force and store.is_done(stage.key):        # the previous holder finished it
                cached(stage, "cached")
                claim.release()
                return True
            if not force and tracker.restore(stage, store):
                cached(stage, "fetched")
                claim.release()
                return True
            if rep is not None:
                rep.stage_started(stage, pos[stage.key], n, backend.name)
            else:
                echo(f"[{pos[stage.key]}/{n}] {stage.slug}: running ({stage.key[:12]})" + backend_note(backend))
            run = tracker.stage(stage)
            sink = run.__enter__()
            sink = rep.wrap_sink(stage, sink) if rep is not None else sink
        except BaseException:
            claim.release()
            raise
        active[stage.key] = _Active(stage, claim, run)
        try:
            backend.start(stage, sink)
        except BaseException as e:
            finish(stage.key, e)
        return True

    def finish(key: str, outcome) -> None:
        a = active.pop(key)
        stage = a.stage
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            metrics = outcome
            metrics.update(pgr_of(stage, metrics, store, plan) if pgr_of else {})
            store.finish(key, metrics)
            tracker.stage_finished(stage, metrics, store.dir(key))
        except BaseException as e:
            a.run.__exit__(type(e), e, e.__traceback__)       # the tracker marks the run FAILED / KILLED
            if rep is not None:
                rep.stage_finished(stage, pos[key], n, time.time() - a.started, type(e).__name__,
                                   store.dir(key), backend.name, ok=False)
            raise
        finally:
            a.claim.release()
        a.run.__exit__(None, None, None)
        line = f"test_acc={metrics['test_acc']:.4f}" + (f" pgr={metrics['pgr']:.3f}" if "pgr" in metrics else "")
        if rep is not None:
            rep.stage_finished(stage, pos[key], n, time.time() - a.started, line, store.dir(key), backend.name)
        elif backend.name == "local":
            echo(f"    {line}")
        else:     # stages end out of order: name them
            echo(f"[{pos[key]}/{n}] {stage.slug}: finished in {time.time() - a.started:.0f} s: {line}")

    try:
        while waiting or active:
            for stage in list(waiting):
                if failure is not None or not backend.room(len(active)):
                    break
                if try_start(stage):
                    waiting.remove(stage)
            if active:
                for key, outcome in backend.wait():
                    try:
                        finish(key, outcome)
                    except BaseException as e:  # noqa: BLE001
                        if not isinstance(e, Exception):
                            raise               # Ctrl-C: stop now (the finally below ends the rest)
                        failure = failure or e   # let the stages in flight finish and be recorded
            elif failure is not None:
                break
            elif waiting:
                time.sleep(POLL_S)    # every remaining stage is held by another process, or waits on one
        if failure is not None:
            raise failure
    finally:
        if active:        # Ctrl-C, or an error of the driver itself: the stages in flight end as KILLED
            backend.cancel()
            for a in list(active.values()):
                with contextlib.suppress(BaseException):
                    a.run.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)
                a.claim.release()


def backend_note(backend) -> str:
    return "" if backend.name == "local" else f" on {backend.name}"

