"""harness.data.splits.make_splits (REFERENCE.md §1 data flow, Q11 sampling, carved-out test sets),
on the tiny synthetic data and on real data from ../shared/data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.data.splits import Splits, check_disjoint, make_splits
from harness.manifest import DataConfig
from harness.tiny import make_data

DATA = Path(os.environ.get("W2S_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
needs_data = pytest.mark.skipif(not (DATA / "README.md").exists(), reason=f"no shared data at {DATA}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return str(make_data(tmp_path_factory.mktemp("tiny-data")))   # sst2/train 600, validation 200


def cfg(source, **kw) -> DataConfig:
    return DataConfig.model_validate({"name": "sst2", "source": source, **kw})


def ids(rows) -> list[str]:
    return [r["id"] for r in rows]


def assert_well_formed(s: Splits, n_docs: int, n_test: int):
    a, b, t = set(ids(s.train1)), set(ids(s.train2)), set(ids(s.test))
    assert not a & b, "weak and student halves overlap"
    assert not (a | b) & t, "test rows leaked into training"
    assert len(a) == len(s.train1) and len(b) == len(s.train2) and len(t) == len(s.test)
    assert (len(s.train1), len(s.train2)) == (n_docs // 2, n_docs - n_docs // 2)   # floor / ceil
    assert len(s.test) == n_test
    for r in s.train1 + s.train2 + s.test:
        assert r["soft_label"] == [1.0 - r["hard_label"], float(r["hard_label"])]
    assert s.info["train1"]["rows"] == len(s.train1) and s.info["test"]["rows"] == n_test


def fingerprint(s: Splits):
    return [[(r["id"], r["txt"], r["hard_label"]) for r in part] for part in (s.train1, s.train2, s.test)]


# -- tiny synthetic data ---------------------------------------------------------------------

@pytest.mark.parametrize("sampling", ["head", "random"])
@pytest.mark.parametrize("n_docs", [101, 100])
def test_tiny_sizes_disjoint(tiny, sampling, n_docs):
    s = make_splits(cfg(tiny, n_docs=n_docs, n_test_docs=50, sampling=sampling), seed=0)
    assert_well_formed(s, n_docs, 50)
    assert all(i.startswith("train:") for i in ids(s.train1 + s.train2))
    assert all(i.startswith("validation:") for i in ids(s.test))


@pytest.mark.parametrize("sampling", ["head", "random"])
def test_tiny_deterministic_for_a_seed(tiny, sampling):
    c = cfg(tiny, n_docs=120, n_test_docs=40, sampling=sampling)
    assert fingerprint(make_splits(c, 3)) == fingerprint(make_splits(c, 3))
    assert fingerprint(make_splits(c, 3)) != fingerprint(make_splits(c, 4))


def test_tiny_head_takes_first_rows_regardless_of_seed(tiny):
    c = cfg(tiny, n_docs=120, n_test_docs=40, sampling="head")
    first = {f"train:{i}" for i in range(120)}
    halves = []
    for seed in (0, 1, 7):
        s = make_splits(c, seed)
        assert set(ids(s.train1 + s.train2)) == first
        assert set(ids(s.test)) == {f"validation:{i}" for i in range(40)}
        halves.append(set(ids(s.train1)))
    assert halves[0] != halves[1]                # the seed still shuffles and splits the halves


def test_tiny_random_sampling_depends_on_seed(tiny):
    c = cfg(tiny, n_docs=120, n_test_docs=40, sampling="random")
    a, b = make_splits(c, 0), make_splits(c, 1)
    docs = lambda s: set(ids(s.train1 + s.train2))
    assert docs(a) != docs(b)
    assert docs(a) != {f"train:{i}" for i in range(120)}
    assert set(ids(a.test)) != set(ids(b.test))


def test_tiny_more_rows_than_exist(tiny):
    s = make_splits(cfg(tiny, n_docs=5000, n_test_docs=5000, sampling="head"), 0)
    assert_well_formed(s, 600, 200)


@pytest.mark.parametrize("sampling", ["head", "random"])
def test_tiny_cut(tiny, sampling):
    c = cfg(tiny, n_docs=200, n_test_docs=100, sampling=sampling, splits={"train": "train", "test": "cut"})
    tests = []
    for seed in (0, 1, 2):
        s = make_splits(c, seed)
        assert_well_formed(s, 200, 100)
        assert all(i.startswith("train:") for i in ids(s.train1 + s.train2 + s.test))
        tests.append(set(ids(s.test)))
    assert tests[0] == tests[1] == tests[2]      # the same test set for every run seed
    other = make_splits(c.model_copy(update={"cut_seed": 1}), 0)
    assert set(ids(other.test)) != tests[0]      # ... chosen by cut_seed


def test_check_disjoint_raises_on_overlap():
    row = lambda i: {"id": i, "txt": i, "hard_label": 0, "soft_label": [1.0, 0.0]}
    check_disjoint(Splits([row("a")], [row("b")], [row("c")]))
    with pytest.raises(ValueError, match="overlap"):
        check_disjoint(Splits([row("a"), row("b")], [row("b")], [row("c")]))
    with pytest.raises(ValueError, match="leaked"):
        check_disjoint(Splits([row("a")], [row("b")], [row("a"), row("c")]))


def test_same_split_for_train_and_test_is_caught(tiny):
    """Training and testing on the same source split without `cut` leaks; make_splits refuses."""
    c = cfg(tiny, n_docs=100, n_test_docs=50, sampling="head", splits={"train": "validation", "test": "validation"})
    with pytest.raises(ValueError, match="leaked"):
        make_splits(c, 0)


# -- real data ---------------------------------------------------------------------------------

@needs_data
@pytest.mark.parametrize("name,n_rows,n_docs,n_test", [("sst2", 872, 401, 200), ("boolq", 3270, 600, 300)])
def test_real_cut(name, n_rows, n_docs, n_test):
    base = {"name": name, "source": str(DATA), "n_docs": n_docs, "n_test_docs": n_test,
            "splits": {"train": "validation", "test": "cut"}}
    test_sets = []
    for sampling in ("head", "random"):
        c = DataConfig.model_validate({**base, "sampling": sampling})
        runs = [make_splits(c, seed) for seed in (0, 1)]
        for s in runs:
            assert_well_formed(s, n_docs, n_test)
            used = {int(i.split(":")[1]) for i in ids(s.train1 + s.train2 + s.test)}
            assert max(used) < n_rows
        assert fingerprint(runs[0]) == fingerprint(make_splits(c, 0))         # deterministic
        assert set(ids(runs[0].test)) == set(ids(runs[1].test))              # cut: same test set
        train_docs = [set(ids(s.train1 + s.train2)) for s in runs]
        if sampling == "head":   # the first n_docs rows of what the cut left, whatever the seed
            assert train_docs[0] == train_docs[1]
        else:
            assert train_docs[0] != train_docs[1]
        test_sets.append(set(ids(runs[0].test)))
    assert test_sets[0] == test_sets[1]          # the cut does not depend on sampling either


@needs_data
def test_real_head_takes_file_order_after_the_cut():
    c = DataConfig.model_validate({"name": "boolq", "source": str(DATA), "n_docs": 100, "n_test_docs": 50,
                                   "sampling": "head", "splits": {"train": "validation", "test": "cut"}})
    s = make_splits(c, 5)
    # the cut removed n_test rows at random; head takes the lowest remaining indices in file order
    train = sorted(int(i.split(":")[1]) for i in ids(s.train1 + s.train2))
    test = {int(i.split(":")[1]) for i in ids(s.test)}
    assert train == sorted(i for i in range(3270) if i not in test)[:100]
