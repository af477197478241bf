"""DeepSpeed ZeRO for large strong models: resource resolution, the `auto` policy, a memory estimate,
and the DeepSpeed config generated from the manifest and validated before any launch.

Resources are operational (never in cache keys): ZeRO partitions the same computation, so a stage's
results change by float noise only (reduction order). Precision is identity and has one source of
truth, the model's `dtype` + `fidelity.precision`: under DeepSpeed, `mixed` becomes DeepSpeed's bf16 /
fp16 mode (fp32 master weights in the optimizer). The reference's pure low-precision Adam
(`precision: reference` with a 16-bit dtype) has no DeepSpeed equivalent and is rejected.

Nothing here imports deepspeed at module level: the manifest validator uses the arithmetic and the
allow-list; `validate()` adds DeepSpeed's own parser.
"""
from __future__ import annotations

import copy
import functools

# Top-level DeepSpeed keys the harness generates or lets `resources.deepspeed` set. DeepSpeed ignores
# unknown top-level keys silently, so a typo would otherwise pass.
GENERATED = {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
             "gradient_clipping", "zero_optimization", "bf16", "fp16", "optimizer", "steps_per_print",
             "wall_clock_breakdown", "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer"}
USER_KEYS = {"zero_optimization", "steps_per_print", "wall_clock_breakdown", "communication_data_type",
             "prescale_gradients", "gradient_predivide_factor", "flops_profiler", "comms_logger",
             "activation_checkpointing", "aio", "zero_allow_untested_optimizer", "memory_breakdown", "timers"}
ALLOWED = GENERATED | USER_KEYS
OWNED = {"train_batch_size": "train.batch_size", "train_micro_batch_size_per_gpu": "train.micro_batch",
         "gradient_accumulation_steps": "train.batch_size / (micro_batch x gpus x nodes)",
         "gradient_clipping": "nothing (the reference does not clip)", "bf16": "the model's dtype + fidelity.precision",
         "fp16": "the model's dtype + fidelity.precision", "optimizer": "train.optimizer / lr"}
# Auto keeps this share of GPU memory for model states; the rest is activations, buffers, fragmentation.
BUDGET = 0.7


def world_size(res: dict) -> int:
    return res["gpus"] * res["nodes"]


# -- validation without deepspeed (called from the manifest validator) --------------------------
def resource_problems(m, i: int, mc, t: dict) -> list[tuple[tuple, str]]:
    res = m.resolved_resources(mc)
    own = mc.resources.model_dump(exclude_none=True) if mc.resources is not None else {}

    def loc(key: str) -> tuple:
        return ("models", i, "resources", key) if key in own else ("resources", key)

    out: list[tuple[tuple, str]] = []
    world = world_size(res)
    if res["launcher"] == "none":
        if world > 1:
            out.append((loc("gpus" if res["gpus"] > 1 else "nodes"), f"{world} processes need a launcher; set "
                        f"resources.launcher: deepspeed (or torchrun)"))
        if res["zero_stage"] in (2, 3) or res["offload_optimizer"] == "cpu" or res["offload_params"] == "cpu":
            out.append((loc("launcher"), "ZeRO runs only in launched workers; set resources.launcher: deepspeed "
                        "(or torchrun), even for one GPU"))
    if res["nodes"] > 1 and (res["launcher"] != "deepspeed" or not res["hostfile"]):
        out.append((loc("nodes"), "several nodes need resources.launcher: deepspeed and a resources.hostfile"))
    if t["optimizer"] == "adafactor" and res["offload_optimizer"] == "cpu":
        out.append((loc("offload_optimizer"), f"model {mc.label}: optimizer adafactor (the reference's, Qwen-72B) cannot "
                    f"run with ZeRO-Offload: the generated DeepSpeed config brings DeepSpeed's CPU AdamW, which would "
                    f"replace Adafactor; set resources.offload_optimizer: none (zero_stage auto never offloads "
                    f"Adafactor), or train this model with optimizer: adam"))
    if res["offload_params"] == "cpu" and res["zero_stage"] not in (3, "auto"):
        out.append((loc("offload_params"), f"offload_params needs zero_stage 3 (got {res['zero_stage']})"))
    if res["launcher"] != "none" and t["linear_probe"]:
        out.append((loc("launcher"), f"model {mc.label}: linear_probe trains the head alone on cached features; "
                    f"it needs no ZeRO: use resources.launcher: none for this model"))
    per_step = t["micro_batch"] * world
    if t["batch_size"] % per_step:
        micro_ok = [d for d in range(1, t["batch_size"] + 1) if t["batch_size"] % (d * world) == 0]
        gpus_ok = [g for g in range(1, 17) if t["batch_size"] % (t["micro_batch"] * g * res["nodes"]) == 0]
        fix = (f"set micro_batch to one of {micro_ok} or " if micro_ok else "") + f"set resources.gpus to one of {gpus_ok}"
        out.append((loc("gpus") if res["gpus"] > 1 else ("models", i, "micro_batch"),
                    f"micro_batch {t['micro_batch']} x accumulation x world size {world} (gpus x nodes) must equal "
                    f"batch_size {t['batch_size']} (model {mc.label}; the optimizer batch stays the reference's "
                    f"whatever the GPU count): {t['batch_size']} is not a multiple of {per_step}; {fix}"))
    if res["launcher"] != "none" and t["dtype"] != "float32":
        prec = m.fidelity.resolved()["precision"]
        if prec != "mixed":
            out.append((("fidelity", "precision"), f"model {mc.label}: dtype {t['dtype']} with precision {prec!r} "
                        f"(pure low-precision Adam) has no DeepSpeed equivalent; use fidelity.precision: mixed "
                        f"or dtype float32, or resources.launcher: none"))
    for key in (res["deepspeed"] or {}):
        if key in OWNED:
            out.append((loc("deepspeed"), f"DeepSpeed key {key!r} is generated from {OWNED[key]}; set it there"))
        elif key not in ALLOWED:
            out.append((loc("deepspeed"), f"unknown DeepSpeed key {key!r} (DeepSpeed would ignore it silently); "
                        f"allowed: {', '.join(sorted(USER_KEYS))}"))
    return out


