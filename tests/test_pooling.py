"""harness.models.pool and W2SClassifier (REFERENCE.md §6, quirk Q1)."""
from __future__ import annotations

import pytest
import torch

from harness.models import POOLINGS, W2SClassifier, init_head, pool


def _hidden(b, t, h=3):
    # hidden[i, t] = a vector that names its position: (100*i + t, -(100*i + t), i)
    out = torch.zeros(b, t, h)
    for i in range(b):
        for j in range(t):
            out[i, j] = torch.tensor([100.0 * i + j, -(100.0 * i + j), float(i)])
    return out


def _pos(pooled, i):
    return int(pooled[i, 0].item()) - 100 * i


def test_last_right_padding():
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 1, 1], [9, 1, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    out = pool(_hidden(3, 4), ids, mask, "last")
    assert [_pos(out, i) for i in range(3)] == [3, 1, 0]


def test_last_left_padding():
    ids = torch.tensor([[5, 6, 7, 8], [1, 1, 5, 6], [1, 1, 1, 9]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]])
    out = pool(_hidden(3, 4), ids, mask, "last")
    assert [_pos(out, i) for i in range(3)] == [3, 3, 3]


def test_last_ignores_token_id_zero():
    ids = torch.tensor([[5, 0, 7, 0, 1, 1]])      # '!' (id 0) is a real token, then padding
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    assert _pos(pool(_hidden(1, 6), ids, mask, "last"), 0) == 3


def test_nonzero_count_reference_quirk():
    h = _hidden(2, 5)
    # no padding at all, but the text contains id 0: L = #{ids != 0} = 4 -> pools position 3, not 4
    ids = torch.tensor([[11, 0, 12, 13, 14], [11, 12, 13, 14, 15]])
    mask = torch.ones(2, 5, dtype=torch.long)
    out = pool(h, ids, mask, "nonzero_count")
    assert [_pos(out, i) for i in range(2)] == [3, 4]
    assert [_pos(pool(h, ids, mask, "last"), i) for i in range(2)] == [4, 4]   # the fix
    # with the reference's 0-right-padding and no '!', it is the last real token
    ids = torch.tensor([[11, 12, 13, 0, 0]])
    assert _pos(pool(_hidden(1, 5), ids, torch.tensor([[1, 1, 1, 0, 0]]), "nonzero_count"), 0) == 2


def test_mean_ignores_padding():
    h = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    ids = torch.ones(2, 5, dtype=torch.long)
    out = pool(h, ids, mask, "mean")
    assert torch.allclose(out[0], h[0, :3].mean(dim=0), atol=1e-6)
    assert torch.allclose(out[1], h[1].mean(dim=0), atol=1e-6)
    h2 = h.clone()
    h2[0, 3:] = 1e6                             # garbage in the padded positions changes nothing
    assert torch.allclose(pool(h2, ids, mask, "mean")[0], out[0], atol=1e-6)


def test_cls_and_unknown():
    h = _hidden(2, 3)
    ids = torch.ones(2, 3, dtype=torch.long)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert [_pos(pool(h, ids, mask, "cls"), i) for i in range(2)] == [0, 0]
    with pytest.raises(ValueError, match="unknown pooling"):
        pool(h, ids, mask, "max")
    assert set(POOLINGS) == {"last", "nonzero_count", "mean", "cls"}


# -- the classifier on a tiny random GPT-2 --------------------------------------------------------

@pytest.fixture(scope="module")
def gpt2():
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2Model(cfg).eval()


def test_zero_head_gives_zero_logits(gpt2):
    model = W2SClassifier(gpt2, 16, "last", linear_probe=False, head_init="zero")
    ids = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 0]])
    logits = model(ids, torch.ones_like(ids))
    assert logits.shape == (2, 2)
    assert torch.equal(logits, torch.zeros(2, 2))
    assert torch.equal(torch.softmax(logits, -1), torch.full((2, 2), 0.5))


def test_padding_does_not_change_logits_under_last(gpt2):
    model = W2SClassifier(gpt2, 16, "last", linear_probe=False, head_init="normal")
    assert model.score.weight.abs().sum() > 0
    ids = torch.tensor([[3, 4, 0, 6, 7]])       # contains id 0 as a real token
    alone = model(ids, torch.ones_like(ids))
    padded_ids = torch.tensor([[3, 4, 0, 6, 7, 1, 1, 1], [9, 8, 7, 6, 5, 4, 3, 2]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0], [1] * 8])
    batch = model(padded_ids, mask)
    assert torch.allclose(batch[0], alone[0], atol=1e-5)
    # nonzero_count on the same input pools the wrong (earlier) position
    quirk = W2SClassifier(gpt2, 16, "nonzero_count", linear_probe=False, head_init="zero")
    quirk.score.load_state_dict(model.score.state_dict())
    assert not torch.allclose(quirk(ids, torch.ones_like(ids))[0], alone[0], atol=1e-4)


def test_linear_probe_trains_head_only(gpt2):
    import copy

    model = W2SClassifier(copy.deepcopy(gpt2), 16, "last", linear_probe=True, head_init="zero")
    ids = torch.tensor([[3, 4, 5]])
    model(ids, torch.ones_like(ids)).sum().backward()
    assert model.score.weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())


def test_init_head():
    lin = torch.nn.Linear(4, 2, bias=False)
    init_head(lin, "zero")
    assert torch.equal(lin.weight, torch.zeros(2, 4))
    with pytest.raises(ValueError):
        init_head(lin, "xavier")
