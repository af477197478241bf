"""Issue #16, finding 1: the code that computes a stage is part of its identity. Changing a loss, a
formatter, the model loading or the protocol recomputes exactly the stages that run it (and, through
teacher keys, their students), locally and through the tracking-server restore; comments do not count."""
import dataclasses
import importlib
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from conftest import ROOT
from harness import losses
from harness.data import DATASETS
from harness.manifest import load
from harness.plan import build_plan


def keys(path, *overrides) -> dict:
    return {s.slug: s.key for s in build_plan(load(path, list(overrides)))}


def changed(before: dict, after: dict) -> set:
    return {slug for slug in before if before[slug] != after[slug]}


def flipped_xent(logits, soft_labels, step_frac=0.0):
    """xent with its targets flipped: the 'code change' of the issue."""
    return losses.soft_ce(logits.float(), soft_labels.float().flip(-1))


def other_logconf(logits, soft_labels, step_frac=0.0, **params):
    return losses.soft_ce(logits.float(), soft_labels.float()) * 2


def test_a_loss_change_recomputes_exactly_its_stages(tiny, monkeypatch):
    base = keys(tiny)
    assert len(base) == 4
    monkeypatch.setitem(losses.LOSSES, "logconf", other_logconf)
    assert changed(base, keys(tiny)) == {"transfer tiny-gpt2->tiny-bert logconf s0"}
    monkeypatch.setitem(losses.LOSSES, "logconf", losses.logconf)
    assert keys(tiny) == base, "restoring the code restores the keys (and the cache)"
    # xent is the ground-truth loss: every gt stage changes, so every student (teacher key) does too
    monkeypatch.setitem(losses.LOSSES, "xent", flipped_xent)
    assert changed(base, keys(tiny)) == set(base)


def test_a_helper_change_is_seen_through_the_registered_function(tiny, monkeypatch):
    base = keys(tiny)
    monkeypatch.setattr(losses, "logconf_coef", lambda step_frac, aux_coef, warmup_frac, warmup: aux_coef)
    assert changed(base, keys(tiny)) == {"transfer tiny-gpt2->tiny-bert logconf s0"}


def test_a_formatter_change_recomputes_that_dataset_only(tiny, monkeypatch):
    base = keys(tiny)
    spec = DATASETS["sst2"]
    monkeypatch.setitem(DATASETS, "sst2", dataclasses.replace(spec, formatter=lambda row, rng: (row["sentence"].lower(),
                                                                                             int(row["label"]))))
    assert changed(base, keys(tiny)) == set(base)
    from harness.code_identity import stage_code

    assert stage_code("boolq", "xent") == stage_code("boolq", "xent")
    assert stage_code("sst2", "xent")["formatter"] != stage_code("amazon_polarity", "xent")["formatter"]


def test_comments_and_docstrings_do_not_count_code_does(tmp_path, monkeypatch):
    from harness.code_identity import code_digest

    variants = {
        "a": "def f(x):\n    return x + 1\n",
        "b": 'def f(x):\n    """Adds one."""\n    # a comment\n    return (x +\n            1)\n',
        "c": "def f(x):\n    return x + 2\n",
    }
    monkeypatch.syspath_prepend(str(tmp_path))
    digests = {}
    for name, src in variants.items():
        (tmp_path / "harness_probe_{}.py".format(name)).write_text(src)
        mod = importlib.import_module(f"harness_probe_{name}")
        mod.f.__module__ = "harness.probe"        # walked as harness code
        digests[name] = code_digest(mod.f)
    assert digests["a"] == digests["b"] != digests["c"]


