"""ZeRO-3 throughput check for the harness's large strong models, in one call on a lent GPU.

Randomly initialised models of gpt2-xl size (1.56B) and Qwen2-1.5B size, built from configs (no
weights travel), wrapped in the harness's W2SClassifier (backbone + zero-init head), trained with
DeepSpeed ZeRO-3 in bf16 at the reference's optimizer batch of 32 (micro-batch x accumulation x
world size), gradient checkpointing on, dropout off via the config. Prints, per model: samples/s,
tokens/s, model FLOPs utilisation against the GPU's dense bf16 peak, peak memory, and the head-init
check (gathered after deepspeed.initialize: zero init -> norm exactly 0). A benchmark that prints
numbers, not a timed test. It imports neither datasets nor mlflow.

    python bench/gpu_check.py [--out FILE.json]          # GPU (see docs/performance.md)
    python bench/gpu_check.py --tiny                     # CPU smoke run: tiny models, fp32, gloo
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", category=FutureWarning)   # torch.distributed deprecation chatter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the harness, uninstalled

# Dense bf16 peak (no sparsity), by device name; H200 is H100 silicon with more/faster memory.
PEAKS = [("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12)]
MODELS = {   # name -> (model_type, config kwargs)
    "gpt2-xl": ("gpt2", dict(n_embd=1600, n_layer=48, n_head=25, n_positions=1024, vocab_size=50257)),
    "qwen2-1.5b": ("qwen2", dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                 num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                                 max_position_embeddings=4096, tie_word_embeddings=True)),
}
TINY = {
    "gpt2-xl": ("gpt2", dict(n_embd=64, n_layer=2, n_head=2, n_positions=128, vocab_size=500)),
    "qwen2-1.5b": ("qwen2", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=500, max_position_embeddings=128)),
}


def peak_flops(name: str) -> float | None:
    return next((v for k, v in PEAKS if k in name), None)


def dist_env() -> None:
    """One process without a launcher: a world of 1 (a launcher's variables win)."""
    if "RANK" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    os.environ["TORCH_CUDA_ARCH_LIST"] = os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0").replace("9.0a", "9.0")


def ds_config(micro: int, accum: int, world: int, bf16: bool) -> dict:
    # The shape harness.zero.ds_config generates for ZeRO-3 (batch 32, no clipping), inlined so that
    # this script needs no manifest.
    return {"train_batch_size": micro * accum * world, "train_micro_batch_size_per_gpu": micro,
            "gradient_accumulation_steps": accum, "gradient_clipping": 0.0,
            "zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True},
            "bf16": {"enabled": bf16}, "fp16": {"enabled": False}, "zero_allow_untested_optimizer": True,
            "steps_per_print": 10 ** 9, "wall_clock_breakdown": False}


def flops_per_token(n_params: float, layers: int, hidden: int, seq: int) -> float:
    """Model FLOPs (PaLM appendix B): 6N + 12·L·d·T per token; recomputation under checkpointing is
    not counted (that would be hardware FLOPs utilisation)."""
    return 6 * n_params + 12 * layers * hidden * seq


def bench_one(name: str, spec, a, device, world: int, rank: int) -> dict:
    import deepspeed
    import torch
    from transformers import AutoConfig, AutoModel
    from transformers.integrations import HfDeepSpeedConfig

    from harness.models import W2SClassifier, _disable_dropout, _zero3_init, check_head_init

    model_type, kw = spec
    accum = a.batch_size // (a.micro_batch * world)
    if accum * a.micro_batch * world != a.batch_size:
        raise SystemExit(f"--micro-batch {a.micro_batch} x world {world} must divide --batch-size {a.batch_size}")
    bf16 = not a.tiny
    cfg = ds_config(a.micro_batch, accum, world, bf16)
    keep = HfDeepSpeedConfig(cfg)    # noqa: F841  (HF's ZeRO-3 switch: from_config builds under zero.Init)
    config = AutoConfig.for_model(model_type, **kw)
    _disable_dropout(config)
    t0 = time.time()
    backbone = AutoModel.from_config(config, dtype=torch.bfloat16 if bf16 else torch.float32)
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    with _zero3_init():
        model = W2SClassifier(backbone, hidden, "last", False, "zero", torch.float32)
    model.backbone.activation_checkpointing_enable()   # as the reference for these sizes (grad_ckpt)
    n_params = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0,
                            fused=device.type == "cuda")
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=cfg)
    build_s = time.time() - t0
    head = check_head_init(engine.module.score, "zero")     # gathered; raises unless exactly 0
    partitioned = hasattr(engine.module.score.weight, "ds_id")
    engine.train()
    gen = torch.Generator().manual_seed(rank)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    def step() -> float:
        loss_sum = 0.0
        for _ in range(accum):
            ids = torch.randint(0, kw.get("vocab_size", 500), (a.micro_batch, a.seq), generator=gen).to(device)
            mask = torch.ones_like(ids)
            target = torch.softmax(torch.randn(a.micro_batch, 2, generator=gen), -1).to(device)
            logits = engine(input_ids=ids, attention_mask=mask)
            loss = -(target * torch.log_softmax(logits.float(), -1)).sum(-1).mean()
            engine.backward(loss)
            engine.step()              # DeepSpeed steps the optimizer at the accumulation boundary
            loss_sum += float(loss)
        return loss_sum / accum

    for _ in range(a.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.time()
    losses = [step() for _ in range(a.steps)]
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.time() - t0
    samples = a.steps * a.batch_size
    tokens = samples * a.seq
    achieved = flops_per_token(n_params, layers, hidden, a.seq) * tokens / dt / world
    peak = peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    out = {"model": name + ("-tiny" if a.tiny else ""), "params": n_params, "world": world,
           "precision": "bf16" if bf16 else "fp32", "zero_stage": 3, "batch": a.batch_size,
           "micro_batch": a.micro_batch, "accumulation": accum, "seq": a.seq, "steps": a.steps,
           "build_s": round(build_s, 1), "step_s": round(dt / a.steps, 4),
           "samples_per_s": round(samples / dt, 2), "tokens_per_s": round(tokens / dt, 1),
           "tflops_per_gpu": round(achieved / 1e12, 2), "mfu": round(achieved / peak, 4) if peak else None,
           "peak_mem_gb": round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2) if device.type == "cuda"
           else round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2),
           "peak_mem_kind": "cuda max_memory_allocated" if device.type == "cuda" else "host max RSS",
           "head_init_ok": head == 0.0, "head_norm": head, "head_zero3_partitioned": partitioned,
           "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)]}
    engine.destroy()
    del engine, model, backbone, opt, keep
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny models, fp32, gloo")
    ap.add_argument("--models", default="gpt2-xl,qwen2-1.5b")
    ap.add_argument("--batch-size", type=int, default=32, help="optimizer batch (the reference's 32)")
    ap.add_argument("--micro-batch", type=int, default=None, help="per-GPU micro-batch (default 8; tiny 4)")
    ap.add_argument("--seq", type=int, default=None, help="tokens per example (default 256; tiny 16)")
    ap.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default 8; tiny 2)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    a = ap.parse_args(argv)
    a.micro_batch = a.micro_batch or (4 if a.tiny else 8)
    a.seq = a.seq or (16 if a.tiny else 256)
    a.steps = a.steps or (2 if a.tiny else 8)
    a.warmup = min(a.warmup, 1) if a.tiny else a.warmup
    if a.tiny:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    dist_env()
    import deepspeed
    import torch

    cuda = torch.cuda.is_available() and not a.tiny
    if not cuda and not a.tiny:
        print("no CUDA device: use --tiny for the CPU smoke run", file=sys.stderr)
        return 2
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    banned = [m for m in ("datasets", "mlflow") if m in sys.modules]
    info = {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__,
            "deepspeed": deepspeed.__version__, "peak_bf16_flops": peak_flops(torch.cuda.get_device_name(device)) if cuda else None,
            "imported_datasets_or_mlflow": banned}
    results = []
    for name in a.models.split(","):
        spec = (TINY if a.tiny else MODELS)[name]
        r = bench_one(name, spec, a, device, world, rank)
        results.append(r)
        if rank == 0:
            print("RESULT " + json.dumps(r), flush=True)
    if rank == 0:
        print(f"device: {info['device']}  torch {info['torch']}  deepspeed {info['deepspeed']}  "
              f"peak bf16: {info['peak_bf16_flops'] and info['peak_bf16_flops'] / 1e12} TFLOP/s")
        print(f"{'model':<16}{'params':>9}{'samples/s':>11}{'tokens/s':>11}{'TFLOP/s':>9}{'MFU':>7}"
              f"{'peak GB':>9}  head init")
        for r in results:
            mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
            print(f"{r['model']:<16}{r['params'] / 1e6:>8.1f}M{r['samples_per_s']:>11}{r['tokens_per_s']:>11}"
                  f"{r['tflops_per_gpu']:>9}{mfu:>7}{r['peak_mem_gb']:>9}  "
                  f"{'ok' if r['head_init_ok'] else 'FAILED'} (norm {r['head_norm']}, partitioned "
                  f"{r['head_zero3_partitioned']})")
        if a.out:
            Path(a.out).write_text(json.dumps({"info": info, "results": results}, indent=2))
    ok = all(r["head_init_ok"] for r in results) and not [m for m in ("datasets", "mlflow") if m in sys.modules]
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
