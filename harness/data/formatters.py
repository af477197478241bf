"""Formatters: `fn(row, rng) -> (txt, hard_label)`, exactly as the reference formats (REFERENCE.md §4).

RNG consumption is part of the spec: one `random.Random(seed)` per split, consumed in row order.
"""
from __future__ import annotations

import random


def amazon_polarity(row: dict, rng: random.Random) -> tuple[str, int]:
    return f"{row['title']} {row['content']}", int(row["label"])


def sst2(row: dict, rng: random.Random) -> tuple[str, int]:
    return row["sentence"], int(row["label"])


def boolq(row: dict, rng: random.Random) -> tuple[str, int]:
    return f"Passage: {row['passage']}\nQuestion: {row['question']}", int(bool(row["answer"]))


def sciq(row: dict, rng: random.Random) -> tuple[str, int]:
    # One coin per row; a distractor is drawn only when the coin says "wrong".
    label = int(rng.random() < 0.5)
    answer = row["correct_answer"] if label else rng.choice(
        [row["distractor1"], row["distractor2"], row["distractor3"]])
    return f"Q: {row['question']} A: {answer}", label


def anthropic_hh(row: dict, rng: random.Random) -> tuple[str, int]:
    label = int(rng.random() < 0.5)
    return (row["chosen"] if label else row["rejected"]), label


NONE_OF_THE_ABOVE = "None of the above choices ."


def cosmos_qa(row: dict, rng: random.Random) -> tuple[str, int]:
    true_answer = row[f"answer{int(row['label'])}"]
    # "None of the above" rows become negatives without drawing a coin (the reference's RNG order).
    label = 0 if NONE_OF_THE_ABOVE in true_answer else int(rng.random() < 0.5)
    if label:
        answer = true_answer
    else:
        answer = rng.choice([row[f"answer{i}"] for i in range(4) if row[f"answer{i}"] != true_answer])
    return f"Context: {row['context']}\nQuestion: {row['question']}\nAnswer: {answer}", label