def test_cli_plan_sees_a_patched_loss(tiny_run, tmp_path):
    """The finished tiny sweep is all cached; the same plan in a process whose logconf differs (byte
    code only: defined in `python -c`, no source file) has exactly that student to run."""
    import shutil

    shutil.copytree(tiny_run.parent / "runs", tmp_path / "runs")
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_run.read_text().replace(str(tiny_run.parent / "runs"), str(tmp_path / "runs")))
    script = textwrap.dedent(f"""
        import sys
        import harness.losses as L
        if sys.argv[1] == "patch":
            def logconf(logits, soft_labels, step_frac=0.0, **kw):
                return L.soft_ce(logits.float(), soft_labels.float()) * 3
            L.LOSSES["logconf"] = logconf
        from harness.cli import main
        main(["plan", {str(path)!r}], standalone_mode=False)
    """)
    out = {}
    for mode in ("plain", "patch"):
        proc = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, cwd=ROOT,
                              env={"COLUMNS": "200", **__import__("os").environ}, timeout=300)
        assert proc.returncode == 0, proc.stderr
        out[mode] = proc.stdout
    assert "4/4 cached" in out["plain"]
    assert "3/4 cached" in out["patch"]
    row = next(line for line in out["patch"].splitlines() if "logconf" in line and "transfer" in line)
    assert "to run" in row


def test_tracking_server_restore_matches_by_key(tiny, tmp_path, monkeypatch):
    """Machine A finishes the 4 stages into MLflow (real sqlite store; the stages are not trained, they
    write a prediction table); machine B, with a changed logconf, restores 3 and computes the 4th."""
    from harness.mlflow_tracking import default_uri
    from harness.runner import run_stages
    from harness.store import StageStore
    from harness.trackers import make_tracker

    def fake(store, ran):
        def execute(stage, sink):
            ran.append(stage.slug)
            store.begin(stage.key, stage.identity)
            store.write_table(stage.key, "predictions_test", pd.DataFrame({"id": ["a"], "hard_label": [1]}))
            return {"test_acc": 0.5 + 0.1 * (stage.kind == "gt"), "weak_acc": 0.6, "steps": 1}
        return execute

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ma = load(tiny)
    plan_a, store_a, ran_a = build_plan(ma), StageStore(ma.output.dir), []
    tracker = make_tracker(ma, None, enabled=True)
    tracker.start(ma, plan_a, tiny)
    run_stages(plan_a, store_a, tracker, fake(store_a, ran_a), echo=lambda *_: None)
    tracker.finish({}, tmp_path, ok=True)
    assert len(ran_a) == 4

    monkeypatch.setitem(losses.LOSSES, "logconf", other_logconf)
    mb = load(tiny, [f"output.dir={tmp_path / 'machine_b'}"])
    plan_b, store_b, ran_b, said = build_plan(mb), StageStore(mb.output.dir), [], []
    tracker_b = make_tracker(mb, default_uri(ma), enabled=True)
    tracker_b.start(mb, plan_b, tiny)
    run_stages(plan_b, store_b, tracker_b, fake(store_b, ran_b), echo=said.append)
    tracker_b.finish({}, tmp_path, ok=True)
    assert ran_b == ["transfer tiny-gpt2->tiny-bert logconf s0"]
    assert sum("fetched from the tracking server" in s for s in said) == 3
    assert all(store_b.is_done(s.key) for s in plan_b)


@pytest.mark.parametrize("module", ["harness.protocol", "harness.train"])
def test_protocol_modules_are_in_every_stage_identity(tiny, module):
    from harness.code_identity import PROTOCOL_MODULES

    assert module in PROTOCOL_MODULES
    for s in build_plan(load(tiny)):
        assert set(s.identity["code"]) == {"version", "protocol", "data", "formatter", "model", "loss"}


# -- vision stages (vision/plan.py): the same rule ------------------------------------------------------

def vision_manifest(tmp_path):
    import yaml

    m = {"name": "vision-code", "seeds": [0], "output": {"dir": str(tmp_path / "runs")},
         "vision": {"dataset": "synthetic", "n_classes": 3,
                    "split": {"n_images": 120, "n_weak_train": 30, "n_train": 50, "n_test": 40},
                    "weak": {"id": "small_cnn", "width": 4, "epochs": 1},
                    "strong": [{"id": "tiny_cnn", "width": 4}]}}
    path = tmp_path / "vision.yaml"
    path.write_text(yaml.safe_dump(m))
    return path


def vision_keys(path) -> dict:
    from vision.kind import Vision

    return {s.slug: s.key for s in Vision().build_plan(load(path))}


