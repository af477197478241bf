"""Launched by tests/test_qwen72.py on 2 gloo ranks (torchrun): train MANIFEST's last model as harness.protocol
does (arguments first, so HF's zero.Init partitions the model as it is built; the harness's DeepSpeed config,
W2STrainer, Adafactor) for 3 optimizer steps, then write rank 0's findings to OUT/result.json.
Usage: python -m torch.distributed.run --nproc_per_node=2 qwen72_zero3_worker.py MANIFEST OUT"""
import json
import sys
from pathlib import Path

import deepspeed
import torch

from harness import zero
from harness.manifest import load
from harness.models import load_classifier, load_tokenizer
from harness.plan import stage_specs
from harness.rehearsal_trace import code_path
from harness.train import Collator, Rows, W2STrainer, training_args

STEPS = 3


def gathered(model) -> dict:
    params = list(model.parameters())
    with deepspeed.zero.GatheredParameters(params):
        return {n: p.detach().float().clone() for n, p in model.named_parameters()}


def main(manifest: str, out: str) -> None:
    m = load(manifest)
    mc = m.models[-1]
    spec = stage_specs(m)[mc.label]      # the resolved stage description (harness.spec), as the plan's
    t, r = spec.train.as_dict(), zero.resolve(spec)
    cfg = zero.validate(zero.ds_config(spec, r), r["world"])
    deepspeed.init_distributed(dist_backend="gloo")   # as harness.worker: up before zero.Init parses the config
    args = training_args(Path(out) / "trainer", t, 0, STEPS, r["world"], "mixed", 1, deepspeed=cfg)
    _ = args.device     # the process group before zero.Init
    tok = load_tokenizer(mc.id, None, True)
    model, _, _ = load_classifier(mc.id, None, "float32", None, "last", False, "zero", False, head_fp32=True,
                                  trust_remote_code=True)
    before = gathered(model)
    texts = [f"question {i}: is the sky {'blue' if i % 2 else 'green'}?" for i in range(t["batch_size"] * STEPS)]
    items = [{"input_ids": tok(x)["input_ids"], "soft_label": [float(i % 2 == 0), float(i % 2)]}
             for i, x in enumerate(texts)]
    trainer = W2STrainer(model=model, args=args, train_dataset=Rows(items), data_collator=Collator(tok.pad_token_id),
                         loss_name="xent", loss_params={})
    trainer.train()
    after = gathered(trainer.model_wrapped.module if hasattr(trainer.model_wrapped, "module") else model)
    cp = code_path(model, trainer)
    if torch.distributed.get_rank() == 0:
        hist = trainer.state.log_history
        res = {**cp, "steps": trainer.state.global_step, "ds_optimizer": cfg.get("optimizer"),
               "losses": [h["loss"] for h in hist if "loss" in h],
               "lrs": [h["learning_rate"] for h in hist if "learning_rate" in h],
               "tensors": len(before), "changed": sum(not torch.equal(before[n], after[n]) for n in before),
               "unchanged": [n for n in before if torch.equal(before[n], after[n])],
               "ndim": {n: v.dim() for n, v in before.items()},
               "max_change": {n: float((after[n] - before[n]).abs().max()) for n in before}}
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "result.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
