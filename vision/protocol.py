"""Weak-to-strong on images (REFERENCE.md §9), as stages that are plain functions.

1. The supervisor labels the images: softmax over its classes. Its accuracy is reported on the test part
   (the PGR denominator) and over every image it labels (Q26: the reference's AlexNet 56.6 % is over all
   50k images of ImageNet val).
2. Strong features: frozen, computed once per model and image set (vision.features, Q27).
3. Ceiling: a linear probe on the strong features, trained on ground truth of the probe-train part.
4. Weak-to-strong: the same probe trained on the supervisor's soft labels of that part.
5. PGR = (w2s - weak) / (ceiling - weak) on the same test images (harness.results).

The probe is the reference's: Linear(d, C) with bias, soft-target cross-entropy (the shared loss
registry's `xent`, harness.losses), Adam (wd 0), batch 100,
reshuffled every epoch, cosine LR stepped per batch; the last epoch is reported. Unlike the reference,
torch (init and order) is seeded (Q16/Q27). Stages go through the same StageStore and tracker as the
language protocol, so caching, resume, MLflow and `w2s report` behave identically.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

from harness.envinfo import versions
from harness.losses import LOSSES
from harness.metrics import accuracy
from harness.plan import Stage
from harness.runner import run_stages
from harness.store import StageStore

from . import data, features, models
from .manifest import VisionManifest
from .plan import XENT, build_plan, image_set
from .spec import ImagesSpec


def run(m: VisionManifest, tracker, *, force: bool = False, only: tuple[str, ...] = (), echo=print) -> list[Stage]:
    """The shared stage loop (harness.runner) over the vision stages. The manifest is resolved here, once,
    into each stage's description (vision.spec); the stage functions read only that."""
    plan = build_plan(m, stage_code())
    if plan[0].spec.threads:
        torch.set_num_threads(plan[0].spec.threads)
    store = StageStore(plan[0].spec.output_dir)

    def execute(stage: Stage, sink) -> dict:
        fn = transfer if stage.kind == "transfer" else supervise if "weak" in stage.roles else ceiling
        return fn(stage, store, sink, echo)

    run_stages(plan, store, tracker, execute, force=force, only=only, echo=echo)
    return plan


def parts(images: ImagesSpec, seed: int) -> dict[str, np.ndarray]:
    return data.cut(len(image_set(images).ids), seed, images.n_weak_train, images.n_train, images.n_test)


def supervise(stage: Stage, store: StageStore, sink, echo) -> dict:
    """The supervisor's soft labels on probe-train (the weak labels) and test."""
    spec = stage.spec
    ds, p, r = image_set(spec.images), parts(spec.images, stage.seed), spec.plain_model()
    store.begin(stage.key, stage.identity)
    out = {"n_train": len(p["weak_train"]), "versions": versions()}
    started = time.time()
    if r["kind"] == "pretrained":          # ImageNet classifier on ImageNet: predict every image once (cached)
        logits, meta = features.outputs(spec.output_dir, r, ds, "logits", spec.feature_batch, echo)
        probs = softmax(logits)
        labelled = np.arange(len(ds.ids))
        out["weights_sha256"] = meta["weights_sha256"]
    else:                                  # trained here, on the weak-train part only
        model = models.load(r, ds.n_classes)
        x = data.tensor_of(ds.subset(p["weak_train"]), r["transform"], r["image_size"])
        y = torch.as_tensor(ds.labels[p["weak_train"]])
        models.train_small_cnn(model, x, y, r, stage.seed, sink)
        labelled = np.concatenate([p["train"], p["test"]])       # every image it did not train on
        with torch.inference_mode():
            xl = data.tensor_of(ds.subset(labelled), r["transform"], r["image_size"])
            lg = torch.cat([model.logits(xl[i:i + 512]) for i in range(0, len(xl), 512)]).numpy()
        probs = np.zeros((len(ds.ids), ds.n_classes), dtype=np.float32)
        probs[labelled] = softmax(lg)
        out["weak_train_acc"] = accuracy(model.logits(x).detach().numpy(), y.numpy())
    out["train_seconds"] = round(time.time() - started, 2)
    store.write_table(stage.key, "weak_labels", table(ds, p["train"], probs[p["train"]]))
    store.write_table(stage.key, "predictions_test", table(ds, p["test"], probs[p["test"]]))
    out.update(test_acc=accuracy(probs[p["test"]], ds.labels[p["test"]]), n_test=len(p["test"]),
               weak_label_acc=accuracy(probs[p["train"]], ds.labels[p["train"]]),      # Q10
               weak_acc_all=accuracy(probs[labelled], ds.labels[labelled]), n_all=len(labelled))   # Q26
    return out


def ceiling(stage: Stage, store: StageStore, sink, echo) -> dict:
    ds, p = image_set(stage.spec.images), parts(stage.spec.images, stage.seed)
    feats, meta = strong_features(stage, echo)
    store.begin(stage.key, stage.identity)
    targets = np.eye(ds.n_classes, dtype=np.float32)[ds.labels[p["train"]]]
    return fit(stage, store, sink, feats, targets, p, meta)


