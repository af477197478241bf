"""LoRA students (peft): `train.lora: {r, alpha, dropout, target_modules}` globally or per model.

The adapters are injected into the classifier's backbone after it is built (harness.models builds it;
harness.protocol calls `apply_lora`), so every family the harness loads gets them the same way:
GPT-2 (Conv1D), encoders, Qwen2-family and Qwen-1 remote code. The backbone's own weights are frozen;
the LoRA matrices and the 2-way head (outside the backbone) are what trains. LoRA is identity config:
the resolved `lora` dict is part of the model identity, hence of every stage key it touches.

ZeRO: the adapters are created outside zero.Init as full tensors from a generator seeded by the stage
seed (the same values in one process and on every rank); DeepSpeed's ZeRO-3 engine partitions
parameters that were created outside zero.Init when it starts, and peft reads a partitioned base
layer's shape from `ds_shape`. The head-init check is unaffected (the head is not touched).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LoraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    r: int = Field(8, ge=1, description="adapter rank")
    alpha: float = Field(16.0, gt=0, description="scaling: the update is (alpha / r) * B A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input (0 keeps training deterministic)")
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None, description="module names to adapt, or all-linear (default: peft's per-family choice, e.g. c_attn for GPT-2)")


def problems(m, i: int, mc, t: dict) -> list[tuple[tuple, str]]:
    """Manifest cross-field checks for model i (called from Manifest validation)."""
    if t.get("lora") and t["linear_probe"]:
        return [(("models", i), f"model {mc.label}: lora and linear_probe both set; a linear probe trains the "
                                "head only, LoRA also trains adapters: pick one")]
    return []


def _peft_config(cfg: dict, model_type: str):
    from peft import LoraConfig as PeftLora

    return PeftLora(r=cfg["r"], lora_alpha=cfg["alpha"], lora_dropout=cfg["dropout"], bias="none",
                    target_modules=cfg.get("target_modules"), fan_in_fan_out=model_type == "gpt2")  # GPT-2: Conv1D


def apply_lora(model, cfg: dict | None, seed: int, gradient_checkpointing: bool = False):
    """Inject adapters into `model.backbone` in place; freeze everything in the backbone but them.
    No-op without `cfg`. Returns the model."""
    if not cfg:
        return model
    import torch
    from peft import inject_adapter_in_model

    backbone = model.backbone
    cfg = LoraConfig(**cfg).model_dump()
    if cfg["target_modules"] is None:
        cfg["target_modules"] = default_targets(backbone.config)
    with torch.random.fork_rng(devices=[]):     # adapter init depends on the stage seed only
        torch.manual_seed(seed)
        inject_adapter_in_model(_peft_config(cfg, backbone.config.model_type), backbone)
    names = [n for n, _ in backbone.named_parameters() if "lora_" in n]
    if not names:
        raise ValueError(f"lora.target_modules {cfg['target_modules']} matched no module of {type(backbone).__name__}")
    for n, p in backbone.named_parameters():
        p.requires_grad_("lora_" in n)
    model.score.weight.requires_grad_(True)
    if gradient_checkpointing and hasattr(backbone, "enable_input_require_grads"):
        # Frozen embeddings: checkpointed blocks would see inputs without grad and skip the adapters.
        backbone.enable_input_require_grads()
    return model


def default_targets(config) -> list[str]:
    """peft's per-family defaults, with fallbacks for families it does not list (Qwen-1: c_attn)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    extra = {"qwen": ["c_attn"], "mpnet": ["q", "v"], "modernbert": ["Wqkv"]}
    targets = DEFAULTS.get(config.model_type) or extra.get(config.model_type)
    if not targets:
        raise ValueError(f"no default LoRA target modules for model type {config.model_type!r}; "
                         f"set lora.target_modules (module names, or all-linear)")
    return list(targets)


def count(model) -> dict:
    """Trainable parameter counts: adapters, head and the total (ZeRO-3 shards count in full)."""
    def n(p):
        return getattr(p, "ds_numel", None) or p.numel()
    out = {"total": 0, "trainable": 0, "adapters": 0, "head": 0, "other": 0}
    for name, p in model.named_parameters():
        out["total"] += n(p)
        if p.requires_grad:
            out["trainable"] += n(p)
            out["adapters" if "lora_" in name else "head" if name.startswith("score") else "other"] += n(p)
    return out


def describe(spec) -> str:
    """`w2s plan`: trainable parameters of one model (its stages' harness.spec.StageSpec), built on the meta
    device from its config (no weights are read); `?` when the config is not in the local cache."""
    from .spec import thaw

    t = {"linear_probe": spec.train.linear_probe, "lora": thaw(spec.train.lora)}
    hub_id, revision, remote = spec.model.id, spec.model.revision, spec.model.trust_remote_code

    def build() -> dict | None:
        try:
            import torch
            from transformers import AutoConfig, AutoModel

            from .models import W2SClassifier

            # local_files_only: `plan` never waits on the hub (offline, its retries take minutes)
            config = AutoConfig.from_pretrained(hub_id, revision=revision, trust_remote_code=remote,
                                                local_files_only=True)
            with torch.device("meta"):
                backbone = AutoModel.from_config(config, trust_remote_code=remote)
                hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd")
                model = W2SClassifier(backbone, hidden, "last", t["linear_probe"], "normal")
                apply_lora(model, t.get("lora"), 0)
        except Exception:   # offline without the config: the plan still shows everything else
            return None
        return count(model)
    # remembered per config, library versions and our sources (the head, the adapters): no torch on a later plan
    from .memo import config_digest, library_versions, remembered, source_digest

    digest = config_digest(hub_id, revision)
    key = {"config": digest, "probe": t["linear_probe"], "lora": t.get("lora"), "trust": remote,
           "sources": source_digest(("harness",)), **library_versions("transformers", "torch", "peft")}
    c = remembered("trainable-counts", key, build) if digest else build()
    if c is None:
        return "? (config not available here)"
    what = (f"LoRA r={t['lora'].get('r', 8)}: adapters {c['adapters']:,} + head {c['head']:,}" if t.get("lora")
            else "head only (linear probe)" if t["linear_probe"] else "full fine-tuning")
    return f"{c['trainable']:,} of {c['total']:,} parameters trainable ({100 * c['trainable'] / c['total']:.3g}%): {what}"
