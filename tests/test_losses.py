"""Losses against the formulas of REFERENCE.md §5, each recomputed independently here (numpy for the
values, explicit torch arithmetic where a gradient is compared)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import losses as L


def _np_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _np_ce(z, q):
    """mean_i  -sum_c q_ic log softmax(z_i)_c, in float64."""
    return float(np.mean(-(np.asarray(q, np.float64) * np.log(_np_softmax(z))).sum(axis=1)))


def _batch(n=32, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 2, generator=g) * scale
    y1 = torch.rand(n, generator=g)
    soft = torch.stack([1 - y1, y1], dim=1)
    return logits, soft


# -- xent / kl ---------------------------------------------------------------------------------

def test_xent_soft_targets_matches_formula():
    z = [[0.3, -1.2], [2.0, 0.5], [-0.7, -0.7], [1.5, -2.5]]
    y = [[0.9, 0.1], [0.25, 0.75], [0.5, 0.5], [0.0, 1.0]]
    got = L.xent(torch.tensor(z), torch.tensor(y)).item()
    assert got == pytest.approx(_np_ce(z, y), rel=1e-6)
    # By hand for one row: z = (0, log 3) -> p = (1/4, 3/4); y = (1/2, 1/2) -> CE = -(log(1/4)+log(3/4))/2
    one = L.xent(torch.tensor([[0.0, float(np.log(3.0))]]), torch.tensor([[0.5, 0.5]])).item()
    assert one == pytest.approx(-(np.log(0.25) + np.log(0.75)) / 2, rel=1e-6)


def test_xent_ignores_step_frac_and_is_fp32_on_half_input():
    z, y = _batch(8)
    a = L.xent(z, y, step_frac=0.0)
    b = L.xent(z, y, step_frac=0.9)
    assert a.item() == b.item()
    h = L.xent(z.to(torch.bfloat16), y.to(torch.bfloat16))
    assert h.dtype == torch.float32


def test_kl_is_xent_minus_label_entropy():
    z, y = _batch(16, seed=1)
    yn = y.numpy().astype(np.float64)
    entropy = float(np.mean(-(yn * np.log(yn)).sum(axis=1)))
    assert L.kl(z, y).item() == pytest.approx(_np_ce(z.numpy(), yn) - entropy, rel=1e-5, abs=1e-6)
    # zero at a perfect fit, also with hard (0/1) labels where 0*log 0 must count as 0
    p = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    assert L.kl(torch.log(p), p).item() == pytest.approx(0.0, abs=1e-6)
    hard = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    zh = torch.tensor([[0.0, 0.0], [1.0, 3.0]])
    assert torch.isfinite(L.kl(zh, hard))
    assert L.kl(zh, hard).item() == pytest.approx(L.xent(zh, hard).item(), abs=1e-6)
    # same gradient as xent (H(y) does not depend on z)
    z1 = z.clone().requires_grad_(True)
    z2 = z.clone().requires_grad_(True)
    L.kl(z1, y).backward()
    L.xent(z2, y).backward()
    assert torch.allclose(z1.grad, z2.grad, atol=1e-7)


# -- product -----------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, 2.0), (2.0, 0.0)])
def test_product_value(alpha, beta):
    z, y = _batch(16, seed=2)
    p = _np_softmax(z.numpy())
    t = p ** beta * y.numpy().astype(np.float64) ** alpha
    t = t / t.sum(axis=1, keepdims=True)
    got = L.product(z, y, alpha=alpha, beta=beta).item()
    assert got == pytest.approx(_np_ce(z.numpy(), t), rel=1e-5)


def test_product_target_is_detached():
    z, y = _batch(16, seed=3)
    with torch.no_grad():
        p = torch.softmax(z, dim=-1)
        t = p * y / (p * y).sum(dim=-1, keepdim=True)       # fixed target, alpha = beta = 1
    z1 = z.clone().requires_grad_(True)
    L.product(z1, y).backward()
    # gradient of the mean CE against a fixed target: (softmax(z) - t) / N
    expected = (torch.softmax(z, dim=-1) - t) / z.shape[0]
    assert torch.allclose(z1.grad, expected, atol=1e-6)
    # and it is NOT the gradient one would get if the target were differentiated through
    z2 = z.clone().requires_grad_(True)
    p2 = torch.softmax(z2, dim=-1)
    t2 = p2 * y / (p2 * y).sum(dim=-1, keepdim=True)
    (-(t2 * torch.log_softmax(z2, dim=-1)).sum(-1).mean()).backward()
    assert not torch.allclose(z2.grad, expected, atol=1e-4)


def test_product_warmup_frac_is_inert():
    z, y = _batch(8, seed=4)
    assert L.product(z, y, step_frac=0.0, warmup_frac=0.1).item() == L.product(z, y, step_frac=0.5,
                                                                               warmup_frac=0.9).item()


# -- logconf -----------------------------------------------------------------------------------

def _np_logconf(z, y, coef):
    """REFERENCE.md §5 logconf, recomputed in numpy: tau = quantile(p0, mean y1) with linear
    interpolation; hardened e0 if p0 >= tau else e1; L = (1-a) CE(z, y) + a CE(z, hard)."""
    z = np.asarray(z, np.float64)
    y = np.asarray(y, np.float64)
    p0 = _np_softmax(z)[:, 0]
    tau = np.quantile(p0, y[:, 1].mean())        # numpy's default 'linear' = torch.quantile's default
    hard = np.stack([p0 >= tau, p0 < tau], axis=1).astype(np.float64)
    return (1 - coef) * _np_ce(z, y) + coef * _np_ce(z, hard), hard


@pytest.mark.parametrize("s", [0.0, 0.05, 0.1, 0.3, 1.0])
@pytest.mark.parametrize("warmup", ["reference", "linear"])
def test_logconf_value(s, warmup):
    z, y = _batch(32, seed=5)
    coef = 0.5 * ((1.0 if s > 0.1 else s) if warmup == "reference" else min(1.0, s / 0.1))
    want, hard = _np_logconf(z.numpy(), y.numpy(), coef)
    got = L.logconf(z, y, step_frac=s, aux_coef=0.5, warmup_frac=0.1, warmup=warmup).item()
    assert got == pytest.approx(want, rel=1e-5)
    # about a fraction mean(y1) of the batch is hardened to class 1
    assert abs(hard[:, 1].mean() - y[:, 1].mean().item()) <= 1.5 / 32


def test_logconf_threshold_is_torch_quantile_at_mean_weak_prob():
    p0 = torch.tensor([0.9, 0.1, 0.4, 0.7, 0.2])
    prior1 = torch.tensor(0.3)
    tau = L.logconf_threshold(p0, prior1)
    # sorted p0 = .1 .2 .4 .7 .9; position q*(n-1) = 1.2 -> .2 + .2*(.4-.2) = .24
    assert tau.item() == pytest.approx(0.24, abs=1e-6)
    assert tau.item() == pytest.approx(torch.quantile(p0, 0.3).item(), abs=1e-7)


def test_logconf_hardened_labels_by_hand():
    # p0 = softmax(z)[0] = sigmoid(z0 - z1); mean weak y1 = 0.5 -> tau = median of p0
    d = torch.tensor([3.0, 1.0, -1.0, -3.0])            # p0 decreasing
    z = torch.stack([d, torch.zeros(4)], dim=1)
    y = torch.tensor([[0.5, 0.5]] * 4)
    p0 = torch.sigmoid(d)
    tau = (p0[1] + p0[2]) / 2
    hard = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert torch.equal((p0 >= tau).float(), hard[:, 0])
    a = 0.5
    target = (1 - a) * y + a * hard
    want = -(target * torch.log_softmax(z, -1)).sum(-1).mean()
    got = L.logconf(z, y, step_frac=1.0, aux_coef=a, warmup_frac=0.1, warmup="reference")
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    # with step 0 and reference warmup the coefficient is 0: plain xent
    assert L.logconf(z, y, step_frac=0.0, warmup="reference").item() == pytest.approx(L.xent(z, y).item(), rel=1e-6)


def test_logconf_coefficient_reference_warmup_jumps():
    c = lambda s: L.logconf_coef(s, aux_coef=0.5, warmup_frac=0.1, warmup="reference")
    assert c(0.0) == 0.0
    assert c(0.05) == pytest.approx(0.025)
    assert c(0.1) == pytest.approx(0.05)        # s > w is strict: still on the ramp at s = w
    assert c(0.11) == pytest.approx(0.5)        # the Q2 jump
    assert c(0.9) == pytest.approx(0.5)


def test_logconf_coefficient_linear_warmup():
    c = lambda s, w=0.1: L.logconf_coef(s, aux_coef=0.5, warmup_frac=w, warmup="linear")
    assert c(0.0) == 0.0
    assert c(0.05) == pytest.approx(0.25)
    assert c(0.1) == pytest.approx(0.5)
    assert c(0.11) == pytest.approx(0.5)
    assert c(0.02, w=0.2) == pytest.approx(0.05)
    assert c(0.0, w=0.0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        L.logconf_coef(0.5, 0.5, 0.1, "cosine")


def test_logconf_coefficient_reaches_loss():
    """The coefficient in the loss is the warmup mode's: at s=0.05 reference gives 0.025, linear 0.25."""
    z, y = _batch(32, seed=6)
    for warmup, coef in (("reference", 0.025), ("linear", 0.25)):
        want, _ = _np_logconf(z.numpy(), y.numpy(), coef)
        assert L.logconf(z, y, step_frac=0.05, warmup=warmup).item() == pytest.approx(want, rel=1e-5)


