"""Registries own their special cases (docs/architecture.md): a second registration under a taken name
fails instead of silently replacing the first; a loss's defaults (what manifest `params:` are checked
against) must be keyword parameters of its function; a dataset carries its own lint warning; every
loaded manifest belongs to exactly one registered kind."""
import pytest

import harness.data as data
import harness.losses as losses
from harness.kind import Kind, Language
from harness.kinds import KINDS, kind_of
from harness.manifest import Manifest, lint


def test_a_loss_name_registers_once():
    before = dict(losses.LOSSES)
    with pytest.raises(ValueError, match="'xent' is already registered"):
        losses.register("xent")(lambda logits, soft_labels, step_frac=0.0: logits.sum())
    assert losses.LOSSES == before


def test_loss_defaults_are_checked_against_the_signature():
    with pytest.raises(TypeError, match=r"\['alpha'\] are not keyword parameters"):
        losses.register("_arch_test_loss", {"alpha": 1.0})(lambda logits, soft_labels, step_frac=0.0, beta=1.0: 0)
    with pytest.raises(TypeError, match="step_frac"):   # the trainer's own arguments are not params
        losses.register("_arch_test_loss", {"step_frac": 0.5})(lambda logits, soft_labels, step_frac=0.0: 0)
    assert "_arch_test_loss" not in losses.LOSSES and "_arch_test_loss" not in losses.LOSS_DEFAULTS


def test_a_dataset_name_registers_once():
    with pytest.raises(ValueError, match="'sst2' is already registered"):
        data.register(data.DATASETS["sst2"])


def test_a_dataset_carries_its_lint_warning():
    base = {"name": "x", "models": [{"id": "gpt2"}, {"id": "gpt2-medium"}], "dataset": {"n_test_docs": 1000}}
    hh = Manifest.model_validate({**base, "dataset": {**base["dataset"], "name": "anthropic_hh"}})
    sst2 = Manifest.model_validate({**base, "dataset": {**base["dataset"], "name": "sst2"}})
    assert data.DATASETS["anthropic_hh"].warning in lint(hh)
    assert "Q20" in data.DATASETS["anthropic_hh"].warning
    assert not any("at chance" in w for w in lint(sst2))


def test_every_manifest_has_one_kind():
    from vision.kind import Vision
    from vision.manifest import VisionManifest

    assert [type(k) for k in KINDS] == [Language, Vision]
    assert {k.schema for k in KINDS} == {Manifest, VisionManifest}
    assert all(isinstance(k, Kind) for k in KINDS)
    m = Manifest.model_validate({"name": "x", "dataset": {"name": "sst2"}, "models": [{"id": "gpt2"}, {"id": "gpt2-medium"}]})
    assert kind_of(m).name == "language" and kind_of(m).shardable
    with pytest.raises(TypeError, match="not the manifest of a registered kind"):
        kind_of(object())
