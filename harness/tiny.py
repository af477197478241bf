"""Tiny assets for tests and smoke runs: random GPT-2 and BERT models built from configs and saved
with `save_pretrained` (so the real `from_pretrained` path loads them), a word-level tokenizer, a
learnable synthetic sentiment set in SST-2's columns, and a manifest that uses them.

    python -m harness.tiny OUT_DIR      # then: w2s run OUT_DIR/tiny.yaml
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

POS = "good great fine happy superb lovely charming brilliant warm fun".split()
NEG = "bad awful dull sad boring poor ugly weak cold tedious".split()
NEUTRAL = "the a film movie story plot it was is and very quite rather but".split()
# id 0 is a real token ("!"), as in GPT-2, so the reference's nonzero-count pooling can be tested.
SPECIAL = ["!", "[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def vocab() -> dict[str, int]:
    words = SPECIAL + sorted(set(POS + NEG + NEUTRAL))
    return {w: i for i, w in enumerate(words)}


def make_tokenizer(out: Path, with_cls: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab(), unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if with_cls:
        v = vocab()
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", v["[CLS]"]), ("[SEP]", v["[SEP]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]" if with_cls else None, sep_token="[SEP]",
                                   eos_token="[SEP]")
    fast.save_pretrained(out)


def make_models(root: Path) -> dict[str, Path]:
    import torch
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    v = len(vocab())
    paths = {"tiny-gpt2": root / "tiny-gpt2", "tiny-bert": root / "tiny-bert"}
    GPT2LMHeadModel(GPT2Config(vocab_size=v, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                               pad_token_id=1, bos_token_id=4, eos_token_id=4)).save_pretrained(paths["tiny-gpt2"])
    make_tokenizer(paths["tiny-gpt2"], with_cls=False)
    BertModel(BertConfig(vocab_size=v, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=96, max_position_embeddings=64, pad_token_id=1),
              add_pooling_layer=False).save_pretrained(paths["tiny-bert"])
    make_tokenizer(paths["tiny-bert"], with_cls=True)
    return paths


QWEN1_FILES = ("configuration_qwen.py", "modeling_qwen.py", "qwen_generation_utils.py", "tokenization_qwen.py",
               "cpp_kernels.py", "qwen.tiktoken", "tokenizer_config.json", "LICENSE", "NOTICE")
QWEN1_TINY = dict(hidden_size=32, num_attention_heads=2, kv_channels=16, intermediate_size=64, num_hidden_layers=2,
                  seq_length=64, max_position_embeddings=64, bf16=False, fp16=False, fp32=False)


def make_qwen1(out_dir: str | Path, seed: int = 0, **config) -> Path:
    """A tiny random Qwen-1 model in `out_dir`, loadable by path with trust_remote_code: the hub's code and
    vocabulary (harness.qwen1.assets_dir) copied unmodified, a small config.json that keeps auto_map and
    model_type qwen (the real vocab size: the tokenizer's ids reach 151,850), random weights saved with
    save_pretrained. `config` overrides QWEN1_TINY. Stable API: the rehearsal builds its Qwen models with it."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from .qwen1 import assets_dir, model_class, stream_generator_stub

    src, out = assets_dir(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in QWEN1_FILES:
        shutil.copyfile(src / name, out / name)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(QWEN1_TINY, **config)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    conf = AutoConfig.from_pretrained(out, trust_remote_code=True)
    model_class(conf, str(out), None)        # the stand-in import and patches (harness.qwen1) first
    torch.manual_seed(seed)
    with stream_generator_stub():           # from_config checks the remote imports again
        model = AutoModelForCausalLM.from_config(conf, trust_remote_code=True, dtype=torch.float32)
    model.save_pretrained(out)
    # save_pretrained rewrites config.json with the model's resolved flags; keep the hub's "unset" precision
    # so loading has to set it (fact 6), and keep the remote-code files next to the weights.
    saved = json.loads((out / "config.json").read_text())
    saved.update({k: cfg[k] for k in ("bf16", "fp16", "fp32", "auto_map")})
    (out / "config.json").write_text(json.dumps(saved, indent=2))
    return out


def make_data(root: Path, n_train: int = 600, n_val: int = 200, seed: int = 0) -> Path:
    """Sentences of sentiment words and filler; the label is the majority sentiment, 10 % flipped."""
    rng = random.Random(seed)
    d = root / "sst2"
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("validation", n_val)):
        with open(d / f"{split}.jsonl", "w") as f:
            for i in range(n):
                k_pos, k_neg = rng.randint(0, 3), rng.randint(0, 3)
                while k_pos == k_neg:
                    k_neg = rng.randint(0, 3)
                words = [rng.choice(POS) for _ in range(k_pos)] + [rng.choice(NEG) for _ in range(k_neg)]
                words += [rng.choice(NEUTRAL) for _ in range(rng.randint(2, 6))]
                rng.shuffle(words)
                if rng.random() < 0.3:
                    words.append("!")
                label = int(k_pos > k_neg) if rng.random() > 0.1 else int(k_pos < k_neg)
                f.write(json.dumps({"idx": i, "sentence": " ".join(words), "label": label}) + "\n")
    return root


MANIFEST = """\
# Run: w2s run {root}/tiny.yaml      (made by: python -m harness.tiny {root})
name: tiny
dataset:
  name: sst2
  source: {root}/data
  n_docs: 400
  n_test_docs: 200
  max_ctx: 24
models:
  - {{name: tiny-gpt2, id: {root}/models/tiny-gpt2, lr: 1.0e-3}}
  - {{name: tiny-bert, id: {root}/models/tiny-bert, lr: 1.0e-3}}
train:
  batch_size: 16
  micro_batch: 8
  epochs: 2
losses: [xent, logconf]
seeds: [0]
output:
  dir: {root}/runs
  log_every: 5
"""


def make_all(root: str | Path) -> Path:
    root = Path(root).resolve()
    make_models(root / "models")
    make_data(root / "data")
    path = root / "tiny.yaml"
    path.write_text(MANIFEST.format(root=root))
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m harness.tiny OUT_DIR")
    print(make_all(sys.argv[1]))