def test_logconf_whole_batch_semantics_across_micro_batches():
    z, y = _batch(32, seed=7)
    full = L.logconf(z, y, step_frac=0.5, warmup="reference")
    p0 = torch.softmax(z, -1)[:, 0].detach()
    prior1 = y[:, 1].mean()
    parts = [L.logconf(z[i:i + 8], y[i:i + 8], step_frac=0.5, warmup="reference",
                       batch_p0=p0, batch_prior1=prior1) for i in range(0, 32, 8)]
    assert torch.stack(parts).mean().item() == pytest.approx(full.item(), rel=1e-6)
    # and the gradient too (the trainer backpropagates through the mean of micro-batch losses)
    z1 = z.clone().requires_grad_(True)
    L.logconf(z1, y, step_frac=0.5, warmup="reference").backward()
    z2 = z.clone().requires_grad_(True)
    torch.stack([L.logconf(z2[i:i + 8], y[i:i + 8], step_frac=0.5, warmup="reference",
                           batch_p0=p0, batch_prior1=prior1) for i in range(0, 32, 8)]).mean().backward()
    assert torch.allclose(z1.grad, z2.grad, atol=1e-7)


def test_logconf_micro_batches_differ_without_batch_stats():
    """Constructed so that each micro-batch alone has a different threshold than the whole batch:
    micro-batch k holds rows whose p0 all lie in one quartile of the batch."""
    d = torch.linspace(4.0, -4.0, 32)                  # p0 strictly decreasing over the batch
    z = torch.stack([d, torch.zeros(32)], dim=1)
    y = torch.tensor([[0.5, 0.5]] * 32)
    full = L.logconf(z, y, step_frac=1.0, warmup="reference")
    alone = torch.stack([L.logconf(z[i:i + 8], y[i:i + 8], step_frac=1.0, warmup="reference")
                         for i in range(0, 32, 8)]).mean()
    assert abs(alone.item() - full.item()) > 1e-3
    # the whole-batch hardening: first half class 0, second half class 1; per micro-batch it is 4/4 each
    want, hard = _np_logconf(z.numpy(), y.numpy(), 0.5)
    assert hard[:16, 0].all() and hard[16:, 1].all()
    assert full.item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("name", ["xent", "kl", "product", "logconf"])
