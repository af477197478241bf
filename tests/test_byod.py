"""Issue #15 done-when: a held-out-style JSONL file (a question, two choices, the index of the right one)
runs through `w2s run` with only a YAML manifest written, and the results carry the user's dataset name.
Plus `w2s data preview`, `w2s datasets`, `w2s models`, and bad declarations refused before compute."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from conftest import w2s
from test_newcomer import _heavy_imports

MANIFEST = """\
name: mine
dataset:
  name: quiz
  declare:
    files: {{train: data/train.jsonl, test: data/test.jsonl}}
    template: "Q: {{question}} A: {{choice}}"
    choice: {{options: choices, right_index: answer}}
  n_docs: 200
  n_test_docs: 60
  max_ctx: 24
models:
  - {{name: tiny-gpt2, id: {models}/tiny-gpt2, lr: 1.0e-3}}
  - {{name: tiny-bert, id: {models}/tiny-bert, lr: 1.0e-3}}
train: {{batch_size: 16, micro_batch: 8, epochs: 1}}
losses: [xent]
output: {{dir: {out}}}
"""


def write_quiz(folder: Path, rows: dict[str, int] = {"train": 240, "test": 80}, drop: str | None = None) -> None:  # noqa: B006
    rng = random.Random(0)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for split, n in rows.items():
        with open(folder / "data" / f"{split}.jsonl", "w") as f:
            for i in range(n):
                good, bad = rng.sample("good great fine happy bad awful dull sad".split(), 2)
                row = {"question": f"the film was {i} {rng.choice(['very', 'quite'])}", "choices": [good, bad], "answer": 0}
                if rng.random() < 0.5:
                    row.update(choices=[bad, good], answer=1)
                if drop and i == 3:
                    row.pop(drop)
                f.write(json.dumps(row) + "\n")


@pytest.fixture
def quiz(tiny_assets, tmp_path) -> Path:
    write_quiz(tmp_path)
    path = tmp_path / "mine.yaml"
    path.write_text(MANIFEST.format(models=tiny_assets / "models", out=tmp_path / "runs"))
    return path


def test_a_declared_dataset_runs_end_to_end_under_its_own_name(quiz, tmp_path):
    from helpers_mlflow import children, client, parents

    from harness.manifest import load
    from harness.mlflow_tracking import default_uri

    w2s("run", quiz, env={"W2S_DATA_DIR": "", "MLFLOW_TRACKING_URI": ""})     # the embedded MLflow store
    res = json.loads((tmp_path / "runs" / "mine" / "results.json").read_text())
    assert res["meta"]["dataset"] == "quiz"
    c = client(default_uri(load(quiz)))
    exp = c.get_experiment_by_name("mine").experiment_id
    assert [p.data.tags["w2s.dataset"] for p in parents(c, exp)] == ["quiz"]
    assert len(children(c, exp)) == 3 and parents(c, exp)[0].data.params["dataset.name"] == "quiz"
    assert "quiz" in (tmp_path / "runs" / "mine" / "report" / "report.md").read_text()
    assert [(r["weak"], r["strong"]) for r in res["pgr"]] == [("tiny-gpt2", "tiny-bert")]


def test_the_declaration_and_its_bytes_enter_the_stage_keys_but_not_where_the_files_lie(quiz, tmp_path):
    from harness.manifest import load
    from harness.plan import build_plan

    keys = lambda path, *o: [s.key for s in build_plan(load(path, list(o)))]   # noqa: E731
    base = keys(quiz)
    assert keys(quiz, 'dataset.declare.template="Q: {question} Answer: {choice}"') != base
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "data", moved / "data")
    shutil.copy(quiz, moved / "mine.yaml")
    assert keys(moved / "mine.yaml") == base
    (moved / "data" / "train.jsonl").write_text((tmp_path / "data" / "train.jsonl").read_text() + "\n\n")
    assert keys(moved / "mine.yaml") != base


def test_a_template_field_missing_from_the_data_fails_before_compute(tiny_assets, tmp_path):
    write_quiz(tmp_path, drop="question")
    path = tmp_path / "mine.yaml"
    path.write_text(MANIFEST.format(models=tiny_assets / "models", out=tmp_path / "runs"))
    r = w2s("run", path, "--no-tracking", check=False)
    assert r.returncode == 2, r.stderr
    assert "train.jsonl" in r.stderr and "'question'" in r.stderr and "line 4" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not list((tmp_path / "runs").glob("stages/*/done.json"))
    r = w2s("run", path, "-o", 'dataset.declare.template="Q: {questoin} A: {choice}"', "--no-tracking", check=False)
    assert r.returncode == 2 and "'questoin'" in r.stderr and "missing from every row" in r.stderr, r.stderr


@pytest.mark.parametrize("edit, says", [
    (("template: \"Q: {{question}} A: {{choice}}\"", "template: \"Q: {{question}}\""), "add {choice}"),
    (("data/test.jsonl", "data/tset.jsonl"), "no such file"),
    (("name: quiz", "name: sst2"), "is a built-in dataset"),
    (("choice: {{options: choices, right_index: answer}}", "choice: {{options: choices}}"), "right_index"),
])
def test_bad_declarations_name_file_line_and_field(tiny_assets, tmp_path, edit, says):
    write_quiz(tmp_path)
    path = tmp_path / "mine.yaml"
    path.write_text(MANIFEST.replace(*edit).format(models=tiny_assets / "models", out=tmp_path / "runs"))
    r = w2s("validate", path, check=False)
    assert r.returncode == 2 and says in r.stderr and f"{path}:" in r.stderr and "dataset." in r.stderr, r.stderr


def test_a_declaration_in_a_file_of_its_own(tiny_assets, tmp_path):
    write_quiz(tmp_path / "decl")
    (tmp_path / "decl" / "quiz.yaml").write_text(
        "files: {train: data/train.jsonl, test: data/test.jsonl}\ntemplate: 'Q: {question} A: {choice}'\n"
        "choice: {options: choices, right_index: answer}\n")
    text = MANIFEST.format(models=tiny_assets / "models", out=tmp_path / "runs")
    head, tail = text.split("  declare:\n")
    path = tmp_path / "mine.yaml"
    path.write_text(head + "  declare: decl/quiz.yaml\n" + tail.split("  n_docs:", 1)[1].join(["  n_docs:", ""]))
    r = w2s("data", "preview", path, "-n", "2")
    assert r.stdout.count("--- train:") == 2 and "Q: the film was" in r.stdout
    assert "test: " in r.stdout and "label 1:" in r.stdout


def test_preview_shows_formatted_rows_and_the_label_balance(quiz):
    r = w2s("data", "preview", quiz, "-n", "3")
    lines = r.stdout.splitlines()
    assert lines[0].startswith("quiz (seed 0)")
    assert sum(x.startswith("Q: the film was") for x in lines) == 3
    for part in ("train1", "train2", "test"):
        assert any(x.startswith(f"{part}: ") and "label 1:" in x and "label 0:" in x for x in lines), r.stdout


def test_datasets_lists_registry_and_declared_datasets_with_their_files(quiz, tmp_path):
    r = w2s("datasets", quiz, env={"W2S_DATA_DIR": str(tmp_path / "nowhere")})
    names = [x.split()[0] for x in r.stdout.splitlines()[1:]]
    assert {"sst2", "boolq", "cosmos_qa", "quiz"} <= set(names)
    quiz_line = next(x for x in r.stdout.splitlines() if x.startswith("quiz "))
    assert "train: found" in quiz_line and "test: found" in quiz_line
    (tmp_path / "data" / "test.jsonl").unlink()
    assert w2s("validate", quiz, check=False).returncode == 2


def test_models_lists_the_table_with_cache_state_without_heavy_imports():
    r = w2s("models")
    assert "gpt2 " in r.stdout and "sentence-transformers/all-MiniLM-L6-v2" in r.stdout
    assert all(("cached" in x) for x in r.stdout.splitlines()[1:])
    assert _heavy_imports("models") == [] and _heavy_imports("datasets") == []
