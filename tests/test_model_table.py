"""Every field of the reference's model table (harness.models.MODELS, REFERENCE.md §3) acts: one test
per field, plus the table-adjacent options (the batch-size lint, self-pairs, the reference's Adafactor)."""
import pytest
import torch

from harness.manifest import Manifest, lint
from harness.models import MODELS, QWEN_REVISIONS

PAPER = ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "Qwen/Qwen-1_8B", "Qwen/Qwen-7B", "Qwen/Qwen-14B",
         "Qwen/Qwen-72B"]


def manifest(models, **kw) -> Manifest:
    return Manifest.model_validate({"name": "t", "dataset": {"name": "sst2", "n_docs": 64, "n_test_docs": 200},
                                    "models": [m if isinstance(m, dict) else {"id": m} for m in models], **kw})


def test_the_paper_ladder_is_in_the_table():
    assert all(name in MODELS for name in PAPER)


def test_hub_id_and_revision_pin():
    m = manifest(PAPER)
    for mc in m.models:
        hub_id, revision = m.hub_id(mc)
        assert hub_id == MODELS[mc.id].hub_id
        assert revision == QWEN_REVISIONS.get(mc.id)      # Qwen pinned, GPT-2 not (as the reference)
    pinned = manifest([{"id": "Qwen/Qwen-7B", "revision": "abc"}, "gpt2"])
    assert pinned.hub_id(pinned.models[0]) == ("Qwen/Qwen-7B", "abc")


def test_lr_eval_batch_and_optimizer_defaults():
    m = manifest(PAPER)
    for mc in m.models:
        t, e = m.resolved_train(mc), MODELS[mc.id]
        assert (t["lr"], t["eval_batch"], t["optimizer"]) == (e.lr, e.eval_batch, e.optimizer)
    assert m.resolved_train(m.models[-1])["optimizer"] == "adafactor"
    assert m.resolved_train(m.models[0])["eval_batch"] == 32 and m.resolved_train(m.models[3])["eval_batch"] == 2


def test_grad_ckpt_is_the_default_of_gradient_checkpointing():
    m = manifest(PAPER)
    got = {mc.id: m.resolved_train(mc)["gradient_checkpointing"] for mc in m.models}
    assert got == {name: name == "gpt2-xl" or name.startswith("Qwen/") for name in PAPER}
    off = manifest(["gpt2", {"id": "gpt2-xl", "gradient_checkpointing": False}])
    assert off.resolved_train(off.models[1])["gradient_checkpointing"] is False
    on = manifest(["gpt2", "gpt2-medium"], train={"gradient_checkpointing": True})
    assert on.resolved_train(on.models[0])["gradient_checkpointing"] is True


def test_grad_ckpt_reaches_the_trainer_and_the_model(tiny_assets, tmp_path):
    """gpt2-xl's resolved settings switch the Trainer's activation checkpointing on, and on a real (tiny)
    GPT-2 backbone the Trainer then turns it on in the model."""
    from harness.models import load_classifier
    from harness.train import Rows, Collator, W2STrainer, training_args

    t = manifest(["gpt2", "gpt2-xl"]).resolved_train(manifest(["gpt2", "gpt2-xl"]).models[1])
    t.update(micro_batch=4, batch_size=4)
    args = training_args(tmp_path, t, 0, 1, 1, "reference", 1)
    assert args.activation_checkpointing is True
    model, _, _ = load_classifier(str(tiny_assets / "models/tiny-gpt2"), None, "float32", None, "last", False,
                                  "zero", False)
    assert not model.backbone.is_gradient_checkpointing
    rows = [{"input_ids": [5, 6, 7], "soft_label": [1.0, 0.0]}] * 4
    W2STrainer(model=model, args=args, train_dataset=Rows(rows), data_collator=Collator(1), loss_name="xent",
               loss_params={}).train()
    assert model.backbone.is_gradient_checkpointing


def test_params_feed_the_plan_estimate():
    from harness.plan import build_plan, estimate

    m = manifest(["gpt2", "gpt2-xl"])
    est = {s.model: estimate(s)["params"] for s in build_plan(m)}
    assert est == {"gpt2": MODELS["gpt2"].params, "gpt2-xl": MODELS["gpt2-xl"].params}


def test_trust_remote_code_default_and_override():
    m = manifest(["gpt2", "Qwen/Qwen-1_8B", {"id": "Qwen/Qwen-7B", "trust_remote_code": False}])
    assert [m.trust_remote_code(mc) for mc in m.models] == [False, True, False]


