"""Formatters (REFERENCE.md §4) on real rows from ../shared/data and on hand-made rows: the text
layout, the label/answer correspondence, the RNG consumption order, and the label balance."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from harness.data import DATASETS, formatters as fmt, load_rows

DATA = Path(os.environ.get("W2S_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
needs_data = pytest.mark.skipif(not (DATA / "README.md").exists(), reason=f"no shared data at {DATA}")


def rows_of(name: str, split: str, n: int | None = None) -> list[dict]:
    """Rows of a registered dataset's local file, through the harness's own loader."""
    ds = load_rows(DATASETS[name], split, str(DATA), None)
    if n is not None:
        ds = ds.select(range(min(n, len(ds))))
    return ds.to_list()


class RecordingRandom(random.Random):
    """A Random that logs which draws a formatter makes, in order."""

    def __init__(self, seed):
        super().__init__(seed)
        self.calls: list[str] = []

    def random(self):
        self.calls.append("random")
        return super().random()

    def choice(self, seq):
        self.calls.append(f"choice{len(seq)}")
        return super().choice(seq)

    def getrandbits(self, k):
        # Defined so that random.Random keeps drawing choice() from getrandbits, as the base class does
        # (a subclass that overrides random() alone is switched to random()-based choice()).
        return super().getrandbits(k)


COVERED = {"amazon_polarity", "sst2", "boolq", "sciq", "arc_easy_sciq", "cosmos_qa", "anthropic_hh"}


def test_every_registered_dataset_is_covered_here():
    assert set(DATASETS) == COVERED, "a dataset was added or removed: add formatter tests for it"


def test_registry_formatters_and_local_files():
    assert DATASETS["arc_easy_sciq"].formatter is fmt.sciq
    for name in ("amazon_polarity", "sst2", "boolq", "sciq", "cosmos_qa", "anthropic_hh"):
        assert DATASETS[name].formatter is getattr(fmt, name)
    assert (DATASETS["boolq"].test_split, DATASETS["cosmos_qa"].test_split) == ("validation", "validation")


@needs_data
@pytest.mark.parametrize("name", sorted(n for n in COVERED if DATASETS[n].local_files))
def test_local_files_exist(name):
    for rel in DATASETS[name].local_files.values():
        assert (DATA / rel).is_file(), rel


# -- deterministic formatters ------------------------------------------------------------------

def test_amazon_polarity_hand_rows():
    rng = RecordingRandom(0)
    rows = [{"title": "Great phone", "content": "Battery lasts two days!", "label": 1},
            {"title": "Broke", "content": "Stopped working after a week.", "label": 0}]
    out = [fmt.amazon_polarity(r, rng) for r in rows]
    assert out == [("Great phone Battery lasts two days!", 1), ("Broke Stopped working after a week.", 0)]
    assert rng.calls == []                       # no randomness


@needs_data
def test_sst2_real_rows():
    rows = rows_of("sst2", "validation")
    assert len(rows) == 872
    rng = RecordingRandom(0)
    out = [fmt.sst2(r, rng) for r in rows]
    assert [t for t, _ in out] == [r["sentence"] for r in rows]
    assert [y for _, y in out] == [r["label"] for r in rows]
    assert sum(y for _, y in out) == 444         # README: 444 positive
    assert rng.calls == []


@needs_data
def test_boolq_real_rows_layout_and_true_rate():
    rows = rows_of("boolq", "validation")
    assert len(rows) == 3270
    rng = RecordingRandom(0)
    out = [fmt.boolq(r, rng) for r in rows]
    for r, (txt, y) in zip(rows[:50], out[:50]):
        assert txt == f"Passage: {r['passage']}\nQuestion: {r['question']}"
        assert y == int(r["answer"]) and isinstance(y, int)
    assert all("Answer" not in t.split("\nQuestion: ")[-1] for t, _ in out[:50])   # no answer shown
    positives = sum(y for _, y in out)
    assert positives == 2033 and round(100 * positives / len(out), 1) == 62.2
    assert rng.calls == []


def test_boolq_hand_row_bool_answer():
    txt, y = fmt.boolq({"passage": "Cats are mammals.", "question": "is a cat a mammal", "answer": True},
                       random.Random(0))
    assert (txt, y) == ("Passage: Cats are mammals.\nQuestion: is a cat a mammal", 1)
    assert fmt.boolq({"passage": "p", "question": "q", "answer": False}, random.Random(0))[1] == 0


# -- sciq (and ARC-Easy in sciq's schema) ------------------------------------------------------

SCIQ_HAND = [
    {"question": f"What is {i} plus {i}?", "correct_answer": str(2 * i), "distractor1": f"{2 * i + 1}",
     "distractor2": f"{2 * i + 2}", "distractor3": f"{2 * i + 3}", "support": "arithmetic"}
    for i in range(400)
]


def _check_sciq(rows, seed):
    rng = RecordingRandom(seed)
    replay = random.Random(seed)
    labels = []
    for r in rows:
        before = len(rng.calls)
        txt, y = fmt.sciq(r, rng)
        calls = rng.calls[before:]
        prefix = f"Q: {r['question']} A: "
        assert txt.startswith(prefix)
        shown = txt[len(prefix):]
        distractors = [r["distractor1"], r["distractor2"], r["distractor3"]]
        # label 1 <=> the correct answer is shown; otherwise one of the distractors
        assert (y == 1) == (shown == r["correct_answer"])
        if y == 0:
            assert shown in distractors
        # one coin per row, and a 3-way choice only when the coin says "wrong"
        assert calls == (["random"] if y else ["random", "choice3"])
        # replay the reference's draws by hand on a fresh Random(seed)
        want_y = int(replay.random() < 0.5)
        want_shown = r["correct_answer"] if want_y else replay.choice(distractors)
        assert (y, shown) == (want_y, want_shown)
        labels.append(y)
    return labels


def test_sciq_hand_rows():
    labels = _check_sciq(SCIQ_HAND, seed=0)
    assert 0.4 < sum(labels) / len(labels) < 0.6
    assert labels != _check_sciq(SCIQ_HAND, seed=1)   # the seed decides which rows are positives


@needs_data
def test_arc_easy_sciq_real_rows():
    rows = rows_of("arc_easy_sciq", "test", 400)
    labels = _check_sciq(rows, seed=3)
    assert 0.4 < sum(labels) / len(labels) < 0.6


# -- anthropic_hh ------------------------------------------------------------------------------

@needs_data
def test_anthropic_hh_real_rows():
    rows = rows_of("anthropic_hh", "test", 400)
    rng = RecordingRandom(0)
    replay = random.Random(0)
    labels = []
    for r in rows:
        txt, y = fmt.anthropic_hh(r, rng)
        assert txt == (r["chosen"] if y else r["rejected"])     # label 1 <=> chosen, shown alone
        assert txt.startswith("\n\nHuman: ")
        assert y == int(replay.random() < 0.5)
        labels.append(y)
    assert rng.calls == ["random"] * len(rows)
    assert 0.4 < sum(labels) / len(labels) < 0.6


# -- cosmos_qa ---------------------------------------------------------------------------------

def _answer_of(txt: str) -> str:
    head, answer = txt.rsplit("\nAnswer: ", 1)
    return answer


def _check_cosmos(rows, seed):
    rng = RecordingRandom(seed)
    replay = random.Random(seed)
    labels, nota = [], []
    for r in rows:
        before = len(rng.calls)
        txt, y = fmt.cosmos_qa(r, rng)
        calls = rng.calls[before:]
        true = r[f"answer{r['label']}"]
        others = [r[f"answer{i}"] for i in range(4) if r[f"answer{i}"] != true]
        shown = _answer_of(txt)
        assert txt == f"Context: {r['context']}\nQuestion: {r['question']}\nAnswer: {shown}"
        assert (y == 1) == (shown == true)            # label 1 <=> the true answer is shown
        is_nota = "None of the above choices ." in true
        if is_nota:
            assert y == 0 and calls == [f"choice{len(others)}"]   # always negative, no coin drawn
            nota.append(r)
        else:
            assert calls == (["random"] if y else ["random", f"choice{len(others)}"])
        if y == 0:
            assert shown in others
        # hand replay of the reference's draws
        want_y = 0 if is_nota else int(replay.random() < 0.5)
        want_shown = true if want_y else replay.choice(others)
        assert (y, shown) == (want_y, want_shown)
        labels.append((y, is_nota))
    return labels, nota


COSMOS_HAND = [
    {"id": "a", "context": "Ann lost her keys.", "question": "What did Ann do next?", "label": 2,
     "answer0": "She sang.", "answer1": "She slept.", "answer2": "She searched her bag.",
     "answer3": "None of the above choices ."},
    {"id": "b", "context": "It rained all day.", "question": "Why was the game cancelled?", "label": 3,
     "answer0": "Because of the sun.", "answer1": "Because of snow.", "answer2": "Because of wind.",
     "answer3": "None of the above choices ."},
] * 50


def test_cosmos_qa_hand_rows():
    labels, nota = _check_cosmos(COSMOS_HAND, seed=0)
    assert len(nota) == 50 and all(y == 0 for y, n in labels if n)
    # a "None of the above" row consumes no coin: the next row sees the draw a coin-row would have had
    a, b = COSMOS_HAND[0], COSMOS_HAND[1]
    rng = random.Random(5)
    fmt.cosmos_qa(b, rng)
    after_nota = rng.random()
    rng = random.Random(5)
    rng.choice([0, 1, 2])                       # the only draw a NOTA row makes
    assert after_nota == rng.random()


@needs_data
def test_cosmos_qa_real_rows():
    rows = rows_of("cosmos_qa", "validation", 600)
    labels, nota = _check_cosmos(rows, seed=0)
    assert len(nota) > 20                        # 259 of 2985 in the whole file
    coin = [y for y, n in labels if not n]
    assert 0.4 < sum(coin) / len(coin) < 0.6
    assert sum(y for y, _ in labels) < sum(coin) + 1   # NOTA rows only add negatives
