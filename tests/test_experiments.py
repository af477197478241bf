"""Every shipped manifest validates and plans; example manifests say how to run them; the schema
docs are current."""
from pathlib import Path

import pytest

from conftest import ROOT, SHARED, w2s

SHARED_DATA = SHARED / "data"
MANIFESTS = sorted(p for p in (ROOT / "experiments").rglob("*.yaml")
                   if not p.name.startswith("_") and "expected" not in p.parts)


def test_there_are_manifests():
    names = {p.relative_to(ROOT / "experiments").as_posix() for p in MANIFESTS}
    assert "quickstart.yaml" in names
    assert {f"paper/{d}.yaml" for d in ("sciq", "amazon_polarity", "boolq", "cosmos_qa", "anthropic_hh")} <= names


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.relative_to(ROOT / "experiments").as_posix())
def test_manifest_starts_with_its_run_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# Run:") and ("w2s run" in first or "make " in first), first


def test_every_manifest_validates_and_plans(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from harness.cli import main

    monkeypatch.setenv("W2S_DATA_DIR", str(SHARED_DATA))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = CliRunner().invoke(main, ["validate", *map(str, MANIFESTS)])
    assert out.exit_code == 0, out.output
    assert out.output.count("ok: ") == len(MANIFESTS)
    for path in MANIFESTS:   # in-process: one import of torch for all of them
        plan = CliRunner().invoke(main, ["plan", str(path), "-o", f"output.dir={tmp_path}"])
        assert plan.exit_code == 0 and "to run" in plan.output, (path, plan.output)


def test_schema_docs_are_current():
    out = w2s("schema-docs")
    assert out.stdout == (ROOT / "docs" / "manifest.md").read_text(), "run: w2s schema-docs > docs/manifest.md"
