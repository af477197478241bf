"""Sweep expansion: a manifest becomes a list of stages with content keys, in dependency order.

- gt(model, seed, half=train1): ground truth on the weak half; predicts the student half = weak labels.
  Needed for every model that is weak in some pair, and as the ceiling when ceiling_half=weak_half.
- gt(model, seed, half=train2): the ceiling on the student half (ceiling_half=student_half).
- transfer(weak -> strong, loss, seed): the student trains on gt(weak, seed, train1)'s weak labels.
- chain(path -> model, loss, seed): a bootstrapping step (harness.chains); its teacher is the previous step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .data import fingerprint
from .data.declared import identity as declared_identity, spec_of
from .losses import resolve_params
from .manifest import Manifest
from .spec import StageSpec, stage_spec
from .code_identity import stage_code
from .chains import chain_stages, direct_pairs
from .store import content_key


@dataclass
class Stage:
    key: str
    kind: str                      # gt | transfer
    model: str                     # label of the trained model
    seed: int
    half: str                      # train1 | train2: the half it trains on
    loss: dict
    identity: dict
    weak: str | None = None
    teacher: str | None = None     # key of the stage whose weak labels it trains on
    roles: list[str] = field(default_factory=list)   # weak / ceiling: how results use a gt stage
    root: str | None = None        # chain steps (harness.chains): the chain's first teacher; shards keep it whole
    spec: Any = None               # StageSpec (harness.spec): the resolved description training reads

    @property
    def slug(self) -> str:
        if self.kind in ("transfer", "chain"):
            return f"{self.kind} {self.weak}->{self.model} {self.loss['name']} s{self.seed}"
        return f"gt {self.model} {self.half} s{self.seed}"


def data_identity(m: Manifest) -> dict:
    d = m.dataset
    spec = spec_of(d)     # the registry entry, or the manifest's own declaration
    splits = [d.splits.train or spec.train_split]
    if d.splits.test != "cut":
        splits.append(d.splits.test or spec.test_split)
    fid = m.fidelity.resolved()
    ident = {"name": d.name, "revision": d.revision or spec.revision, "bytes": fingerprint(spec, splits, d.source, d.revision),
            "n_docs": d.n_docs, "n_test_docs": d.n_test_docs, "max_ctx": d.max_ctx,
            "splits": d.splits.model_dump(), "cut_seed": d.cut_seed if d.splits.test == "cut" else None,
            "sampling": d.sampling or fid["sampling"], "overlength": fid["overlength"], "dedup": fid["dedup"]}
    if d.declare is not None:    # a declaration's template, label, ...: editing it invalidates the cache
        ident["declare"] = declared_identity(d)
    return ident


def stage_specs(m: Manifest, data: dict | None = None) -> dict[str, StageSpec]:
    """Every model's resolved description (harness.spec), by label: the manifest is resolved here, once."""
    data = data if data is not None else data_identity(m)
    return {mc.label: stage_spec(m, mc, data) for mc in m.models}


def build_plan(m: Manifest) -> list[Stage]:
    data = data_identity(m)
    warmup = m.fidelity.resolved()["logconf_warmup"]
    gt_loss = {"name": m.gt_loss.name, "params": resolve_params(m.gt_loss.name, m.gt_loss.params, warmup)}
    ceiling_half = "train1" if m.fidelity.resolved()["ceiling_half"] == "weak_half" else "train2"
    pairs = m.pairs_list()
    pairs += direct_pairs(m, pairs)        # bootstrapping chains are compared with these (harness.chains)
    # `pairs: []` = ground truth only (e.g. `w2s reference train-simple`): every model trains on the
    # weak half and labels the student half, as the reference's train_simple.py does.
    weak_models = {w for w, _ in pairs} | ({mc.label for mc in m.models} if m.pairs == [] else set())
    strong_models = {s for _, s in pairs}
    specs = stage_specs(m, data)
    # identity fields only, as harness.spec declares them: operational settings never move a key
    models = {label: spec.model_identity() for label, spec in specs.items()}
    stages: dict[str, Stage] = {}

    def gt(label: str, seed: int, half: str, role: str) -> Stage:
        ident = {"kind": "gt", "half": half, "model": models[label], "data": data, "seed": seed,
                 "loss": gt_loss, "harness": __version__, "code": stage_code(m.dataset.name, gt_loss["name"])}
        key = content_key(ident)
        st = stages.setdefault(key, Stage(key, "gt", label, seed, half, gt_loss, ident))
        if role not in st.roles:
            st.roles.append(role)
        return st

    order: list[Stage] = []
    for seed in m.seeds:
        for mc in m.models:
            if mc.label in weak_models:
                gt(mc.label, seed, "train1", "weak")
            if mc.label in strong_models:
                gt(mc.label, seed, ceiling_half, "ceiling")
    order = list(stages.values())
    for seed in m.seeds:
        for weak, strong in pairs:
            teacher = gt(weak, seed, "train1", "weak")
            for lc in m.losses:
                loss = {"name": lc.name, "params": resolve_params(lc.name, lc.params, warmup)}
                ident = {"kind": "transfer", "model": models[strong], "data": data, "seed": seed,
                         "loss": loss, "teacher": teacher.key, "harness": __version__,
                         "code": stage_code(m.dataset.name, lc.name)}   # docs/caching.md
                order.append(Stage(content_key(ident), "transfer", strong, seed, "train2", loss, ident,
                                   weak=weak, teacher=teacher.key))
    order += chain_stages(m, models, data, gt, warmup, Stage)
    for st in order:
        st.spec = specs[st.model]
    return order


def estimate(stage: Stage) -> dict:
    """Rough cost: 6·N·tokens for training and 2·N·tokens for inference, tokens ~ max_ctx/4 per row
    (from the stage's description: the model table's parameter count, epochs, data sizes)."""
    spec = stage.spec
    params = spec.model.params or None
    half = (spec.data.record["n_docs"] + 1) // 2
    epochs = spec.train.epochs
    tokens = min(spec.data.max_ctx, 512) / 4
    labels = (stage.half == "train1" and stage.kind == "gt") or stage.kind == "chain"   # it also labels a half
    rows_train, rows_infer = half * epochs, spec.data.record["n_test_docs"] + (half if labels else 0)
    if params is None:
        return {"params": None, "pflop": None}
    flop = 6 * params * rows_train * tokens + 2 * params * rows_infer * tokens
    return {"params": params, "pflop": flop / 1e15}
