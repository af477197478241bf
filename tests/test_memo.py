"""Issue #15: `w2s plan` in well under a second once its model counts and code digests are remembered
(harness.memo), and a remembered value is never served for other inputs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness import memo

from test_newcomer import _PROBE, HEAVY   # the same probe as the light-command checks

ROOT = Path(__file__).resolve().parent.parent


def _plan(manifest: Path, memo_dir: Path) -> tuple[str, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), memo.MEMO_ENV: str(memo_dir)}
    r = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY), "plan", str(manifest)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    return r.stdout, json.loads(r.stderr.strip().splitlines()[-1])


def test_second_plan_imports_no_heavy_library_and_prints_the_same(tiny, tmp_path):
    first, heavy_first = _plan(tiny, tmp_path / "memo")
    second, heavy_second = _plan(tiny, tmp_path / "memo")
    assert "torch" in heavy_first            # the first plan counts parameters and digests code
    assert heavy_second == []                # the second reads them back
    assert first == second                   # same keys, same counts
    assert "trainable" in second and "params" in second


def test_remembered_model_code_equals_the_computed_one(tmp_path):
    """In a fresh process (harness.models not imported) the digest comes from the memo; it must be the
    one the walk computes once the module is imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), memo.MEMO_ENV: str(tmp_path)}
    probe = ("import sys, json; from harness.code_identity import model_code, _model_code; a = model_code(); "
             "b = model_code(); print(json.dumps([a, b, _model_code(), 'harness.models' in sys.modules]))")
    runs = [json.loads(subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                                      timeout=300, check=True).stdout) for _ in range(2)]
    assert len({*runs[0][:3], *runs[1][:3]}) == 1    # computed, remembered, read back: one digest
    assert list((tmp_path).glob("model-code.json"))


def test_remembered_recomputes_for_another_key_and_survives_a_torn_file(tmp_path, monkeypatch):
    monkeypatch.setenv(memo.MEMO_ENV, str(tmp_path))
    calls = []

    def compute(v):
        return lambda: calls.append(v) or v
    assert memo.remembered("t", {"sources": "a"}, compute(1)) == 1
    assert memo.remembered("t", {"sources": "a"}, compute(2)) == 1      # remembered
    assert memo.remembered("t", {"sources": "b"}, compute(3)) == 3      # another digest: computed
    (tmp_path / "t.json").write_text('{"trunc')                          # a torn write
    assert memo.remembered("t", {"sources": "a"}, compute(4)) == 4
    assert memo.remembered("t", {"sources": "x"}, lambda: None) is None and calls == [1, 3, 4]


def test_source_digest_follows_every_source_file(tmp_path, monkeypatch):
    pkg = tmp_path / "memo_pkg"
    shutil.copytree(ROOT / "harness" / "data", pkg)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = memo.source_digest(("memo_pkg",))
    assert memo.source_digest(("memo_pkg",)) == before
    f = pkg / "formatters.py"
    f.write_text(f.read_text() + "\n# a comment is a change too: the memo must not guess\n")
    assert memo.source_digest(("memo_pkg",)) != before
