"""Data for the rehearsal (harness.rehearsal): a data folder laid out like ../shared/data. Real local files
(under $W2S_DATA_DIR) are linked in where they exist; every other split the paper manifests read gets a
small synthetic JSON-lines file in the dataset's own hub schema (harness.data's `fields`), so the real
formatter, validation and splits run on it. Files are `<name>/<split>.jsonl` (harness.data.local_path's
fallback). Deterministic: the same folder (and file hashes) every time.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

DATA_VERSION = 1
WORDS = ("water energy cell plant animal light heat sound earth rock river cloud rain wind star planet moon sun "
         "metal gas liquid solid atom molecule force motion speed mass weight power wave electron proton gene "
         "blood heart brain bone muscle leaf root seed flower tree forest ocean desert mountain island city "
         "book film song story camera phone battery screen price quality service delivery product order friend "
         "teacher student doctor farmer driver market school house road car train ship bridge garden kitchen").split()
GOOD, BAD = "great excellent love perfect works recommend".split(), "terrible broken hate awful refund useless".split()


def _sent(rng: random.Random, n: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def _row(name: str, i: int, rng: random.Random) -> dict:
    """One row in the hub schema of dataset `name` (its columns and types; texts are word salad)."""
    if name == "sciq":
        return {"question": f"What does the {rng.choice(WORDS)} of a {rng.choice(WORDS)} do?",
                **{f"distractor{k}": rng.choice(WORDS) for k in (1, 2, 3)}, "correct_answer": rng.choice(WORDS),
                "support": _sent(rng, rng.randint(8, 30))}
    if name == "amazon_polarity":
        label = rng.randint(0, 1)
        mood = GOOD if label else BAD
        return {"label": label, "title": f"{rng.choice(mood)} {rng.choice(WORDS)}",
                "content": f"{_sent(rng, rng.randint(5, 30))} {rng.choice(mood)} {_sent(rng, rng.randint(3, 15))}"}
    if name == "boolq":
        return {"question": f"is the {rng.choice(WORDS)} a {rng.choice(WORDS)}", "answer": rng.random() < 0.6,
                "passage": " ".join(_sent(rng, rng.randint(6, 20)) for _ in range(rng.randint(2, 6)))}
    if name == "cosmos_qa":
        answers = [_sent(rng, rng.randint(3, 8)) for _ in range(4)]
        if rng.random() < 0.1:
            answers[3] = "None of the above choices ."
        return {"id": f"rehearsal-{i}", "context": " ".join(_sent(rng, rng.randint(6, 16)) for _ in range(3)),
                "question": f"Why did the {rng.choice(WORDS)} go to the {rng.choice(WORDS)} ?",
                **{f"answer{k}": a for k, a in enumerate(answers)}, "label": rng.randint(0, 3)}
    if name == "anthropic_hh":
        turn = f"\n\nHuman: How do I fix my {rng.choice(WORDS)}?\n\nAssistant:"
        return {"chosen": f"{turn} {_sent(rng, rng.randint(5, 25))}", "rejected": f"{turn} {_sent(rng, rng.randint(5, 25))}"}
    raise ValueError(f"the rehearsal has no synthetic schema for dataset {name!r}")


def cache_root() -> Path:
    """Stand-in models and data, built once per config (shared by every rehearsal on this machine)."""
    return Path(os.environ.get("W2S_REHEARSAL_CACHE", "~/.cache/w2s-harness/rehearsal")).expanduser()


def synthetic(name: str, split: str, n: int) -> list[dict]:
    rng = random.Random(f"{name}/{split}")
    return [_row(name, i, rng) for i in range(n)]


def build(name: str, splits: list[str], n_rows: int) -> tuple[Path, dict]:
    """A data folder for dataset `name`: real files where $W2S_DATA_DIR has them, else synthetic.
    Returns (folder, {split: 'real <path>' | 'synthetic <n> rows'})."""
    from .data import DATASETS, DATA_DIR_ENV

    spec, real_root = DATASETS[name], os.environ.get(DATA_DIR_ENV)
    root = cache_root() / f"data-v{DATA_VERSION}-{n_rows}"
    origin = {}
    for split in splits:
        rel = spec.local_files.get(split)
        real = Path(real_root).expanduser() / rel if rel and real_root else None
        if real is not None and real.is_file():
            dest = root / rel
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
                shutil.copyfile(real, tmp)     # a copy, not a link: the stage keys hash these bytes
                tmp.rename(dest)
            origin[split] = f"real {real}"
            continue
        dest = root / name / f"{split}.jsonl"
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in synthetic(name, split, n_rows)))
            tmp.rename(dest)
        origin[split] = f"synthetic {n_rows} rows in the hub schema"
    return root, origin