def test_vision_stages_carry_the_code_that_computes_them(tmp_path, monkeypatch):
    from vision import models, protocol

    path = vision_manifest(tmp_path)
    base = vision_keys(path)
    weak, ceiling, student = "gt small_cnn train1 s0", "gt tiny_cnn train2 s0", "transfer small_cnn->tiny_cnn xent s0"
    assert set(base) == {weak, ceiling, student}
    assert all(set(s.identity["code"]) == {"version", "stage"} for s in
               __import__("vision.kind", fromlist=["Vision"]).Vision().build_plan(load(path)))

    def probe_with_other_loss(x, t, x_test, y_test, cfg, schedule, seed, sink=None, loss=None):
        return protocol.softmax(x_test[:, :3]), {"steps": 0, "test_acc": []}

    monkeypatch.setattr(protocol, "train_probe", probe_with_other_loss)   # the probe (and its loss)
    assert changed(base, vision_keys(path)) == {ceiling, student}
    monkeypatch.undo()
    assert vision_keys(path) == base
    monkeypatch.setattr(models, "train_small_cnn", lambda model, x, y, r, seed, sink=None: None)   # weak training
    assert changed(base, vision_keys(path)) == {weak, student}, "the student follows its teacher's key"
    monkeypatch.undo()
    monkeypatch.setattr(models, "load", lambda r, n_classes=None: None)                            # model loading
    assert changed(base, vision_keys(path)) == set(base)


def test_vision_feature_cache_keys_on_the_model_code(monkeypatch):
    """Frozen features are cached across runs (vision.features): a change of the code that builds the
    model or feeds it images must not reuse the old features."""
    from vision import data, features, models

    r = {"id": "tiny_cnn", "weights": None, "sha256": None, "hub_commit": None, "transform": "cifar", "image_size": 32}
    base = features.identity(r, "features")
    monkeypatch.setattr(models, "conv_net", lambda width, n_classes: None)
    assert features.identity(r, "features") != base
    monkeypatch.undo()
    monkeypatch.setattr(data, "to_tensor", lambda img, transform, size: None)
    assert features.identity(r, "features") != base
    monkeypatch.undo()
    assert features.identity(r, "features") == base


def test_probe_feature_cache_keys_on_the_model_code(tiny, monkeypatch):
    """Linear-probe features are cached across stages and runs (harness.features): a stage recomputed
    because the model-loading code changed must not read features the old code computed."""
    from harness import models
    from harness.protocol import feature_identity

    def ident():
        return feature_identity(build_plan(load(tiny))[0], "last", 24, "drop")

    base = ident()
    assert base["code"]["model"] and base["code"]["protocol"]
    monkeypatch.setattr(models, "load_classifier", lambda *a, **k: None)
    assert ident() != base
    monkeypatch.undo()
    assert ident() == base
    monkeypatch.setitem(losses.LOSSES, "xent", flipped_xent)
    assert ident() == base, "the training loss does not change a frozen backbone's features"


def test_lookup_tables_count_caches_do_not(tiny, monkeypatch):
    """A module-level table of plain data that the code reads (the encoders' default pooling) is part of
    the digest; a per-process cache (an underscore name filled while running) is not, or keys would
    move in the middle of a run."""
    from harness import models
    from vision import features

    base = keys(tiny)
    monkeypatch.setitem(models.DEFAULT_POOLING, "encoder", "cls")
    assert changed(base, keys(tiny)) == set(base), "every stage loads a model through this table"
    monkeypatch.undo()
    assert keys(tiny) == base
    from harness import lora

    monkeypatch.setattr(lora, "default_targets", lambda config: ["c_attn"])    # where LoRA adapters go
    assert changed(base, keys(tiny)) == set(base)
    monkeypatch.undo()
    from harness.code_identity import code_digest

    before = code_digest(features.outputs)
    from harness.features import _SHARED     # vision's features memo (the shared feature store's)

    monkeypatch.setitem(_SHARED, "some-dir", object())
    assert code_digest(features.outputs) == before
