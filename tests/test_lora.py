"""LoRA students (harness.lora): only adapters and the head train, for every family the harness loads;
`lora` is identity config; `w2s plan` shows trainable parameters; a LoRA stage under 2-rank ZeRO-3
on CPU agrees with the single process (deepspeed marker)."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import w2s
from harness.lora import apply_lora, count
from harness.manifest import ManifestError, load
from harness.models import load_classifier
from harness.plan import build_plan
from harness.train import Collator, Rows, W2STrainer, training_args

LORA = {"r": 4, "alpha": 8}


def _train_few_steps(model, tmp_path, steps=3):
    vocab = min(model.config.vocab_size, 1000)
    g = torch.Generator().manual_seed(0)
    items = [{"input_ids": torch.randint(5, vocab, (6,), generator=g).tolist(), "soft_label": [0.2, 0.8] if i % 2 else [0.9, 0.1]}
             for i in range(8 * steps)]
    t = dict(batch_size=8, micro_batch=4, eval_batch=8, lr=1e-2, optimizer="adam", lr_schedule="constant",
             dtype="float32", gradient_checkpointing=False)
    args = training_args(tmp_path / "trainer", t, 0, steps, 1, "reference", 1)
    W2STrainer(model=model, args=args, train_dataset=Rows(items), data_collator=Collator(1),
               loss_name="xent", loss_params={}).train()


def _changed(before: dict, model) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


def _families(tiny_assets, tmp_path):
    from transformers import Qwen2Config, Qwen2Model

    from harness.tiny import make_qwen1

    q2 = tmp_path / "tiny-qwen2"
    Qwen2Model(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)).save_pretrained(q2)
    return {"gpt2": (tiny_assets / "models" / "tiny-gpt2", False), "bert": (tiny_assets / "models" / "tiny-bert", False),
            "qwen2": (q2, False), "qwen1 (remote code)": (make_qwen1(tmp_path / "tiny-qwen1"), True)}


def test_only_adapters_and_head_train_every_family(tiny_assets, tmp_path):
    for fam, (path, remote) in _families(tiny_assets, tmp_path).items():
        model, _, _ = load_classifier(str(path), None, "float32", None, "last", False, "zero", False,
                                      trust_remote_code=remote)
        apply_lora(model, LORA, seed=0)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable and all("lora_" in n or n == "score.weight" for n in trainable), (fam, trainable)
        assert "score.weight" in trainable and float(model.score.weight.detach().abs().sum()) == 0.0   # head init untouched
        c = count(model)
        assert c["trainable"] == c["adapters"] + c["head"] and c["trainable"] < c["total"] / 5, (fam, c)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        _train_few_steps(model, tmp_path / fam)
        changed = _changed(before, model)
        assert "score.weight" in changed, fam
        assert any("lora_B" in n for n in changed), (fam, "adapters moved")
        assert changed <= trainable, (fam, sorted(changed - trainable))


def test_adapter_init_depends_on_the_seed_only(tiny_assets):
    path = str(tiny_assets / "models" / "tiny-gpt2")
    a = apply_lora(load_classifier(path, None, "float32", None, "last", False, "zero", False)[0], LORA, seed=3)
    torch.manual_seed(123)    # the global RNG state must not matter
    b = apply_lora(load_classifier(path, None, "float32", None, "last", False, "zero", False)[0], LORA, seed=3)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n


def test_lora_is_identity_config(tiny):
    base = {s.slug: s.key for s in build_plan(load(tiny))}
    glob = {s.slug: s.key for s in build_plan(load(tiny, ["train.lora={r: 4}"]))}
    assert set(base) == set(glob) and not set(base.values()) & set(glob.values())
    per = {s.slug: s.key for s in build_plan(load(tiny, ["models.1.lora={r: 4}"]))}
    assert per["gt tiny-gpt2 train1 s0"] == base["gt tiny-gpt2 train1 s0"]       # the weak model is untouched
    assert per["gt tiny-bert train2 s0"] != base["gt tiny-bert train2 s0"]
    r8 = {s.slug: s.key for s in build_plan(load(tiny, ["models.1.lora={r: 8}"]))}
    assert r8["gt tiny-bert train2 s0"] != per["gt tiny-bert train2 s0"]
    with pytest.raises(ManifestError, match="lora and linear_probe both set"):
        load(tiny, ["models.1.lora={r: 4}", "models.1.linear_probe=true"])
    with pytest.raises(ManifestError, match="unknown key 'rank'"):
        load(tiny, ["train.lora={rank: 4}"])


def test_lora_run_and_plan(tiny):
    """A LoRA student through `w2s run`: ground truth, ceiling and transfer stages all train with adapters."""
    out = w2s("plan", tiny, "-o", "models.1.lora={r: 4, target_modules: [query, value]}").stdout
    assert "trainable tiny-bert:" in out and "LoRA r=4: adapters 1536 + head 96" in out.replace(",", "")
    assert "trainable tiny-gpt2:" in out and "full fine-tuning" in out
    w2s("run", tiny, "--no-tracking", "-o", "models.1.lora={r: 4}", "-o", "losses=[xent]")
    pgr = pd.read_csv(tiny.parent / "runs" / "tiny" / "pgr.csv")
    assert len(pgr) == 1 and np.isfinite(pgr["w2s_acc"]).all()


@pytest.mark.deepspeed
def test_lora_zero3_two_ranks_match_single_process(tiny, tmp_path):
    """LoRA on both models, 2 gloo ranks under ZeRO-3 (adapters created outside zero.Init are partitioned
    by the engine): the same predictions as one process, and the head-init check still passes."""
    from test_zero import DS_ENV, _stage_tables

    over = ["-o", "train.lora={r: 4}", "-o", "losses=[logconf]"]
    single = tmp_path / "single.yaml"
    single.write_text(tiny.read_text().replace(str(tiny.parent / "runs"), str(tmp_path / "single")))
    w2s("run", single, "--no-tracking", *over, env=DS_ENV)
    w2s("run", tiny, "--no-tracking", *over, "-o", "resources.launcher=deepspeed", "-o", "resources.gpus=2",
        "-o", "resources.zero_stage=3", env=DS_ENV)
    runs = tiny.parent / "runs"
    want, got = _stage_tables(tmp_path / "single"), _stage_tables(runs)
    assert sorted(got) == sorted(want) and len(got) == 3
    for key, tables in want.items():
        for name, a in tables.items():
            np.testing.assert_allclose(np.stack(got[key][name]["soft_label"]), np.stack(a["soft_label"]),
                                       atol=1e-4, err_msg=f"{key}/{name}")
        log = (runs / "stages" / "_launch" / key / "worker.log").read_text()
        assert "head init check: head_init=zero norm=0 zero3_partitioned=True" in log
        assert json.loads((runs / "stages" / "_launch" / key / "metrics.json").read_text())["world_size"] == 2