ADAFACTOR_UNDER_ZERO = (
    "under DeepSpeed ZeRO (stage 1-3, auto included) Adafactor steps on flat 1-D fp32 partitions, not on the "
    "model's tensors: its second moment is unfactored (full, like Adam's v without momentum) and the update-"
    "clipping RMS and the relative step's parameter scale (RMS of the parameter) are taken per partition "
    "(ZeRO-1/2: each rank's slice of all parameters; ZeRO-3: sub-groups of up to sub_group_size elements), "
    "so step sizes differ from the reference's per-tensor Adafactor (docs/footguns.md)")


def lint(m, mc, t: dict) -> list[str]:
    """Plan-time warnings (no deepspeed import): Adafactor's semantics under ZeRO."""
    res = m.resolved_resources(mc)
    if t["optimizer"] == "adafactor" and res["launcher"] != "none" and res["zero_stage"] != 0:
        return [f"{mc.label}: {ADAFACTOR_UNDER_ZERO}"]
    return []


# -- parameter count, memory estimate, auto policy --------------------------------------------
@functools.lru_cache(maxsize=64)
def count_params(hub_id: str, revision: str | None = None, trust_remote_code: bool = False) -> float | None:
    """Parameters of a model built from its config on the meta device (no weights are read); remembered
    per config digest (harness.memo) so that `w2s plan` does not import torch."""
    from .memo import config_digest, library_versions, remembered

    compute = lambda: _build_and_count(hub_id, revision, trust_remote_code)   # noqa: E731
    digest = config_digest(hub_id, revision)
    key = {"config": digest, "trust": trust_remote_code, **library_versions("transformers", "torch")}
    return remembered("param-counts", key, compute) if digest else compute()


