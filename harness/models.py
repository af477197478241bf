"""Model families, the reference's model table, and the classifier: a backbone + a 2-way linear head.

Decoders pool the last real token (attention mask); the reference's "count ids != 0" pooling (Q1) is
available as `pooling: nonzero_count`. Encoders pool the mean of real tokens (sentence-transformers'
convention; `cls` is available). The head is zero-initialised as in the reference unless configured.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

# The table lives in harness.model_table (no torch): the manifest checks it without loading torch.
from .model_table import (DEFAULT_POOLING, FAMILIES, MODELS, POOLINGS, QWEN_REVISIONS, Family,  # noqa: F401
                          ModelEntry, is_local)


def pool(hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, mode: str):
    """hidden [B,T,H] -> [B,H]."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if mode == "last":         # the last position whose mask is 1 (right or left padding alike)
        pos = torch.arange(hidden.shape[1], device=hidden.device)
        return hidden[rows, (attention_mask.long() * pos).argmax(dim=1)]
    if mode == "nonzero_count":  # reference quirk Q1: token id 0 is a real token ('!' in GPT-2)
        return hidden[rows, (input_ids != 0).sum(dim=1) - 1]
    if mode == "mean":
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
    if mode == "cls":
        return hidden[:, 0]
    raise ValueError(f"unknown pooling {mode!r}; expected one of {POOLINGS}")


class W2SClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, hidden_size: int, pooling: str, linear_probe: bool,
                 head_init: str = "zero", head_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.backbone, self.pooling, self.linear_probe = backbone, pooling, linear_probe
        self.config = backbone.config
        self.score = nn.Linear(hidden_size, 2, bias=False, dtype=head_dtype)
        init_head(self.score, head_init)
        if linear_probe:       # only the head trains; the backbone runs without a graph
            backbone.requires_grad_(False)

    def forward(self, input_ids, attention_mask, **_):
        ctx = torch.no_grad() if self.linear_probe else contextlib.nullcontext()
        with ctx:
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
            h = pool(out.last_hidden_state, input_ids, attention_mask, self.pooling)
        return self.score(h.to(self.score.weight.dtype))

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kw):
        # Acts because training runs in train() mode (dropout is off via the config, not eval()).
        self.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=activation_checkpointing_kwargs, **kw)

    @property
    def is_activation_checkpointing(self) -> bool:
        return bool(getattr(self.backbone, "is_activation_checkpointing", False))

    is_gradient_checkpointing = is_activation_checkpointing


def init_head(linear: nn.Linear, how: str) -> None:
    """Under ZeRO-3 partitioning (zero.Init) the weight is an empty shard and an in-place init would
    silently do nothing (transformers#28244): gather it, initialise on rank 0, re-partition."""
    gathered = contextlib.nullcontext()
    if hasattr(linear.weight, "ds_id"):
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters([linear.weight], modifier_rank=0)
    with gathered, torch.no_grad():
        if how == "zero":      # the reference: logits start at 0, p = (1/2, 1/2)
            linear.weight.zero_()
        elif how == "normal":
            linear.weight.normal_(0.0, 0.02)
        else:
            raise ValueError(f"unknown head_init {how!r}")


def head_norm(linear: nn.Linear) -> float:
    """The full head weight's norm, gathered first under ZeRO-3."""
    gathered = contextlib.nullcontext()
    if hasattr(linear.weight, "ds_id"):
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters([linear.weight])
    with gathered:
        return float(linear.weight.detach().float().norm())


def check_head_init(linear: nn.Linear, how: str) -> float:
    """Fail loudly when the configured head init did not take (zero -> exactly 0)."""
    norm = head_norm(linear)
    expected = 0.02 * linear.weight.ds_numel ** 0.5 if hasattr(linear.weight, "ds_numel") else 0.02 * linear.weight.numel() ** 0.5
    ok = norm == 0.0 if how == "zero" else abs(norm / expected - 1) < 0.5
    if not ok:
        raise RuntimeError(f"classifier head is not initialised as configured (head_init={how}): its norm is "
                           f"{norm:.6g}, expected {'0' if how == 'zero' else f'about {expected:.3g}'} "
                           f"(ZeRO-3 skipped the init? transformers#28244)")
    return norm


def _disable_dropout(config) -> None:
    # Dropout off, as in the reference, but via the config so training mode (and with it gradient
    # checkpointing, Q8) still works: attention dropout is often functional, not an nn.Dropout.
    for key, value in list(vars(config).items()):
        if isinstance(value, float) and ("dropout" in key or "pdrop" in key):
            setattr(config, key, 0.0)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Families whose loading needs special cases live in their own module, dispatched by model_type; that
# module may define load_backbone(model_id, revision, config, dtype, trust_remote_code) and
# prepare_tokenizer(tok). Every other family takes the plain AutoModel / AutoTokenizer path.
FAMILY_MODULES = {"qwen": "harness.qwen1"}     # Qwen-1: the hub's remote code under transformers 5


def family_module(model_type: str | None):
    import importlib

    name = FAMILY_MODULES.get(model_type or "")
    return importlib.import_module(name) if name else None


def _model_type(model_id: str, revision: str | None, trust_remote_code: bool) -> str | None:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_id, revision=revision, trust_remote_code=trust_remote_code).model_type
    except (OSError, ValueError):      # a tokenizer-only folder: the plain path
        return None


def load_tokenizer(model_id: str, revision: str | None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_id, revision=revision, trust_remote_code=trust_remote_code)
    special = family_module(_model_type(model_id, revision, trust_remote_code))
    if special is not None and hasattr(special, "prepare_tokenizer"):
        tok = special.prepare_tokenizer(tok)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def family_of(config) -> Family:
    fam = FAMILIES.get(config.model_type)
    if fam is None:
        raise ValueError(f"model type {config.model_type!r} is not in harness.models.FAMILIES "
                         f"(known: {', '.join(sorted(FAMILIES))}); add a Family entry for it")
    return fam


def load_classifier(model_id: str, revision: str | None, dtype: str, pooling: str | None, decoder_pooling: str,
                    linear_probe: bool, head_init: str, dropout: bool, head_fp32: bool = True,
                    trust_remote_code: bool = False):
    """The classifier and its family. `pooling` (the manifest's) wins; else decoders use
    `decoder_pooling` (last | nonzero_count, per fidelity) and encoders mean pooling."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(model_id, revision=revision, trust_remote_code=trust_remote_code)
    fam = family_of(config)
    if not dropout:
        _disable_dropout(config)
    torch_dtype = DTYPES[dtype]
    special = family_module(config.model_type)
    if special is not None and hasattr(special, "load_backbone"):
        backbone = special.load_backbone(model_id, revision, config, torch_dtype, trust_remote_code)
    else:
        backbone = AutoModel.from_pretrained(model_id, revision=revision, config=config, dtype=torch_dtype,
                                             trust_remote_code=trust_remote_code)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd")
    default = decoder_pooling if fam.kind == "decoder" else DEFAULT_POOLING[fam.kind]
    with _zero3_init():   # the head is partitioned like the backbone; init_head gathers it to initialise
        model = W2SClassifier(backbone, hidden, pooling or default, linear_probe,
                              head_init, torch.float32 if head_fp32 else torch_dtype)
    return model, fam, getattr(config, "_commit_hash", None)


def _zero3_init():
    """deepspeed.zero.Init when HF's ZeRO-3 integration is on (TrainingArguments(deepspeed=...) built
    first), else nothing. Transformers model classes are imported before it (ENVIRONMENT.md §8)."""
    from transformers.integrations import deepspeed_config, is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.Init(config_dict_or_path=deepspeed_config())
