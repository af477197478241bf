"""Issue #16, findings 2 and 7: data is validated before training (labels in the label set, fields
present and typed, splits not empty; errors name file, row, line and field; `w2s run` exits 2 without a
traceback), and formatted texts are deduplicated across the halves and the test set (fidelity.dedup)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from harness.data import DataError
from harness.data.splits import Splits, check_disjoint, make_splits
from harness.manifest import DataConfig
from harness.tiny import make_data

DATA = Path(os.environ.get("W2S_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
needs_data = pytest.mark.skipif(not (DATA / "README.md").exists(), reason=f"no shared data at {DATA}")


@pytest.fixture
def data(tmp_path) -> Path:
    return make_data(tmp_path / "data", n_train=60, n_val=20)


def cfg(source, **kw) -> DataConfig:
    return DataConfig.model_validate({"name": "sst2", "source": str(source), "n_docs": 40, "n_test_docs": 10,
                                      "sampling": "head", **kw})


def edit(path: Path, index: int, **fields) -> None:
    """Change row `index` (0-based) of a JSON-lines file; a field set to ... is removed."""
    lines = path.read_text().splitlines()
    row = json.loads(lines[index])
    for k, v in fields.items():
        if v is ...:
            row.pop(k)
        else:
            row[k] = v
    lines[index] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("split,index,change,expect", [
    ("train", 7, {"label": 2}, "field 'label' 2 is not a label of this dataset (labels: 0, 1)"),
    ("validation", 3, {"label": -1}, "field 'label' -1 is not a label"),
    ("train", 5, {"label": 0.7}, "field 'label' 0.7 is not an integer label"),
    ("train", 9, {"sentence": None}, "field 'sentence' is null"),
    ("train", 2, {"sentence": ...}, "field 'sentence' is null"),
    ("train", 4, {"label": True}, "field 'label' True is not an integer label"),
])
def test_bad_rows_are_named_by_file_row_line_and_field(data, split, index, change, expect):
    path = data / "sst2" / f"{split}.jsonl"
    edit(path, index, **change)
    with pytest.raises(DataError) as e:
        make_splits(cfg(data), 0)
    msg = str(e.value)
    assert f"{path}: row {index} (line {index + 1}): {expect}" in msg, msg


def test_a_bad_row_that_is_not_drawn_does_not_stop_the_run(data):
    edit(data / "sst2" / "train.jsonl", 55, label=5)
    make_splits(cfg(data), 0)      # head sampling draws rows 0..39 only


def test_missing_column_empty_file_and_malformed_json(data):
    train = data / "sst2" / "train.jsonl"
    lines = train.read_text().splitlines()
    train.write_text("\n".join(json.dumps({"text": json.loads(x)["sentence"], "label": 0}) for x in lines) + "\n")
    with pytest.raises(DataError, match=r"field\(s\) 'sentence' missing from every row \(columns: "):
        make_splits(cfg(data), 0)
    train.write_text("")
    with pytest.raises(DataError, match=f"{train}: has no rows"):
        make_splits(cfg(data), 0)
    train.write_text("\n".join(lines[:3] + ['{"sentence": "a", "label": 1'] + lines[4:]) + "\n")
    with pytest.raises(DataError, match=f"{train}:4: not valid JSON"):
        make_splits(cfg(data), 0)
    train.write_text("\n".join(lines[:3] + ['{"sentence": "a", "label": "one"}'] + lines[4:]) + "\n")
    with pytest.raises(DataError, match=r"row 3 \(line 4\): field 'label' 'one' is not an integer label"):
        make_splits(cfg(data), 0)


def test_cut_that_leaves_nothing_to_train_on(data):
    with pytest.raises(DataError, match="leaves none to train on"):
        make_splits(cfg(data, n_test_docs=60, splits={"test": "cut"}), 0)


def test_w2s_run_exits_2_without_traceback_before_training(tiny_assets, tmp_path):
    from conftest import w2s

    shutil.copytree(tiny_assets / "data", tmp_path / "data")
    bad = tmp_path / "data" / "sst2" / "validation.jsonl"
    edit(bad, 11, label=2)
    text = (tiny_assets / "tiny.yaml").read_text().replace(str(tiny_assets / "data"), str(tmp_path / "data"))
    path = tmp_path / "tiny.yaml"
    path.write_text(text.replace(str(tiny_assets / "runs"), str(tmp_path / "runs")))
    proc = w2s("run", path, "--no-tracking", check=False, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{bad}: row 11 (line 12): field 'label' 2 is not a label" in proc.stderr
    assert not list((tmp_path / "runs" / "stages").glob("*/done.json")), "nothing trained"


# -- deduplication (finding 7) ------------------------------------------------------------------

def write_sst2(root: Path, train: list[str], validation: list[str]) -> Path:
    d = root / "sst2"
    d.mkdir(parents=True)
    for split, texts in (("train", train), ("validation", validation)):
        (d / f"{split}.jsonl").write_text("".join(json.dumps({"sentence": t, "label": i % 2}) + "\n"
                                                  for i, t in enumerate(texts)))
    return root


def test_dedup_text_removes_repeats_and_test_texts_seen_in_training(tmp_path):
    train = [f"sentence {i}" for i in range(30)] + ["sentence 3"] * 5 + ["sentence 7"] * 5
    validation = ["sentence 3", "sentence 11", "held out a", "held out b", "held out c", "held out a"]
    root = write_sst2(tmp_path, train, validation)
    c = cfg(root, n_docs=40, n_test_docs=6)
    plain = make_splits(c, 0, dedup="none")
    assert plain.info["dedup"]["test_in_train"] == 2 and plain.info["dedup"]["across_halves"] >= 1
    s = make_splits(c, 0, dedup="text")
    assert s.info["dedup"] == {"mode": "text", "train_dropped": 10, "test_dropped": 3, "test_in_train": 0,
                               "across_halves": 0}
    texts = [r["txt"] for part in (s.train1, s.train2, s.test) for r in part]
    assert len(texts) == len(set(texts)) == 30 + 3
    check_disjoint(s, texts=True)
    with pytest.raises(ValueError, match="overlap in 2 texts"):
        check_disjoint(plain, texts=True)


def test_disjointness_by_text_catches_duplicates_under_other_ids():
    row = lambda i, t: {"id": f"train:{i}", "txt": t, "hard_label": 0, "soft_label": [1.0, 0.0]}
    s = Splits([row(0, "same")], [row(1, "same")], [row(2, "other")])
    check_disjoint(s)                                   # by id: nothing shared
    with pytest.raises(ValueError, match="train halves overlap in 1 texts"):
        check_disjoint(s, texts=True)


def test_dedup_follows_the_fidelity_profile_and_is_identity(tmp_path):
    from harness.manifest import load
    from harness.plan import build_plan

    base = "name: d\ndataset: {name: sst2, n_docs: 100, n_test_docs: 50}\nmodels: [{id: gpt2}, {id: gpt2-medium}]\n"
    (tmp_path / "m.yaml").write_text(base)
    fixed = load(tmp_path / "m.yaml")
    assert fixed.fidelity.resolved()["dedup"] == "text"
    assert load(tmp_path / "m.yaml", ["fidelity.profile=reference"]).fidelity.resolved()["dedup"] == "none"
    a = build_plan(fixed)[0]
    b = build_plan(load(tmp_path / "m.yaml", ["fidelity.dedup=none"]))[0]
    assert a.identity["data"]["dedup"] == "text" and a.key != b.key


@needs_data
def test_cosmos_qa_cut_no_longer_leaks_formatted_texts():
    c = DataConfig.model_validate({"name": "cosmos_qa", "source": str(DATA), "n_docs": 2000, "n_test_docs": 500,
                                   "splits": {"train": "validation", "test": "cut"}, "sampling": "head"})
    leaky = make_splits(c, 0, dedup="none")
    assert leaky.info["dedup"]["test_in_train"] > 0 and leaky.info["dedup"]["across_halves"] > 0
    clean = make_splits(c, 0, dedup="text")
    assert clean.info["dedup"]["test_in_train"] == clean.info["dedup"]["across_halves"] == 0
    assert clean.info["dedup"]["train_dropped"] > 0
    check_disjoint(clean, texts=True)