def test_mean_over_batch_normalisation(name):
    """Every loss is (1/N) sum_i of a per-row term: the batch value is the mean of single-row values
    (for logconf given the whole batch's threshold statistics), not their sum."""
    z, y = _batch(16, seed=8)
    fn = L.LOSSES[name]
    kw, row_kw = {}, {}
    if name == "logconf":
        kw = {"warmup": "reference"}
        row_kw = dict(kw, batch_p0=torch.softmax(z, -1)[:, 0], batch_prior1=y[:, 1].mean())
    whole = fn(z, y, step_frac=0.5, **kw).item()
    rows = [fn(z[i:i + 1], y[i:i + 1], step_frac=0.5, **row_kw).item() for i in range(16)]
    assert whole == pytest.approx(float(np.mean(rows)), rel=1e-5)
    assert whole != pytest.approx(float(np.sum(rows)), rel=1e-3)
    if name != "logconf":                       # repetition changes logconf's quantile interpolation
        two = fn(torch.cat([z, z]), torch.cat([y, y]), step_frac=0.5).item()
        assert two == pytest.approx(whole, rel=1e-5)


# -- registry ----------------------------------------------------------------------------------

def test_registry():
    assert set(L.LOSSES) == {"xent", "kl", "product", "logconf"}
    assert set(L.LOSS_DEFAULTS) == set(L.LOSSES)
    assert L.BATCH_STATS == {"logconf"}
    assert L.LOSS_DEFAULTS["logconf"] == {"aux_coef": 0.5, "warmup_frac": 0.1, "warmup": None}
    assert L.LOSS_DEFAULTS["product"] == {"alpha": 1.0, "beta": 1.0, "warmup_frac": 0.1}