def transfer(stage: Stage, store: StageStore, sink, echo) -> dict:
    """The probe on weak soft labels. Ground truth is never read from the weak-label table (Q25)."""
    ds, p = image_set(stage.spec.images), parts(stage.spec.images, stage.seed)
    weak = store.read_table(stage.teacher, "weak_labels", columns=["id", "text_hash", "soft_label"])
    ids, hashes = [ds.ids[i] for i in p["train"]], [ds.hashes[i] for i in p["train"]]
    if list(weak["id"]) != ids or list(weak["text_hash"]) != hashes:
        raise RuntimeError(f"{stage.slug}: the weak labels do not match this seed's probe-train images; the "
                           f"teacher stage was computed from other data (stale cache?)")
    feats, meta = strong_features(stage, echo)
    store.begin(stage.key, stage.identity)
    targets = np.stack(weak["soft_label"].to_numpy()).astype(np.float32)
    out = fit(stage, store, sink, feats, targets, p, meta)
    teacher = store.read_table(stage.teacher, "predictions_test", columns=["id", "hard_label"])
    student = store.read_table(stage.key, "predictions_test", columns=["id", "hard_label"])
    both = student.merge(teacher, on="id", suffixes=("", "_teacher"))
    out["agreement_test"] = float((both["hard_label"] == both["hard_label_teacher"]).mean())
    tm = store.metrics(stage.teacher)
    out.update(weak_acc=tm["test_acc"], weak_acc_all=tm["weak_acc_all"])
    return out


def strong_features(stage: Stage, echo):
    spec = stage.spec
    return features.outputs(spec.output_dir, spec.plain_model(), image_set(spec.images), "features",
                            spec.feature_batch, echo)


def fit(stage, store, sink, feats, targets, p, meta) -> dict:
    ds, cfg = image_set(stage.spec.images), stage.spec.probe
    started = time.time()
    probs, log = train_probe(feats[p["train"]], targets, feats[p["test"]], ds.labels[p["test"]], cfg,
                             cfg.schedule, stage.seed, sink, stage.loss)
    store.write_table(stage.key, "predictions_test", table(ds, p["test"], probs))
    return {"test_acc": accuracy(probs, ds.labels[p["test"]]), "n_train": len(p["train"]), "n_test": len(p["test"]),
            "steps": log["steps"], "train_seconds": round(time.time() - started, 2), "feature_dim": int(feats.shape[1]),
            "test_acc_by_epoch": log["test_acc"], "features_key": meta["key"], "feature_seconds": meta["seconds"],
            "weights_sha256": meta["weights_sha256"], "versions": versions()}


def train_probe(x, t, x_test, y_test, cfg, schedule: str, seed: int, sink=None, loss: dict = XENT):
    """Linear(d, C) on features; the stage's registry loss (harness.losses: `xent`, the reference's
    soft-target CE); Adam; cosine per step (or the pre-PR-#16 T_max = epochs, Q28: stepped per batch, the
    LR then oscillates with period 2*epochs steps). Returns test probs."""
    loss_fn, params = LOSSES[loss["name"]], loss.get("params") or {}
    dev = features.device()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, t = torch.as_tensor(x, device=dev), torch.as_tensor(t, device=dev)
    xt = torch.as_tensor(x_test, device=dev)
    head = nn.Linear(x.shape[1], t.shape[1]).to(dev)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_batches = math.ceil(len(x) / cfg.batch_size)        # DataLoader(drop_last=False), as the reference
    t_max = n_batches * cfg.epochs if schedule == "cosine_per_step" else cfg.epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max)
    accs = []
    for epoch in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=g).to(dev)
        total = 0.0
        for b in range(n_batches):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            value = loss_fn(head(x[idx]), t[idx], (epoch * n_batches + b) / (n_batches * cfg.epochs), **params)
            opt.zero_grad()
            value.backward()
            opt.step()
            sched.step()
            total += float(value.detach())
        with torch.no_grad():
            probs = torch.softmax(head(xt), -1).cpu().numpy()
        accs.append(round(accuracy(probs, y_test), 6))     # per epoch, as the reference prints
        if sink:
            sink({"loss": total / n_batches, "epoch": epoch + 1, "step": (epoch + 1) * n_batches,
                  "learning_rate": sched.get_last_lr()[0]})
    return probs, {"steps": n_batches * cfg.epochs, "test_acc": accs}


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def table(ds: data.ImageSet, idx: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """Predictions in the language protocol's columns, so the tracker's lineage code and `w2s report` read
    them unchanged: `text_hash` holds the image's content hash; ground truth only in analysis_gt_label."""
    return pd.DataFrame({"id": [ds.ids[i] for i in idx], "text_hash": [ds.hashes[i] for i in idx],
                         "soft_label": [p.tolist() for p in probs.astype(np.float32)],
                         "hard_label": probs.argmax(-1).astype(int), "analysis_gt_label": ds.labels[idx].astype(int)})


def weak_table(m: VisionManifest, plan: list[Stage], store: StageStore) -> pd.DataFrame:
    """Per supervisor stage: accuracy on the test part (the PGR denominator) and over all it labelled (Q26)."""
    rows = [{"weak": s.model, "seed": s.seed, "weak_acc_test": store.metrics(s.key)["test_acc"],
             "weak_acc_all": store.metrics(s.key).get("weak_acc_all"), "n_all": store.metrics(s.key).get("n_all"),
             "weak_label_acc": store.metrics(s.key).get("weak_label_acc")}
            for s in plan if "weak" in s.roles and store.is_done(s.key)]
    return pd.DataFrame(rows, columns=["weak", "seed", "weak_acc_test", "weak_acc_all", "n_all", "weak_label_acc"])


def stage_code() -> dict:
    """The code part of a vision stage's identity, per role (docs/caching.md): the function that computes
    it and everything of vision/ and harness/ it reaches (weak training, model loading, transforms, the
    probe and its loss). A change recomputes exactly the stages that run it (students via teacher keys)."""
    from harness.code_identity import CODE_VERSION, code_digest

    return {role: {"version": CODE_VERSION, "stage": code_digest(fn)}
            for role, fn in (("weak", supervise), ("ceiling", ceiling), ("transfer", transfer))}
