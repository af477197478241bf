"""Manifest validation (harness.manifest): every problem reported at once, each as
`FILE:LINE: field.path: message (hint)`; overrides, env expansion, lint; and the real `w2s validate`."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.manifest import Manifest, ManifestError, lint, load

REPO = Path(__file__).resolve().parents[1]
W2S = Path(sys.executable).parent / "w2s"

GOOD = """\
name: t
dataset:
  name: sst2
  n_docs: 400
  n_test_docs: 300
models:
  - id: gpt2
  - id: gpt2-medium
  - id: gpt2-large
losses: [xent, logconf]
seeds: [0, 1]
"""


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def problems(path: Path, overrides=()) -> list[str]:
    with pytest.raises(ManifestError) as e:
        load(path, list(overrides))
    assert str(e.value) == "\n".join(e.value.problems)
    return e.value.problems


def one(path: Path, overrides=()) -> str:
    ps = problems(path, overrides)
    assert len(ps) == 1, ps
    return ps[0]


def test_good_manifest_loads(tmp_path):
    m = load(write(tmp_path, GOOD))
    assert isinstance(m, Manifest)
    assert [x.label for x in m.models] == ["gpt2", "gpt2-medium", "gpt2-large"]
    assert m.pairs_list() == [("gpt2", "gpt2-medium"), ("gpt2", "gpt2-large"), ("gpt2-medium", "gpt2-large")]
    assert lint(m) == []


# -- one problem each: file, line, field path, message and hint ------------------------------------

CASES = {
    # name: (YAML, line, field path, substrings of the message / hint)
    "unknown top-level key": (GOOD + "modles: []\n", 12, "modles", ["unknown key 'modles'", "did you mean 'models'"]),
    "unknown nested key (typo)": (GOOD.replace("  n_docs: 400", "  n_doc: 400"), 4, "dataset.n_doc",
                                  ["unknown key 'n_doc'", "did you mean 'n_docs'"]),
    "unknown nested key (no match)": (GOOD.replace("  n_docs: 400", "  colour: red"), 4, "dataset.colour",
                                      ["unknown key 'colour'", "valid keys:", "n_docs"]),
    "unknown key in a model": (GOOD.replace("  - id: gpt2-large", "  - id: gpt2-large\n    lrr: 1e-5"), 10,
                               "models.2.lrr", ["did you mean 'lr'"]),
    "wrong type": (GOOD.replace("  - id: gpt2\n", "  - id: gpt2\n    lr: fast\n"), 8, "models.0.lr",
                   ["valid number", "got 'fast'", "learning rate"]),
    "wrong type under train": (GOOD + "train:\n  batch_size: lots\n", 13, "train.batch_size",
                               ["valid integer", "got 'lots'", "optimizer batch"]),
    "unknown dataset": (GOOD.replace("name: sst2", "name: sst"), 3, "dataset.name",
                        ["unknown dataset 'sst'", "did you mean 'sst2'", "registered:"]),
    "unknown model": (GOOD.replace("id: gpt2-medium", "id: gpt3"), 8, "models.1.id",
                      ["unknown model 'gpt3'", "did you mean 'gpt2'", "hub id"]),
    "unknown loss": (GOOD.replace("[xent, logconf]", "[xent, logconff]"), 10, "losses.1",
                     ["unknown loss 'logconff'", "did you mean 'logconf'", "registered:"]),
    "unknown loss parameter": (GOOD.replace("[xent, logconf]", "\n  - xent\n  - name: logconf\n"
                                            "    params: {aux_coeff: 0.75}"), 13, "losses.1.params.aux_coeff",
                               ["no parameter 'aux_coeff'", "did you mean 'aux_coef'", "its parameters:"]),
    "bad logconf warmup": (GOOD.replace("[xent, logconf]", "[xent, {name: logconf, params: {warmup: cosine}}]"),
                           10, "losses.1", ["'linear' or 'reference'"]),
    "pair weak after strong": (GOOD + "pairs: [[gpt2-large, gpt2]]\n", 12, "pairs.0",
                               ["[gpt2-large, gpt2]", "weak model must come before"]),
    "unknown model in a pair": (GOOD + "pairs:\n  - [gpt2, gpt2-larg]\n", 13, "pairs.0",
                                ["'gpt2-larg' is not a model name", "did you mean 'gpt2-large'"]),
    "weak == strong": (GOOD + "pairs:\n  - [gpt2, gpt2-medium]\n  - [gpt2, gpt2]\n", 14, "pairs.1",
                       ["same model"]),
    "single-model ladder": (GOOD.replace("  - id: gpt2-medium\n  - id: gpt2-large\n", ""), 6, "models",
                            ["at least two models"]),
    "n_docs too small": (GOOD.replace("n_docs: 400", "n_docs: 1"), 4, "dataset.n_docs",
                         ["greater than or equal to 2", "got 1", "50/50", "one per half"]),
    "batch not divisible (train)": (GOOD + "train:\n  batch_size: 32\n  micro_batch: 5\n", 14, "train.micro_batch",
                                    ["batch_size 32 is not divisible by micro_batch 5", "divides"]),
    "batch not divisible (model)": (GOOD.replace("  - id: gpt2-medium\n", "  - id: gpt2-medium\n    batch_size: 30\n"
                                                 "    micro_batch: 8\n"), 10, "models.1.micro_batch",
                                    ["batch_size 30 is not divisible by micro_batch 8", "gpt2-medium"]),
    "duplicate model names": (GOOD.replace("id: gpt2-large", "id: gpt2-large\n    name: gpt2"), 9, "models.2",
                              ["duplicate model name 'gpt2'", "models.0", "distinct `name:`"]),
    "duplicate seeds": (GOOD.replace("seeds: [0, 1]", "seeds: [0, 1, 1]"), 11, "seeds",
                        ["duplicate seed", "[1]", "once"]),
    "duplicate losses": (GOOD.replace("[xent, logconf]", "[xent, logconf, xent]"), 10, "losses.2",
                         ["'xent' is listed twice"]),
    "missing required field": (GOOD.replace("  name: sst2\n", "  source: /data\n"), 2, "dataset.name",
                               ["required field is missing", "dataset registry name"]),
    "bad literal": (GOOD + "fidelity:\n  profile: paper\n", 13, "fidelity.profile",
                    ["'reference' or 'fixed'", "got 'paper'"]),
    "bad experiment name": (GOOD.replace("name: t\n", "name: my run\n"), 1, "name", ["pattern", "got 'my run'"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_single_problem(tmp_path, case):
    text, line, field, parts = CASES[case]
    path = write(tmp_path, text)
    msg = one(path)
    assert msg.startswith(f"{path}:{line}: {field}: "), msg
    for part in parts:
        assert part in msg, (part, msg)
    assert "Traceback" not in msg and "Value error" not in msg and "<top>" not in msg


def test_bad_yaml_syntax_reports_line(tmp_path):
    path = write(tmp_path, "name: t\ndataset:\n  name: sst2\n   n_docs: 3\nmodels: []\n")
    msg = one(path)
    assert msg.startswith(f"{path}:4: not valid YAML: "), msg
    assert "indentation" in msg
    path = write(tmp_path, "name: t\nmodels: [gpt2, \n  gpt2\nseeds: [0]\n", "b.yaml")
    assert one(path).startswith(f"{path}:"), one(path)
    assert "not valid YAML" in one(path)


def test_not_a_mapping(tmp_path):
    path = write(tmp_path, "- just\n- a list\n")
    assert one(path).startswith(f"{path}:1: ")
    assert "mapping" in one(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    assert one(path) == f"{path}: no such file"


def test_all_problems_at_once(tmp_path):
    text = GOOD.replace("name: sst2", "name: sst").replace("id: gpt2-large", "id: gpt2-large\n    lr: fast") \
        + "modles: []\n"
    path = write(tmp_path, text)
    ps = problems(path)
    assert len(ps) == 3, ps
    assert {p.split(": ")[1] for p in ps} == {"dataset.name", "models.2.lr", "modles"}
    assert {p.split(": ")[0] for p in ps} == {f"{path}:3", f"{path}:10", f"{path}:13"}


def test_all_problems_at_once_including_cross_field_checks(tmp_path):
    """Pydantic skips model-level checks when a field fails; they are still reported."""
    text = GOOD.replace("name: sst2", "name: sst").replace("seeds: [0, 1]", "seeds: [0, 0]") \
        + "pairs: [[gpt2-medium, gpt2]]\ntrain: {batch_size: 32, micro_batch: 5}\n"
    path = write(tmp_path, text)
    ps = problems(path)
    assert len(ps) == 4, ps
    assert sorted(p.split(": ")[1] for p in ps) == ["dataset.name", "pairs.0", "seeds", "train.micro_batch"]
    assert all(p.startswith(f"{path}:") for p in ps)


def test_every_problem_has_file_line_field(tmp_path):
    text = GOOD.replace("n_docs: 400", "n_docs: 1\n  colour: red").replace("id: gpt2-medium", "id: gpt3") \
        .replace("[xent, logconf]", "[xent, logconff]") + "tracking: {mlflow: maybe}\n"
    path = write(tmp_path, text)
    ps = problems(path)
    assert len(ps) == 5, ps
    for p in ps:
        src, field, msg = p.split(": ", 2)
        assert src.startswith(f"{path}:") and src.rsplit(":", 1)[1].isdigit(), p
        assert field and field != "<top>" and msg, p


# -- overrides and env expansion ---------------------------------------------------------------

def test_overrides_win_over_yaml(tmp_path):
    path = write(tmp_path, GOOD)
    m = load(path, ["dataset.n_docs=100", "models.0.lr=1e-4", "fidelity.profile=reference", "seeds=[3, 4]"])
    assert m.dataset.n_docs == 100 and m.models[0].lr == 1e-4
    assert m.fidelity.profile == "reference" and m.seeds == [3, 4]
    assert load(path).dataset.n_docs == 400     # the file is unchanged


def test_overrides_are_validated(tmp_path):
    path = write(tmp_path, GOOD)
    msg = one(path, ["models.0.lr=fast"])
    assert msg.startswith("override -o models.0.lr: models.0.lr: "), msg
    assert "got 'fast'" in msg
    msg = one(path, ["dataset.n_doc=5"])
    assert msg.startswith("override -o dataset.n_doc: dataset.n_doc: unknown key 'n_doc'"), msg
    assert "did you mean 'n_docs'" in msg
    msg = one(path, ["dataset.n_docs=1"])
    assert msg.startswith("override -o dataset.n_docs: dataset.n_docs: ")
    # an override that creates a cross-field problem
    msg = one(path, ["models.2.name=gpt2"])
    assert msg.startswith("override -o models.2.name: models.2: "), msg
    assert "duplicate model name" in msg
    # problems of the file itself still point at the file
    ps = problems(path, ["dataset.name=sst"])
    assert ps == [ps[0]] and ps[0].startswith("override -o dataset.name: dataset.name: unknown dataset 'sst'")


def test_malformed_overrides(tmp_path):
    path = write(tmp_path, GOOD)
    assert "expected key=value" in one(path, ["dataset.n_docs"])
    assert one(path, ["models.7.lr=1e-4"]) == f"override -o models.7.lr: no such place in {path}"


def test_env_expansion(tmp_path, monkeypatch):
    text = GOOD.replace("n_docs: 400", "n_docs: ${W2S_TEST_N:-250}").replace(
        "name: sst2", "name: sst2\n  source: ${W2S_TEST_SRC:-/data/default}")
    path = write(tmp_path, text)
    monkeypatch.delenv("W2S_TEST_N", raising=False)
    monkeypatch.delenv("W2S_TEST_SRC", raising=False)
    m = load(path)
    assert m.dataset.n_docs == 250 and m.dataset.source == "/data/default"
    monkeypatch.setenv("W2S_TEST_N", "1000")
    monkeypatch.setenv("W2S_TEST_SRC", "/elsewhere")
    m = load(path)
    assert m.dataset.n_docs == 1000 and m.dataset.source == "/elsewhere"
    monkeypatch.setenv("W2S_TEST_N", "many")
    msg = one(path)
    assert msg.startswith(f"{path}:5: dataset.n_docs: ") and "got 'many'" in msg
    # no default and unset: left as written (and then rejected where a number is needed)
    monkeypatch.delenv("W2S_TEST_N")
    path = write(tmp_path, GOOD.replace("n_docs: 400", "n_docs: ${W2S_TEST_N}"), "b.yaml")
    assert "got '${W2S_TEST_N}'" in one(path)


# -- lint --------------------------------------------------------------------------------------

def test_lint_warnings(tmp_path):
    m = load(write(tmp_path, GOOD.replace("n_test_docs: 300", "n_test_docs: 100")))
    ws = lint(m)
    assert len(ws) == 1 and "n_test_docs=100 is small" in ws[0] and "0.050" in ws[0]
    m = load(write(tmp_path, GOOD.replace("name: sst2", "name: anthropic_hh") + "gt_loss: logconf\n", "b.yaml"))
    ws = lint(m)
    assert any("anthropic_hh" in w and "Q20" in w for w in ws)
    assert any("gt_loss is 'logconf'" in w for w in ws)
    m = load(write(tmp_path, GOOD.replace("id: gpt2-large", "id: EleutherAI/pythia-160m"), "c.yaml"))
    assert any("no revision pinned" in w for w in lint(m))


# -- the real command line ------------------------------------------------------------------------

def _w2s(*args):
    return subprocess.run([str(W2S), "validate", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_cli_validate_bad_file_exits_2_without_traceback(tmp_path):
    bad = write(tmp_path, GOOD.replace("name: sst2", "name: sst") + "modles: []\n", "bad.yaml")
    good = write(tmp_path, GOOD, "good.yaml")
    r = _w2s(bad, tmp_path / "missing.yaml", good)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert f"{bad}:3: dataset.name: unknown dataset 'sst'" in r.stderr
    assert f"{bad}:12: modles: unknown key 'modles' (did you mean 'models'?)" in r.stderr
    assert f"{tmp_path / 'missing.yaml'}: no such file" in r.stderr
    assert f"ok: {good}" in r.stdout            # the good file is still validated


def test_cli_validate_good_file_and_experiments(tmp_path):
    """A good manifest, and every experiments/*.yaml that exists when the test runs, exit 0."""
    good = write(tmp_path, GOOD, "good.yaml")
    files = [good, *sorted((REPO / "experiments").glob("*.yaml"))]
    r = _w2s(*files)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    for f in files:
        assert f"ok: {f}" in r.stdout


def test_ladders_may_name_models_by_id_alone_and_overrides_reach_into_them(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("name: sh\ndataset: {name: sst2, n_docs: 100, n_test_docs: 100}\nmodels: [gpt2, gpt2-medium]\n"
                 "losses: [xent, logconf]\n")
    m = load(p, ["models.1.lr=0.002", "models.0.name=weakling", "losses.1.params.warmup_frac=0.3"])
    assert [(mc.id, mc.label) for mc in m.models] == [("gpt2", "weakling"), ("gpt2-medium", "gpt2-medium")]
    assert m.models[1].lr == 0.002 and m.losses[1].params == {"warmup_frac": 0.3}
    (tmp_path / "bad.yaml").write_text(p.read_text().replace("gpt2-medium]", "gtp2-medium]"))
    with pytest.raises(ManifestError) as e:
        load(tmp_path / "bad.yaml")
    assert "bad.yaml:3: models.1.id: unknown model 'gtp2-medium' (did you mean 'gpt2-medium'?)" in str(e.value)


def test_vision_models_may_be_named_by_id_alone(tmp_path):
    p = tmp_path / "v.yaml"
    p.write_text("name: v\nvision: {dataset: synthetic, weak: small_cnn, strong: [tiny_cnn],\n"
                 "  split: {n_images: 60, n_weak_train: 10, n_train: 20, n_test: 20}}\n")
    m = load(p, ["vision.weak.epochs=3", "vision.strong.0.width=2"])
    assert (m.vision.weak.id, m.vision.weak.epochs) == ("small_cnn", 3)
    assert (m.vision.strong[0].id, m.vision.strong[0].width) == ("tiny_cnn", 2)