def test_resolve_params_fills_fidelity_warmup():
    assert L.resolve_params("logconf", {}, "reference") == {"aux_coef": 0.5, "warmup_frac": 0.1,
                                                            "warmup": "reference"}
    assert L.resolve_params("logconf", {}, "linear")["warmup"] == "linear"
    # an explicit choice wins over the fidelity profile
    assert L.resolve_params("logconf", {"warmup": "linear", "aux_coef": 0.75}, "reference") == {
        "aux_coef": 0.75, "warmup_frac": 0.1, "warmup": "linear"}
    assert L.resolve_params("xent", {}, "reference") == {}
    assert "warmup" not in L.resolve_params("product", {}, "reference")
    # the defaults are not mutated
    assert L.LOSS_DEFAULTS["logconf"]["warmup"] is None


def test_logconf_threshold_ties_go_to_class_0():
    """ŝ_i = e0 if p0_i >= tau: with a weak prior of 0 the threshold is min(p0) and every row is
    hardened to class 0; with a prior of 1 it is max(p0) and only that row is class 0."""
    d = torch.tensor([2.0, 1.0, -1.0, -2.0])
    z = torch.stack([d, torch.zeros(4)], dim=1)
    logp = torch.log_softmax(z, -1)
    for y1, hard0 in ((0.0, [1, 1, 1, 1]), (1.0, [1, 0, 0, 0])):
        y = torch.tensor([[1 - y1, y1]] * 4)
        hard = torch.tensor([[h, 1 - h] for h in hard0], dtype=torch.float32)
        want = -((0.5 * y + 0.5 * hard) * logp).sum(-1).mean()
        got = L.logconf(z, y, step_frac=1.0, aux_coef=0.5, warmup="reference")
        assert got.item() == pytest.approx(want.item(), rel=1e-6), y1