# -- the batch-size lint: "Learning rates were tuned on batch size 32" (train_simple.py asserts it) ----
def test_default_lr_needs_batch_32():
    warn = [w for w in lint(manifest(["gpt2", "gpt2-large"], train={"batch_size": 16})) if "batch_size 32" in w]
    assert len(warn) == 2 and "gpt2-large: lr is the default (1e-05) but batch_size is 16" in warn[1]
    assert not [w for w in lint(manifest(["gpt2", "gpt2-large"])) if "batch" in w]
    explicit = manifest(["gpt2", {"id": "gpt2-large", "lr": 1e-5}], train={"batch_size": 16})
    assert [w.split(":")[0] for w in lint(explicit) if "batch_size 32" in w] == ["gpt2"]
    assert not [w for w in lint(manifest(["gpt2", "gpt2-large"], train={"batch_size": 16, "lr": 3e-5}))
                if "batch" in w]


# -- pairs: the reference sweep's self-pairs -------------------------------------------------------
def test_pairs_with_self_adds_the_self_pairs_only():
    from harness.plan import build_plan

    plain, strict, with_self = (manifest(["gpt2", "gpt2-medium", "gpt2-large"], **kw)
                                for kw in ({}, {"pairs": "strictly_stronger"}, {"pairs": "with_self"}))
    assert plain.pairs_list() == strict.pairs_list() == [("gpt2", "gpt2-medium"), ("gpt2", "gpt2-large"),
                                                         ("gpt2-medium", "gpt2-large")]
    assert with_self.pairs_list() == [("gpt2", "gpt2"), ("gpt2", "gpt2-medium"), ("gpt2", "gpt2-large"),
                                      ("gpt2-medium", "gpt2-medium"), ("gpt2-medium", "gpt2-large"),
                                      ("gpt2-large", "gpt2-large")]
    base = {s.key for s in build_plan(plain)}
    extra = [s for s in build_plan(with_self) if s.key not in base]
    assert base < {s.key for s in build_plan(with_self)}     # the same stages (same keys), plus:
    # gpt2 now also needs a ceiling and gpt2-large weak labels; plus the three self-transfers
    assert sorted((s.kind, s.weak, s.model, s.half) for s in extra) == [
        ("gt", None, "gpt2", "train2"), ("gt", None, "gpt2-large", "train1"), ("transfer", "gpt2", "gpt2", "train2"),
        ("transfer", "gpt2-large", "gpt2-large", "train2"), ("transfer", "gpt2-medium", "gpt2-medium", "train2")]


# -- Qwen-72B's Adafactor: the reference's (relative step, lr ignored) -----------------------------
def _train_head(tmp_path, optimizer: str, lr: float) -> torch.Tensor:
    from harness.features import FeatureCollator, HeadOnly
    from harness.train import Rows, W2STrainer, training_args

    torch.manual_seed(0)
    feats = torch.randn(32, 8)
    rows = [{"features": f, "soft_label": [1.0, 0.0] if f[0] > 0 else [0.0, 1.0]} for f in feats]
    t = dict(batch_size=8, micro_batch=8, eval_batch=8, lr=lr, lr_schedule="cosine_anneal", optimizer=optimizer,
             dtype="float32", gradient_checkpointing=False)
    head = HeadOnly(torch.nn.Linear(8, 2, bias=False))
    torch.nn.init.normal_(head.score.weight, 0, 0.02)
    trainer = W2STrainer(model=head, args=training_args(tmp_path / f"{optimizer}{lr}", t, 0, 4, 1, "reference", 1),
                         train_dataset=Rows(rows), data_collator=FeatureCollator(), loss_name="xent", loss_params={})
    trainer.train()
    if optimizer == "adafactor":
        from transformers.optimization import Adafactor

        inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)     # accelerate's wrapper
        group = inner.param_groups[0]
        assert isinstance(inner, Adafactor) and group["relative_step"] and group["scale_parameter"]
        assert not group["warmup_init"]
    return head.score.weight.detach().clone()


def test_adafactor_is_the_references_lr_is_ignored(tmp_path):
    a, b = _train_head(tmp_path, "adafactor", 1e-5), _train_head(tmp_path, "adafactor", 1.0)
    assert torch.equal(a, b) and not torch.equal(a, torch.zeros_like(a))
    assert not torch.equal(_train_head(tmp_path, "adam", 1e-5), _train_head(tmp_path, "adam", 1e-2))
    warn = lint(manifest(["Qwen/Qwen-14B", "Qwen/Qwen-72B"]))
    assert any("Qwen-72B: adafactor uses relative step sizes" in w for w in warn)


def test_adafactor_with_zero_offload_is_refused(tmp_path):
    from harness.train import training_args

    t = dict(batch_size=8, micro_batch=8, eval_batch=8, lr=1e-5, lr_schedule="cosine_anneal",
             optimizer="adafactor", dtype="float32", gradient_checkpointing=True)
    with pytest.raises(ValueError, match="ZeRO-Offload.*replace Adafactor"):
        training_args(tmp_path, t, 0, 1, 1, "reference", 1, deepspeed={"optimizer": {"type": "AdamW"}})
