"""The resolved stage description (harness.spec): one declaration of identity vs operational decides the
stage keys, the MLflow operational tags and the manifest reference; the description is immutable and
is what training, launch and the worker read."""
import dataclasses
import inspect
import pickle

import pytest

from harness import protocol, spec as specs, zero
from harness.manifest import load
from harness.plan import build_plan
from harness.schema_docs import render

OPERATIONAL = [["train.micro_batch=4"], ["train.eval_batch=3"], ["models.1.micro_batch=2"], ["output.dir=/elsewhere"],
               ["output.log_every=1"], ["tracking.mlflow=false"], ["tracking.uri=http://127.0.0.1:1"],
               ["resources.launcher=torchrun", "resources.gpus=2", "resources.zero_stage=3"],
               ["models.0.resources={launcher: deepspeed, offload_optimizer: cpu}"], ["models.0.name=weakling"]]
IDENTITY = [["models.1.lr=0.002"], ["train.epochs=3"], ["models.1.batch_size=8"], ["dataset.max_ctx=32"],
            ["fidelity.precision=reference"], ["fidelity.pooling=nonzero_count"], ["models.0.trust_remote_code=true"],
            ["train.lora={r: 2}"], ["train.dropout=true"]]


def _keys(tiny, overrides=()):
    return [s.key for s in build_plan(load(tiny, list(overrides)))]


@pytest.mark.parametrize("overrides", OPERATIONAL, ids=lambda o: o[0].split("=")[0])
def test_operational_settings_leave_every_stage_key_unchanged(tiny, overrides):
    base = build_plan(load(tiny))
    changed = build_plan(load(tiny, overrides))
    assert [s.key for s in changed] == [s.key for s in base]
    # ... while the stages' descriptions did take the new value (the override was not a no-op); tracking is
    # the one operational section no stage description carries (training never reads it)
    if not overrides[0].startswith("tracking."):
        assert [s.spec for s in changed] != [s.spec for s in base]


@pytest.mark.parametrize("overrides", IDENTITY, ids=lambda o: o[0].split("=")[0])
def test_identity_settings_change_the_keys_they_touch(tiny, overrides):
    base, changed = _keys(tiny), _keys(tiny, overrides)
    assert len(changed) == len(base) and changed != base


def test_one_declaration_drives_keys_tags_and_docs(tiny):
    stage = build_plan(load(tiny))[0]
    ident, ops = stage.identity["model"], stage.spec.operational()
    train = {f.name: f.metadata["operational"] for f in dataclasses.fields(specs.TrainSpec)}
    for name, operational in train.items():
        if operational:
            assert name not in ident and name in ops and specs.is_operational(f"train.{name}")
            assert f"| `{name}` | int \\| None | None | *operational*" in render()
        elif getattr(stage.spec.train, name) is not None:
            assert name in ident and name not in ops and not specs.is_operational(f"train.{name}")
    assert {"micro_batch", "eval_batch"} <= {k for k, v in train.items() if v}
    assert specs.is_operational("resources.gpus") and specs.is_operational("models[].resources.launcher")
    assert not specs.is_operational("dataset.max_ctx") and not specs.is_operational("models[].id")


def test_the_description_is_immutable_and_travels(tiny):
    st = build_plan(load(tiny, ["train.lora={r: 2}", "resources.deepspeed={wall_clock_breakdown: true}"]))[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.spec.train.lr = 1.0
    with pytest.raises(TypeError):
        st.spec.train.lora["r"] = 4                     # a read-only mapping, not a dict
    with pytest.raises(TypeError):
        st.spec.resources.deepspeed["wall_clock_breakdown"] = False
    assert st.identity["model"]["lora"]["r"] == 2 and isinstance(st.identity["model"]["lora"], dict)
    again = pickle.loads(pickle.dumps(st))          # Ray tasks and spawned processes get a pickled stage
    assert again.spec == st.spec and again.key == st.key


def test_training_and_launch_take_the_description_not_the_manifest(tiny):
    for fn in (protocol.fine_tune, protocol.ground_truth, protocol.transfer):
        params = inspect.signature(fn).parameters
        assert list(params)[0] == "stage" and "m" not in params and "deepspeed" in params
    assert not hasattr(zero, "active") and not hasattr(zero, "activate")    # no config in a module global
    m = load(tiny, ["resources.launcher=torchrun", "resources.gpus=2", "resources.zero_stage=2"])
    st = build_plan(m)[0]
    cfg = zero.validate(zero.ds_config(st.spec), st.spec.resources.world)
    assert cfg["zero_optimization"]["stage"] == 2 and cfg["train_micro_batch_size_per_gpu"] == st.spec.train.micro_batch
