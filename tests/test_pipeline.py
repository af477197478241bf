"""The one pipeline (harness.pipeline) with each kind (docs/architecture.md): the kind decides what the
shared steps do, and bad input stops before any compute with the exit codes of every `w2s run`."""
from __future__ import annotations

from click.testing import CliRunner

from harness.cli import main
from harness.kinds import kind_of
from harness.manifest import load
from test_vision import make_cifar_tar, manifest


def test_vision_runs_through_the_pipeline_with_its_kind(tmp_path):
    path = manifest(tmp_path, make_cifar_tar(tmp_path / "data"))
    m = load(path)
    kind = kind_of(m)
    assert kind.name == "vision" and not kind.shardable
    stages = kind.build_plan(m)
    assert {s.kind for s in stages} == {"gt", "transfer"}
    assert kind.data_identity(m)["dataset"] == "cifar10"
    # --shard is refused for a kind whose stages share features: exit 2, before any stage or tracker
    out = CliRunner().invoke(main, ["run", str(path), "--shard", "0/2", "--no-tracking"])
    assert out.exit_code == 2 and "--shard is not supported for vision manifests" in out.output
    assert not (tmp_path / "runs").exists()
    # so is a Ray executor (one process computes the shared features): refused before Ray is touched
    assert kind.distributable is False and kind_of(load_language()).distributable is True
    out = CliRunner().invoke(main, ["run", str(path), "--executor", "ray", "--no-tracking"])
    assert out.exit_code == 2 and "--executor ray is not supported for vision manifests" in out.output
    assert not (tmp_path / "runs").exists()


def load_language():
    from conftest import ROOT

    return load(ROOT / "experiments" / "quickstart.yaml")


def test_plan_shows_the_kinds_own_table(tmp_path):
    path = manifest(tmp_path, make_cifar_tar(tmp_path / "data"))
    out = CliRunner().invoke(main, ["plan", str(path)])
    assert out.exit_code == 0, out.output
    assert "0/6 cached; frozen models see" in out.output      # vision.kind's table: 2 seeds x 3 stages


def test_what_this_machine_lacks_exits_3_before_any_compute(tmp_path):
    path = manifest(tmp_path, tmp_path / "no-such-dir")
    out = CliRunner().invoke(main, ["run", str(path), "--no-tracking"])
    assert out.exit_code == 3 and "error: cannot run here: cifar10" in out.output, out.output
    assert not (tmp_path / "runs" / "stages").exists()