def _build_and_count(hub_id: str, revision: str | None, trust_remote_code: bool) -> float | None:
    try:
        import torch
        from transformers import AutoConfig, AutoModel

        cfg = AutoConfig.from_pretrained(hub_id, revision=revision, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModel.from_config(cfg, trust_remote_code=trust_remote_code)
        return float(sum(p.numel() for p in model.parameters()))
    except Exception:   # offline, unknown architecture: the policy then says so
        return None


def model_params(spec) -> float | None:
    """The model table's count, else one from the model's config (harness.spec.StageSpec `spec`)."""
    ms = spec.model
    return ms.params or count_params(ms.id, ms.revision, ms.trust_remote_code)


def optim_bytes(optimizer: str, mixed: bool, stage: int) -> int:
    """Optimizer bytes per parameter on the GPU, fp32 master copy included.
    Adam: master 4 (mixed only) + m 4 + v 4. Adafactor (relative step, beta1 None, as the reference's):
    no momentum; its second moment is factored (row + column sums, ~0 bytes/param) only where it sees
    the model's 2-D tensors. ZeRO-1/2/3 hand the optimizer flat 1-D fp32 partitions instead
    (stage_1_and_2.py: `param_group['params'] = [single_partition_of_fp32_groups[i]]`; stage3.py
    `_optimizer_step`: `[fp32_partitioned_groups_flat[sub_group_id]]`), so there the moment is a full
    fp32 tensor: 4 bytes/param (see docs/footguns.md, Adafactor under ZeRO)."""
    master = 4 if mixed else 0
    if optimizer == "adafactor":
        return master + (4 if stage >= 1 else 0)
    return master + 8


def estimate_gb(params: float, stage: int, offload_optimizer: str, offload_params: str, world: int,
                mixed: bool, optimizer: str = "adam") -> dict:
    """Model states per GPU (ZeRO paper, Rajbhandari et al. 2020): weights + grads + optimizer states.
    Mixed: 2 + 2 + optim_bytes (bf16 weights and grads; fp32 master and moments); fp32: 4 + 4 + moments.
    ZeRO-1/2 shard optimizer states (and, 2, grads) over the world; ZeRO-3 shards weights too;
    offload moves optimizer states (and, params, the weights) to CPU memory. Activations excluded."""
    w, g = (2, 2) if mixed else (4, 4)
    o = optim_bytes(optimizer, mixed, stage)
    n = max(1, world)
    weights = params * w / (n if stage == 3 else 1)
    grads = params * g / (n if stage >= 2 else 1)
    optim = params * o / (n if stage >= 1 else 1)
    if offload_optimizer == "cpu":
        optim = 0.0
    if offload_params == "cpu" and stage == 3:
        weights = 0.0
    gb = 1024 ** 3
    return {"weights_gb": weights / gb, "grads_gb": grads / gb, "optim_gb": optim / gb,
            "total_gb": (weights + grads + optim) / gb}


CANDIDATES = [(0, "none", "none"), (2, "none", "none"), (3, "none", "none"), (2, "cpu", "none"),
              (3, "cpu", "none"), (3, "cpu", "cpu")]
# Adafactor: no optimizer offload; ZeRO-3 may still move the bf16 weights to CPU (ZeRO-Infinity's offload_param).
ADAFACTOR_CANDIDATES = [(0, "none", "none"), (2, "none", "none"), (3, "none", "none"), (3, "none", "cpu")]


def gpu_memory_gb(res: dict) -> float | None:
    if res.get("gpu_memory_gb"):
        return float(res["gpu_memory_gb"])
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory / 1024 ** 3
    except Exception:
        pass
    return None


def auto_policy(params: float | None, mem_gb: float | None, world: int, mixed: bool,
                optimizer: str = "adam") -> tuple[int, str, str, str]:
    """(stage, offload_optimizer, offload_params, reason): the first of CANDIDATES (fastest first)
    whose model states fit in BUDGET of the GPU's memory. Adafactor never gets optimizer offload:
    ZeRO-Offload runs DeepSpeed's CPU AdamW in its place (refused, see resource_problems)."""
    if params is None or mem_gb is None:
        why = "parameter count" if params is None else "GPU memory"
        return 2, "none", "none", f"{why} unknown: ZeRO-2 (set resources.gpu_memory_gb or zero_stage)"
    cands = CANDIDATES if optimizer != "adafactor" else ADAFACTOR_CANDIDATES
    for stage, oo, op in cands:
        est = estimate_gb(params, stage, oo, op, world, mixed, optimizer)
        if est["total_gb"] <= BUDGET * mem_gb:
            return stage, oo, op, f"fits {est['total_gb']:.1f} of {mem_gb:.0f} GB ({BUDGET:.0%} budget)"
    stage, oo, op = cands[-1]
    est = estimate_gb(params, stage, oo, op, world, mixed, optimizer)
    need = next((n for n in range(world + 1, 1025)
                 if estimate_gb(params, 3, "none", "none", n, mixed, optimizer)["total_gb"] <= BUDGET * mem_gb), None)
    more = (f"; ZeRO-3 needs at least {need} GPUs of {mem_gb:.0f} GB (gpus x nodes, a divisor of batch_size / "
            f"micro_batch)" if need else "")
    return stage, oo, op, (f"does not fit {mem_gb:.0f} GB even with the most offload {optimizer} allows "
                           f"({est['total_gb']:.1f} GB/GPU > {BUDGET:.0%} budget){more}; expect OOM")


def resolve(spec) -> dict:
    """The resources a stage runs with (its harness.spec.StageSpec), `auto` decided, and the memory
    estimate. Decided here, at launch, not in the plan: `auto` needs the GPU the stage runs on."""
    res = spec.resources.as_dict()
    t = spec.train
    mixed = spec.model.precision == "mixed" and t.dtype != "float32"
    world = world_size(res)
    # no config loading (and no hub access) for single-process stages
    params = spec.model.params if res["launcher"] == "none" else model_params(spec)
    out = dict(res, world=world, params=params, mixed=mixed, reason="set in the manifest", optimizer=t.optimizer)
    if res["launcher"] == "none":
        out.update(zero_stage=None, offload_optimizer="none", offload_params="none", reason="single process")
    elif res["zero_stage"] == "auto":
        mem = gpu_memory_gb(res)
        stage, oo, op, why = auto_policy(params, mem, world, mixed, t.optimizer)
        out.update(zero_stage=stage, offload_optimizer=res["offload_optimizer"] or oo,
                   offload_params=res["offload_params"] or op, reason="auto: " + why, gpu_memory_gb=mem)
    else:
        out.update(offload_optimizer=res["offload_optimizer"] or "none", offload_params=res["offload_params"] or "none")
    stage = out["zero_stage"] or 0
    out["estimate"] = estimate_gb(params, stage, out["offload_optimizer"], out["offload_params"], world,
                                  mixed, t.optimizer) if params else None
    return out


def describe(r: dict) -> str:
    """One line for `w2s plan`."""
    if r["launcher"] == "none":
        head = "single process"
    else:
        off = [k for k, v in (("optimizer", r["offload_optimizer"]), ("params", r["offload_params"])) if v == "cpu"]
        head = (f"{r['launcher']} x{r['world']}, ZeRO-{r['zero_stage']}" + (f" + offload {'+'.join(off)}" if off else ""))
    p = (f"{r['params'] / 1e6:.3g}M params" if r["params"] else "params ?")
    est = f", model states ≈{r['estimate']['total_gb']:.2f} GB/GPU" if r["estimate"] else ""
    return f"{head} ({p}{est}; {r['reason']})"


# -- the DeepSpeed config --------------------------------------------------------------------
def ds_config(spec, r: dict | None = None) -> dict:
    """The DeepSpeed config of a stage (its harness.spec.StageSpec); concrete values throughout (HF
    Trainer checks them against its TrainingArguments)."""
    r = r or resolve(spec)
    t = spec.train
    accum = t.batch_size // (t.micro_batch * r["world"])
    zero: dict = {"stage": r["zero_stage"]}
    if r["zero_stage"] == 3:
        zero.update(stage3_gather_16bit_weights_on_model_save=True)
    if r["offload_optimizer"] == "cpu":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if r["offload_params"] == "cpu":
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    cfg = {"train_batch_size": t.batch_size, "train_micro_batch_size_per_gpu": t.micro_batch,
           "gradient_accumulation_steps": accum, "gradient_clipping": 0.0, "zero_optimization": zero,
           "bf16": {"enabled": r["mixed"] and t.dtype == "bfloat16"},
           "fp16": {"enabled": r["mixed"] and t.dtype == "float16"},
           "steps_per_print": 10 ** 9, "wall_clock_breakdown": False}
    if r["offload_optimizer"] == "cpu":   # ZeRO-Offload needs DeepSpeed's CPU Adam (no decay: the reference's Adam)
        cfg["optimizer"] = {"type": "AdamW", "params": {"lr": t.lr, "betas": [0.9, 0.999], "eps": 1e-8,
                                                        "weight_decay": 0.0}}
    extra = copy.deepcopy(r.get("deepspeed") or {})
    if "zero_optimization" in extra:
        zero.update(extra.pop("zero_optimization"))
    cfg.update(extra)
    return cfg


class ConfigError(ValueError):
    pass


def validate(cfg: dict, world: int) -> dict:
    """Allow-list, batch arithmetic, then DeepSpeed's own parser (which knows no world size outside a
    launched process, so it parses the per-rank equivalent). Returns cfg unchanged."""
    unknown = sorted(set(cfg) - ALLOWED)
    if unknown:
        raise ConfigError(f"DeepSpeed config: unknown top-level key(s) {unknown} (DeepSpeed ignores them "
                          f"silently); allowed: {', '.join(sorted(ALLOWED))}")
    b, mb, ga = cfg["train_batch_size"], cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"]
    if mb * ga * world != b:
        raise ConfigError(f"DeepSpeed config: train_micro_batch_size_per_gpu {mb} x gradient_accumulation_steps "
                          f"{ga} x world size {world} = {mb * ga * world} != train_batch_size {b}; set train.micro_batch "
                          f"(or resources.gpus) so that micro_batch x gpus x nodes divides batch_size")
    from deepspeed.runtime.config import DeepSpeedConfig

    probe = copy.deepcopy(cfg)
    probe["train_batch_size"] = mb * ga
    try:
        DeepSpeedConfig(probe)
    except Exception as e:
        raise ConfigError(f"DeepSpeed rejected the generated config: {e}") from e
    return cfg
