"""Issue #16, finding 1, through a real `mlflow server`: the tracking-server restore hands a machine only
stages whose identity, code included, matches its own. Machine A records the tiny sweep's 4 stages on
the server; machine B, whose logconf code differs, fetches the 3 it shares and computes the logconf
student itself. The stages are not trained (each writes a prediction table): this is about keys and the
restore path, over HTTP with proxied artifacts."""
from __future__ import annotations

import pandas as pd
import pytest
from helpers_mlflow import MlflowServer

from harness import losses
from harness.manifest import load
from harness.mlflow_tracking import MlflowTracker
from harness.plan import build_plan
from harness.runner import run_stages
from harness.store import StageStore


@pytest.fixture
def server(tmp_path):
    srv = MlflowServer(tmp_path / "server").start()
    yield srv
    srv.stop()


def other_logconf(logits, soft_labels, step_frac=0.0, **params):
    return losses.soft_ce(logits.float(), soft_labels.float()) * 2


def machine(path, out, uri, ran: list, said: list):
    m = load(path, [f"output.dir={out}"])
    plan, store = build_plan(m), StageStore(out)

    def execute(stage, sink):
        ran.append(stage.slug)
        store.begin(stage.key, stage.identity)
        store.write_table(stage.key, "predictions_test", pd.DataFrame({"id": ["a"], "hard_label": [1]}))
        if stage.kind == "gt" and stage.half == "train1":
            store.write_table(stage.key, "weak_labels", pd.DataFrame({"id": ["b"], "text_hash": ["h"],
                                                                      "soft_label": [[0.4, 0.6]], "hard_label": [1]}))
        return {"test_acc": 0.5 + 0.1 * (stage.kind == "gt"), "weak_acc": 0.6, "steps": 1}

    tracker = MlflowTracker(m, uri)
    tracker.start(m, plan, path)
    run_stages(plan, store, tracker, execute, echo=said.append)
    tracker.finish({"pgr": pd.DataFrame(), "stages": pd.DataFrame(), "summary": pd.DataFrame()}, out)
    return plan, store


def test_a_stage_whose_code_changed_is_not_restored_from_the_server(tiny, tmp_path, server, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ran_a, said_a = [], []
    plan_a, _ = machine(tiny, tmp_path / "a", server.uri, ran_a, said_a)
    assert len(ran_a) == 4

    monkeypatch.setitem(losses.LOSSES, "logconf", other_logconf)        # machine B runs other code
    ran_b, said_b = [], []
    plan_b, store_b = machine(tiny, tmp_path / "b", server.uri, ran_b, said_b)
    assert ran_b == ["transfer tiny-gpt2->tiny-bert logconf s0"], said_b
    assert sum("fetched from the tracking server" in s for s in said_b) == 3
    changed = {s.slug for s in plan_b} - {s.slug for s in plan_b if s.key in {a.key for a in plan_a}}
    assert changed == {"transfer tiny-gpt2->tiny-bert logconf s0"}
    assert all(store_b.is_done(s.key) for s in plan_b)

    monkeypatch.undo()                  # machine C runs A's code again: all 4 come from the server
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ran_c, said_c = [], []
    machine(tiny, tmp_path / "c", server.uri, ran_c, said_c)
    assert ran_c == [] and sum("fetched from the tracking server" in s for s in said_c) == 4
