"""Loss registry: pure functions `fn(logits[N,2], soft_labels[N,2], step_frac, **params) -> scalar`.

Formulas follow REFERENCE.md §5. Every loss is a mean over the rows it is given. The trainer feeds
micro-batches of one optimizer batch and scales by the accumulation count, so the mean is over the
whole optimizer batch, as in the reference. Losses whose value depends on a statistic of the whole
batch (logconf's threshold) declare it in `BATCH_STATS`; the trainer computes that statistic over the
whole optimizer batch (all micro-batches, all ranks) and passes it as keyword arguments.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:   # torch is imported inside the losses: `w2s validate` checks names without loading it
    import torch

LossFn = Callable[..., "torch.Tensor"]
LOSSES: dict[str, LossFn] = {}
# Default parameters per loss; `None` means "resolved from the fidelity profile".
LOSS_DEFAULTS: dict[str, dict] = {}
# Losses that need whole-optimizer-batch statistics (see harness.train.W2STrainer.get_batch_samples).
BATCH_STATS: set[str] = set()


def register(name: str, defaults: dict | None = None, batch_stats: bool = False):
    """Add a loss. A name registered twice, or a default that is not a keyword parameter of the function
    (what the manifest's `params:` are checked against), fails at import: never a silent replacement."""
    def deco(fn: LossFn) -> LossFn:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is already registered ({LOSSES[name].__module__}."
                             f"{LOSSES[name].__qualname__}); give {fn.__qualname__} another name")
        sig = inspect.signature(fn).parameters
        bad = [k for k in defaults or {} if k not in sig or k in ("logits", "soft_labels", "step_frac")]
        if bad:
            raise TypeError(f"loss {name!r}: default(s) {bad} are not keyword parameters of {fn.__qualname__}"
                            f"{inspect.signature(fn)}")
        LOSSES[name] = fn
        LOSS_DEFAULTS[name] = dict(defaults or {})
        if batch_stats:
            BATCH_STATS.add(name)
        return fn

    return deco


def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of CE(z, q) = -sum_c q_c log softmax(z)_c."""
    import torch.nn.functional as F

    return -(target * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


@register("xent")
def xent(logits, soft_labels, step_frac=0.0):
    return soft_ce(logits.float(), soft_labels.float())


@register("kl")
def kl(logits, soft_labels, step_frac=0.0):
    """KL(y || p) = CE(z, y) - H(y): the gradient of xent, a value that is 0 at a perfect fit."""
    import torch

    y = soft_labels.float()
    entropy = -(y * torch.log(y.clamp_min(1e-12))).sum(dim=-1).mean()
    return soft_ce(logits.float(), y) - entropy


@register("product", {"alpha": 1.0, "beta": 1.0, "warmup_frac": 0.1})
def product(logits, soft_labels, step_frac=0.0, alpha=1.0, beta=1.0, warmup_frac=0.1):
    import torch

    # warmup_frac is stored but unused, exactly as in the reference (Q29).
    logits, y = logits.float(), soft_labels.float()
    target = torch.softmax(logits, dim=-1).pow(beta) * y.pow(alpha)
    target = (target / target.sum(dim=-1, keepdim=True)).detach()
    return soft_ce(logits, target)


def logconf_coef(step_frac: float, aux_coef: float, warmup_frac: float, warmup: str) -> float:
    """The auxiliary coefficient a(s). `reference`: aux_coef * (1 if s > w else s), which ramps to
    aux_coef*w and then jumps to aux_coef (Q2). `linear`: aux_coef * min(1, s/w) (PR #33)."""
    if warmup == "reference":
        return aux_coef * (1.0 if step_frac > warmup_frac else step_frac)
    if warmup == "linear":
        return aux_coef * (min(1.0, step_frac / warmup_frac) if warmup_frac > 0 else 1.0)
    raise ValueError(f"unknown logconf warmup {warmup!r} (expected 'reference' or 'linear')")


def logconf_threshold(p0: torch.Tensor, prior1: torch.Tensor) -> torch.Tensor:
    """tau = quantile of class-0 probabilities at the batch's mean weak probability of class 1."""
    import torch

    return torch.quantile(p0.float(), prior1.float().clamp(0.0, 1.0))


@register("logconf", {"aux_coef": 0.5, "warmup_frac": 0.1, "warmup": None}, batch_stats=True)
def logconf(logits, soft_labels, step_frac=0.0, aux_coef=0.5, warmup_frac=0.1, warmup="linear",
            batch_p0: torch.Tensor | None = None, batch_prior1: torch.Tensor | None = None):
    import torch

    logits, y = logits.float(), soft_labels.float()
    coef = logconf_coef(step_frac, aux_coef, warmup_frac, warmup)
    p = torch.softmax(logits, dim=-1)
    # The threshold is a statistic of the whole optimizer batch (Q3); given one, use it.
    p0_all = p[:, 0].detach() if batch_p0 is None else batch_p0.to(p.device)
    prior1 = y[:, 1].mean() if batch_prior1 is None else batch_prior1.to(p.device)
    tau = logconf_threshold(p0_all, prior1)
    hard = torch.stack([(p[:, 0] >= tau), (p[:, 0] < tau)], dim=1).to(y.dtype).detach()
    return soft_ce(logits, (1.0 - coef) * y + coef * hard)


def resolve_params(name: str, params: dict, fidelity_warmup: str) -> dict:
    """Defaults filled in; fidelity-dependent defaults resolved. The result is identity config."""
    out = dict(LOSS_DEFAULTS[name])
    out.update(params)
    if name == "logconf" and out.get("warmup") is None:
        out["warmup"] = fidelity_warmup
    return out
