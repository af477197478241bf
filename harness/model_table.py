"""Model families and the reference's model table : plain data.

Kept apart from harness.models (the torch classifier) so that validating or planning a manifest does
not import torch; harness.models re-exports every name.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    kind: str                     # decoder | encoder


FAMILIES: dict[str, Family] = {
    **{t: Family("decoder") for t in ("gpt2", "qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2",
                                     "gemma3_text", "gpt_neox", "phi", "phi3", "opt", "olmo2", "smollm3")},
    "qwen": Family("decoder"),    # Qwen-1 (the reference's Qwen): needs trust_remote_code (model table)
    **{t: Family("encoder") for t in ("bert", "mpnet", "roberta", "xlm-roberta", "deberta-v2",
                                     "distilbert", "electra", "modernbert")},
}
DEFAULT_POOLING = {"decoder": "last", "encoder": "mean"}
POOLINGS = ("last", "nonzero_count", "mean", "cls")


@dataclass(frozen=True)
class ModelEntry:
    """A row of the reference's model table (REFERENCE.md §3)."""
    hub_id: str
    lr: float
    eval_batch: int = 32
    revision: str | None = None
    optimizer: str = "adam"
    grad_ckpt: bool = False
    params: float | None = None   # parameter count, for plan estimates
    trust_remote_code: bool = False


QWEN_REVISIONS = {
    "Qwen/Qwen-1_8B": "5fde88dff770a7d036847211f5d9d9705f0caa69",
    "Qwen/Qwen-7B": "d4efd21e866b9cb3466cb65b963933f5e98016d1",
    "Qwen/Qwen-14B": "8be2854218fea9054331e217fd26a06f3fd02004",
    "Qwen/Qwen-72B": "fec78c0e3b3b10dd9f0ce775c34a686a3255a7d1",
}
MODELS: dict[str, ModelEntry] = {
    "gpt2": ModelEntry("openai-community/gpt2", 5e-5, params=124e6),
    "gpt2-medium": ModelEntry("openai-community/gpt2-medium", 5e-5, params=355e6),
    "gpt2-large": ModelEntry("openai-community/gpt2-large", 1e-5, params=774e6),
    "gpt2-xl": ModelEntry("openai-community/gpt2-xl", 1e-5, eval_batch=2, grad_ckpt=True, params=1.56e9),
    "Qwen/Qwen-1_8B": ModelEntry("Qwen/Qwen-1_8B", 1e-5, 2, QWEN_REVISIONS["Qwen/Qwen-1_8B"], grad_ckpt=True, params=1.8e9, trust_remote_code=True),
    "Qwen/Qwen-7B": ModelEntry("Qwen/Qwen-7B", 1e-5, 2, QWEN_REVISIONS["Qwen/Qwen-7B"], grad_ckpt=True, params=7.7e9, trust_remote_code=True),
    "Qwen/Qwen-14B": ModelEntry("Qwen/Qwen-14B", 1e-5, 2, QWEN_REVISIONS["Qwen/Qwen-14B"], grad_ckpt=True, params=14.2e9, trust_remote_code=True),
    "Qwen/Qwen-72B": ModelEntry("Qwen/Qwen-72B", 1e-5, 1, QWEN_REVISIONS["Qwen/Qwen-72B"], "adafactor", True, 72.3e9, True),
    # The offline encoder ladder (../shared/assets/seed-hf-cache.sh).
    "sentence-transformers/paraphrase-MiniLM-L3-v2": ModelEntry("sentence-transformers/paraphrase-MiniLM-L3-v2", 5e-5, params=17.4e6),
    "sentence-transformers/all-MiniLM-L6-v2": ModelEntry("sentence-transformers/all-MiniLM-L6-v2", 5e-5, params=22.7e6),
    "sentence-transformers/all-mpnet-base-v2": ModelEntry("sentence-transformers/all-mpnet-base-v2", 2e-5, params=109.5e6),
}


def is_local(model_id: str) -> bool:
    return model_id.startswith(("/", "./", "../", "~")) or os.path.isdir(os.path.expanduser(model_id))
