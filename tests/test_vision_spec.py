"""Vision stages carry a resolved, immutable description too (vision.spec): operational settings leave
every stage key unchanged, identity settings move exactly the stages they reach, and the stage functions
read the description, never the manifest."""
import dataclasses
import inspect
import pickle
import shutil

import pytest
from test_vision import make_cifar_tar, manifest

from harness.manifest import load
from vision import protocol
from vision.kind import Vision

VISION = Vision()


@pytest.fixture(scope="module")
def vis(tmp_path_factory):
    root = tmp_path_factory.mktemp("vis")
    return manifest(root, make_cifar_tar(root / "data"))


def _plan(path, overrides=()):
    return VISION.build_plan(load(path, list(overrides)))


@pytest.mark.parametrize("overrides", [["vision.feature_batch=7"], ["vision.threads=2"], ["output.dir=/elsewhere"],
                                       ["vision.strong.0.name=probe"], ["vision.weak.name=teacher"]],
                         ids=lambda o: o[0].split("=")[0])
def test_vision_operational_settings_leave_every_stage_key_unchanged(vis, overrides):
    base, changed = _plan(vis), _plan(vis, overrides)
    assert [s.key for s in changed] == [s.key for s in base]
    assert [s.spec for s in changed] != [s.spec for s in base]      # the override reached the descriptions


def test_the_same_images_elsewhere_are_the_same_stages(vis, tmp_path):
    moved = shutil.copytree(vis.parent / "data", tmp_path / "moved")
    base, changed = _plan(vis), _plan(vis, [f"vision.data_dir={moved}"])
    assert [s.key for s in changed] == [s.key for s in base]
    assert {s.spec.images.data_dir for s in changed} == {str(moved)}


def test_vision_identity_settings_move_exactly_the_stages_they_reach(vis):
    base = {(s.kind, s.model, s.seed, tuple(s.roles)): s.key for s in _plan(vis)}
    for overrides, moved in ((["vision.probe.lr=0.02"], {"ceiling", "transfer"}),
                             (["fidelity.schedule=prefix_bug"], {"ceiling", "transfer"}),
                             (["vision.weak.epochs=3"], {"weak", "transfer"}),    # students through the teacher key
                             (["vision.split.n_train=45"], {"weak", "ceiling", "transfer"})):
        now = {(s.kind, s.model, s.seed, tuple(s.roles)): s.key for s in _plan(vis, overrides)}
        role = {k: "transfer" if k[0] == "transfer" else k[3][0] for k in base}
        assert {role[k] for k in base if now[k] != base[k]} == moved, overrides


def test_the_vision_description_is_immutable_travels_and_is_what_stages_read(vis):
    sup, *_ = stages = _plan(vis)
    assert sup.spec.probe is None and all(s.spec.probe is not None for s in stages if "weak" not in s.roles)
    assert "probe" not in sup.identity and sup.identity["model"] == sup.spec.plain_model()
    with pytest.raises(dataclasses.FrozenInstanceError):
        sup.spec.feature_batch = 1
    with pytest.raises(TypeError):
        sup.spec.model["epochs"] = 9                       # a read-only mapping
    again = pickle.loads(pickle.dumps(stages[-1]))
    assert again.spec == stages[-1].spec and again.key == stages[-1].key
    for fn in (protocol.supervise, protocol.ceiling, protocol.transfer):
        params = list(inspect.signature(fn).parameters)
        assert params[0] == "stage" and "m" not in params
    tags = stages[-1].spec.operational()
    assert tags["micro_batch"] == 10 and tags["eval_batch"] == 64 and "micro_batch" not in sup.spec.operational()
