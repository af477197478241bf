"""Tiny random stand-ins for the paper's models, for the rehearsal (harness.rehearsal): same architecture
and the same loading path as the real model, built from its real config scaled down, saved with
`save_pretrained` so that `from_pretrained` (or harness.qwen1's remote-code path) loads them.

- GPT-2 small..xl: GPT2Config with the real activation, epsilon and n_positions, n_layer at 1/12 of the
  real one (1, 2, 3, 4: the ladder's ratios) and hidden sizes in the real ratios (32..64).
- Qwen-1 (1.8B..72B): harness.tiny.make_qwen1 from the shared hub code (trust_remote_code, real vocab).
- Qwen2.5: transformers' Qwen2Config (native, no remote code) with the real GQA ratio, tying and rope base.
Built once into the cache (`$W2S_REHEARSAL_CACHE`, default ~/.cache/w2s-harness/rehearsal), keyed by the
scaled config: a second rehearsal reuses the same bytes, so its stage keys (local digests) are stable.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from .rehearsal_data import cache_root

BUILDER_VERSION = 1
EOT = "<|endoftext|>"
# The real configs (hub config.json values) the tiny ones are scaled from.
GPT2 = {"gpt2": (12, 768, 12), "gpt2-medium": (24, 1024, 16), "gpt2-large": (36, 1280, 20),
        "gpt2-xl": (48, 1600, 25)}                       # n_layer, n_embd, n_head
QWEN1 = {"Qwen/Qwen-1_8B": (24, 2048, 16, 11008), "Qwen/Qwen-7B": (32, 4096, 32, 22016),
         "Qwen/Qwen-14B": (40, 5120, 40, 27392), "Qwen/Qwen-72B": (80, 8192, 64, 49152)}  # layers, hidden, heads, ffn
QWEN25 = {"Qwen/Qwen2.5-0.5B": (24, 896, 14, 2, 4864, True), "Qwen/Qwen2.5-1.5B": (28, 1536, 12, 2, 8960, True),
          "Qwen/Qwen2.5-3B": (36, 2048, 16, 2, 11008, True), "Qwen/Qwen2.5-7B": (28, 3584, 28, 4, 18944, False),
          "Qwen/Qwen2.5-14B": (48, 5120, 40, 8, 13824, False)}   # layers, hidden, heads, kv heads, ffn, tied


def family(model_id: str) -> str | None:
    """gpt2 | qwen1 | qwen2 for the models the rehearsal can stand in for, else None."""
    if model_id in GPT2:
        return "gpt2"
    if model_id in QWEN1:
        return "qwen1"
    if model_id in QWEN25:
        return "qwen2"
    return None


def tiny_config(model_id: str) -> dict:
    """The scaled-down config (plain values; its hash names the cache folder)."""
    fam = family(model_id)
    if fam == "gpt2":
        layers, hidden, _ = GPT2[model_id]
        return {"family": fam, "n_layer": max(1, layers // 12), "n_embd": 8 * round(hidden / 24 / 8), "n_head": 2,
                "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "n_positions": 1024}
    if fam == "qwen1":
        layers, hidden, heads, ffn = QWEN1[model_id]
        h = max(2, heads // 16)
        return {"family": fam, "num_hidden_layers": max(2, layers // 8), "num_attention_heads": h, "kv_channels": 16,
                "hidden_size": 16 * h, "intermediate_size": 2 * round(ffn / hidden * 16 * h / 2),
                "seq_length": 1024, "max_position_embeddings": 1024}
    if fam == "qwen2":
        layers, hidden, heads, kv, ffn, tied = QWEN25[model_id]
        h = max(2, heads // 7)
        return {"family": fam, "num_hidden_layers": max(2, layers // 12), "num_attention_heads": h,
                "num_key_value_heads": max(1, h * kv // heads), "hidden_size": 8 * h,
                "intermediate_size": 2 * round(ffn / hidden * 8 * h / 2), "tie_word_embeddings": tied,
                "rope_theta": 1_000_000.0, "max_position_embeddings": 1024, "rms_norm_eps": 1e-6}
    raise ValueError(f"the rehearsal has no tiny stand-in for model {model_id!r} (known: "
                     f"{', '.join([*GPT2, *QWEN1, *QWEN25])})")


def build(model_id: str) -> Path:
    """The tiny model's folder in the cache, built on first use (atomically: a killed build leaves none)."""
    cfg = tiny_config(model_id)
    key = hashlib.sha256(json.dumps({"v": BUILDER_VERSION, "id": model_id, **cfg}, sort_keys=True).encode()).hexdigest()[:12]
    out = cache_root() / "models" / f"{model_id.split('/')[-1]}-{key}"
    if (out / ".complete").exists():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    {"gpt2": _gpt2, "qwen1": _qwen1, "qwen2": _qwen2}[cfg["family"]](tmp, cfg)
    (tmp / "rehearsal.json").write_text(json.dumps({"stands_in_for": model_id, "config": cfg}, indent=2))
    (tmp / ".complete").write_text("")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _native(config_cls: str, model_cls: str):
    """A builder for a family transformers supports natively: random weights from the scaled config, and
    the small byte-level BPE (the real vocabularies are not cached offline)."""
    def build(out: Path, cfg: dict) -> None:
        import torch
        import transformers

        tok = bpe_tokenizer()
        torch.manual_seed(0)
        conf = getattr(transformers, config_cls)(vocab_size=len(tok), bos_token_id=tok.eos_token_id,
                                                 eos_token_id=tok.eos_token_id,
                                                 **{k: v for k, v in cfg.items() if k != "family"})
        getattr(transformers, model_cls)(conf).save_pretrained(out)
        tok.save_pretrained(out)
    return build


