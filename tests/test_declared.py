"""Issue #15: datasets declared in YAML (harness.data.declared, docs/byod.md). The built-ins written as
declarations (docs/datasets/*.yaml) format byte for byte as the Python formatters, RNG included; a bad
declaration is refused with file, field and fix before any compute; the declaration enters the stage key."""
from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from harness.data import DATASETS, formatters as fmt
from harness.data.declared import Declaration, DeclaredFormatter

SHARED = Path(os.environ.get("W2S_DATA_DIR") or ROOT.parent / "shared" / "data")   # as tests/test_experiments.py
# built-in -> local file of its hub schema (amazon_polarity has none: rows written here in its schema)
LOCAL = {"sst2": "sst2/validation.jsonl", "boolq": "boolq/validation.jsonl", "cosmos_qa": "cosmos_qa/validation.jsonl",
         "anthropic_hh": "anthropic_hh/harmless-base-test.jsonl.gz", "sciq": "arc_easy_sciq_format/test.jsonl"}


def _rows(path: Path, n: int = 400) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f) if line.strip()]


@pytest.mark.parametrize("name", ["sst2", "amazon_polarity", "boolq", "sciq", "cosmos_qa", "anthropic_hh"])
def test_builtin_declarations_format_byte_identically(name):
    decl = Declaration.model_validate(yaml.safe_load((ROOT / "docs" / "datasets" / f"{name}.yaml").read_text()))
    if name == "amazon_polarity":
        rows = [{"title": f"t{i}", "content": f"c {i}\n", "label": i % 2} for i in range(50)]
    else:
        rows = _rows(SHARED / LOCAL[name])
    ours, theirs = DeclaredFormatter(decl), getattr(fmt, name)
    a, b = random.Random(7), random.Random(7)
    for row in rows:
        assert ours(row, a) == theirs(row, b)
    assert a.random() == b.random()          # the RNG was consumed exactly alike
    assert DATASETS[name].formatter is theirs


def test_held_out_style_choice_from_a_list_field():
    decl = Declaration.model_validate({"files": {}, "hub": "x/y", "template": "Q: {question} A: {choice}",
                                       "choice": {"options": "choices", "right_index": "answer"}})
    row = {"question": "2+2?", "choices": ["4", "5"], "answer": 0}
    seen = {DeclaredFormatter(decl)(row, random.Random(s)) for s in range(20)}
    assert seen == {("Q: 2+2? A: 4", 1), ("Q: 2+2? A: 5", 0)}


@pytest.mark.parametrize("bad, says", [
    ({"template": "{question} {choice", "choice": {"options": "c", "right_index": "a"}}, "template"),
    ({"template": "{q.__class__}", "label": "l"}, "not a plain field name"),
    ({"template": "{q}", "choice": {"options": "c", "right_index": "a"}}, "add {choice}"),
    ({"template": "{q}"}, "exactly one of"),
    ({"template": "{q}", "label": "l", "pair": {"chosen": "a", "rejected": "b"}}, "exactly one of"),
    ({"template": "{q}", "choice": {"right": "a"}}, "`right` + `wrong`"),
    ({"template": "{q}", "label": {"field": "l", "map": {"yes": 2}}}, "0 or 1"),
])
def test_bad_declarations_are_refused(bad, says):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as e:
        Declaration.model_validate({"hub": "x/y", **bad})
    assert says in str(e.value)


def _spec(tmp_path, name, rows, decl, fmt="jsonl"):
    import pandas as pd

    from harness.data.declared import to_spec

    path = tmp_path / f"{name}.{fmt}"
    df = pd.DataFrame(rows)
    {"jsonl": lambda: df.to_json(path, orient="records", lines=True), "csv": lambda: df.to_csv(path, index=False),
     "parquet": lambda: df.to_parquet(path)}[fmt]()
    return to_spec(name, Declaration.model_validate({"files": {"train": str(path)}, **decl})), path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_label_map_on_local_csv_parquet_and_jsonl_files(tmp_path, fmt):
    from harness.data import load_rows

    rows = [{"text": f"t{i}", "verdict": ["pos", "neg"][i % 2]} for i in range(6)]
    spec, _ = _spec(tmp_path, "mapped", rows, {"template": "{text}!", "label": {"field": "verdict", "map": {"pos": 1, "neg": 0}}}, fmt)
    loaded = load_rows(spec, "train", None, None)
    out = [spec.formatter(r, random.Random(0)) for r in loaded]
    assert out == [(f"t{i}!", 1 - i % 2) for i in range(6)]


def test_a_row_the_declaration_cannot_read_is_named_with_its_line_and_field(tmp_path):
    from harness.data import DataError, load_rows
    from harness.data.validate import check_rows

    rows = [{"q": "a", "ok": True}, {"q": "b", "ok": False}, {"q": "c", "ok": "maybe"}, {"q": None, "ok": True}]
    spec, path = _spec(tmp_path, "flags", rows, {"template": "{q}", "label": {"field": "ok", "map": {True: 1, False: 0}}})
    loaded = load_rows(spec, "train", None, None)
    with pytest.raises(DataError) as e:
        check_rows(spec, "train", path, enumerate(loaded))
    msg = str(e.value)
    assert f"{path}: row 2 (line 3): field 'ok' 'maybe' is not one of true, false" in msg
    assert f"{path}: row 3 (line 4): field 'q' is null (missing)" in msg
