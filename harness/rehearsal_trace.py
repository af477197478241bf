"""What code actually trained a stage, read from the live objects after training (not from the manifest):
the backbone class and the loader that built it, the optimizer (unwrapped from DeepSpeed/accelerate),
the lr scheduler, the DeepSpeed engine's ZeRO stage, the world size, gradient checkpointing and the
weight dtype. protocol.fine_tune stores it in every stage's metrics as `code_path`; the rehearsal
(harness.rehearsal) checks it against what the model table and resources promised.
"""
from __future__ import annotations


def _cls(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def code_path(model, trainer) -> dict:
    import torch

    from .models import family_module

    out: dict = {}
    backbone = getattr(model, "backbone", None)
    if backbone is not None:        # a W2SClassifier (a linear probe trains a HeadOnly on cached features)
        mt = getattr(backbone.config, "model_type", None)
        special = family_module(mt)
        out["model_type"] = mt
        out["backbone"] = _cls(backbone)
        out["remote_code"] = type(backbone).__module__.startswith("transformers_modules")
        out["loader"] = (f"{special.__name__}.load_backbone" if special is not None and hasattr(special, "load_backbone")
                         else "transformers.AutoModel.from_pretrained")
        out["grad_ckpt"] = bool(getattr(backbone, "is_gradient_checkpointing", False)
                                or getattr(backbone, "is_activation_checkpointing", False))
        out["weight_dtype"] = str(next(backbone.parameters()).dtype).removeprefix("torch.")
    chain, opt = [], trainer.optimizer
    while opt is not None and len(chain) < 5:      # accelerate / DeepSpeed wrap the base optimizer
        chain.append(type(opt).__name__)
        opt = getattr(opt, "optimizer", None)
    out["optimizer"] = " > ".join(chain)
    out["lr_scheduler"] = type(trainer.lr_scheduler).__name__ if trainer.lr_scheduler is not None else None
    engine = getattr(trainer, "model_wrapped", None)
    ds = engine if type(engine).__name__ == "DeepSpeedEngine" else None
    out["deepspeed"] = ds is not None
    out["zero_stage"] = int(ds.zero_optimization_stage()) if ds is not None else None
    out["world_size"] = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return out