_gpt2 = _native("GPT2Config", "GPT2LMHeadModel")
_qwen2 = _native("Qwen2Config", "Qwen2ForCausalLM")


def _qwen1(out: Path, cfg: dict) -> None:
    from .tiny import make_qwen1

    make_qwen1(out, **{k: v for k, v in cfg.items() if k != "family"})   # the real tiktoken vocabulary


def _byte_alphabet() -> list[str]:
    """GPT-2's byte -> unicode map in its id order: printable bytes first, so id 0 is '!' (Q1)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


CORPUS = ("Passage: Question: Answer: Context: Q: A: Human: Assistant: the of and to a in is was that for it with "
          "as on by at from this which what how does did not can will be are were have has had The A It In "
          "What Which Who When Where Why How None of the above choices . , ? ! ' \" ( ) - : ; 0 1 2 3 4 5 6 7 8 9 ")


def bpe_tokenizer(vocab_size: int = 1024):
    """A small byte-level BPE (GPT-2's scheme: every byte encodes, id 0 = '!', <|endoftext|> = eos; the real
    GPT-2 vocabulary is not cached offline). Merges come from a fixed English corpus: deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from .rehearsal_data import WORDS   # the data module is the lower layer (it imports nothing of ours)

    alphabet = _byte_alphabet()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, special_tokens=[],
                                  show_progress=False)
    tok.train_from_iterator([CORPUS * 4, " ".join(WORDS)] * 8, trainer=trainer)
    vocab, merges = json.loads(tok.to_str())["model"]["vocab"], json.loads(tok.to_str())["model"]["merges"]
    # the alphabet first in GPT-2's byte order (id 0 = '!'), then the merges in the order learnt
    order = alphabet + [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in set(alphabet)]
    bpe = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(order)},
                               merges=[tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in merges]))
    bpe.pre_tokenizer, bpe.decoder = tok.pre_tokenizer, tok.decoder
    bpe.add_special_tokens([EOT])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOT, bos_token=EOT, unk_token=EOT,
                                   model_max_length=1024)
