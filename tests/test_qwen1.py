"""Qwen-1 through the hub's unmodified remote code (../shared/assets/qwen1-remote-code), on a tiny random
model built from it (harness.tiny.make_qwen1): the seven facts of the assets' README, each handled."""
import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import w2s
from harness.models import load_classifier, load_tokenizer
from harness.qwen1 import PAD_ID, PAD_TOKEN, assets_dir


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    from harness.tiny import make_qwen1

    return make_qwen1(tmp_path_factory.mktemp("qwen1") / "tiny-qwen1")


def load(path, dtype="float32"):
    model, fam, _ = load_classifier(str(path), None, dtype, None, "last", False, "zero", False, trust_remote_code=True)
    return model, fam


def test_the_copied_code_is_the_hubs(qwen):
    for name in ("modeling_qwen.py", "configuration_qwen.py", "tokenization_qwen.py", "qwen_generation_utils.py"):
        assert (qwen / name).read_bytes() == (assets_dir() / name).read_bytes()
    cfg = json.loads((qwen / "config.json").read_text())
    assert cfg["model_type"] == "qwen" and "AutoModel" not in cfg["auto_map"]      # fact 4
    assert (cfg["bf16"], cfg["fp16"], cfg["fp32"]) == (False, False, False)      # as the hub ships it


def test_every_loaded_tensor_equals_the_checkpoint(qwen):
    """Fact 3: transformers 5 re-runs Qwen's init on the attention modules; attn.c_proj must survive."""
    model, fam = load(qwen)
    assert fam.kind == "decoder" and type(model.backbone).__name__ == "QWenModel"   # `.transformer` of the LM
    ckpt = load_file(qwen / "model.safetensors")
    state = {f"transformer.{k}": v for k, v in model.backbone.state_dict().items()}
    assert set(state) == {k for k in ckpt if k.startswith("transformer.")}
    differ = [k for k in state if not torch.equal(state[k], ckpt[k])]
    assert differ == []
    assert sum(1 for k in state if k.endswith("attn.c_proj.weight")) == 2


def test_forward_backward_with_padding_and_checkpointing(qwen):
    """Fact 2 (get_head_mask) and 1 (the stream-generator import): the model runs and trains, and the
    stand-in module is gone afterwards; checkpointing (the table's grad ckpt) acts in the remote code."""
    model, _ = load(qwen)
    assert "transformers_stream_generator" not in sys.modules
    tok = load_tokenizer(str(qwen), None, True)
    batch = tok(["a good film !", "bad"], padding=True, return_tensors="pt")
    assert batch["input_ids"][1, -1] == PAD_ID and batch["attention_mask"][1, -1] == 0
    model.activation_checkpointing_enable()
    assert model.backbone.gradient_checkpointing
    model.train()
    model.score.weight.data.normal_(0, 0.02)
    logits = model(batch["input_ids"], batch["attention_mask"])
    logits.sum().backward()
    assert logits.shape == (2, 2) and model.backbone.h[0].attn.c_proj.weight.grad.abs().sum() > 0


def test_the_tokenizer_pads_with_endoftext(qwen):
    tok = load_tokenizer(str(qwen), None, True)
    assert (tok.pad_token, tok.pad_token_id, tok.padding_side) == (PAD_TOKEN, PAD_ID, "right")
    assert tok.convert_ids_to_tokens(0) == b"!"     # id 0 is a real token (the reference's pooling, Q1)
    ids = tok(["good", "a much longer sentence here"], padding=True)["input_ids"]
    assert len(ids[0]) == len(ids[1]) and ids[0][-1] == PAD_ID


@pytest.mark.parametrize("dtype,flags", [("float32", (False, False, True)), ("bfloat16", (True, False, False))])
def test_precision_flag_follows_the_requested_dtype(qwen, dtype, flags):
    """Fact 6: with all three flags false the model picks bf16 itself on a bf16 GPU; set explicitly,
    it keeps the dtype asked for."""
    model, _ = load(qwen, dtype)
    cfg = model.backbone.config
    assert (cfg.bf16, cfg.fp16, cfg.fp32) == flags
    assert {p.dtype for p in model.backbone.parameters()} == {getattr(torch, dtype)}


def test_missing_assets_say_where_to_point(monkeypatch, tmp_path):
    monkeypatch.setenv("W2S_QWEN1_CODE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="W2S_QWEN1_CODE"):
        assets_dir()


MANIFEST = """\
# Run: w2s run {root}/qwen1.yaml
name: tiny-qwen1
dataset: {{name: sst2, source: {data}, n_docs: 160, n_test_docs: 100, max_ctx: 24}}
models:
  - {{name: tiny-gpt2, id: {gpt2}, lr: 1.0e-3}}
  - {{name: tiny-qwen1, id: {qwen}, lr: 1.0e-3, trust_remote_code: true}}
train: {{batch_size: 16, micro_batch: 8, epochs: 1}}
losses: [xent]
output: {{dir: {root}/runs}}
"""


def test_tiny_qwen1_is_the_strong_student_of_tiny_gpt2(qwen, tiny_assets, tmp_path):
    path = tmp_path / "qwen1.yaml"
    path.write_text(MANIFEST.format(root=tmp_path, data=tiny_assets / "data", gpt2=tiny_assets / "models/tiny-gpt2",
                                    qwen=qwen))
    w2s("run", path, "--no-tracking")
    res = json.loads((tmp_path / "runs/tiny-qwen1/results.json").read_text())
    rows = [(r["weak"], r["strong"], r["loss"]) for r in res["pgr"]]
    assert rows == [("tiny-gpt2", "tiny-qwen1", "xent")]
    assert all(0 <= r["test_acc"] <= 1 for r in res["stages"]) and len(res["stages"]) == 3
