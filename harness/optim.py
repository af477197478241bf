"""The lr scheduler for the reference's Adafactor (Qwen-72B), safe under DeepSpeed ZeRO-3.

transformers' `AdafactorSchedule` reports `Adafactor._get_lr(group, state[group["params"][0]])`, so it
reads the optimizer's parameter list. ZeRO-3 empties every param group between steps (stage3.py
`_optimizer_step` / `_clear_fp32_optimizer_param_groups`: `param_group['params'] = []`), and the
schedule fails with IndexError before the first step. With `relative_step=True` Adafactor ignores the
group's `lr` altogether (it computes its own step size), so a scheduler only has to *report* something:
this one reports Adafactor's relative step size rho_t = min(1e-2, 1/sqrt(t)) (warmup_init off, as the
reference's torch_optimizer default), i.e. the step size before the per-parameter RMS scaling, and
never looks at the parameters. The value is the same whatever the ZeRO stage.
"""
from __future__ import annotations

import math

from torch.optim.lr_scheduler import LambdaLR


def relative_step(step: int) -> float:
    """Adafactor's rho_t for optimizer step t >= 1 (Shazeer & Stern 2018, fairseq / transformers)."""
    return min(1e-2, 1.0 / math.sqrt(max(1, step)))


class RelativeStepSchedule(LambdaLR):
    """Reports rho_t as the lr (logs, `trainer.lr_scheduler.get_last_lr()`); changes nothing."""

    def __init__(self, optimizer, last_epoch: int = -1):
        for group in optimizer.param_groups:   # LambdaLR multiplies a base lr of 1 by the lambda
            group["initial_lr"] = 1.0
        # after k scheduler steps, Adafactor has taken k steps and will take step k + 1 next
        super().__init__(optimizer, lambda k: relative_step(k + 1), last_epoch)
