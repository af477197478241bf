"""A vision manifest as stages of the shared kind (harness.plan.Stage), so the stage cache, the tracker,
harness.results and `w2s report` treat them exactly like the language stages:

- gt(weak, seed, train1, role weak): the supervisor. Pretrained (AlexNet) it only predicts; trainable
  (small_cnn) it first learns on the weak-train part. It labels probe-train (the weak labels) and test.
- gt(strong, seed, train2, role ceiling): a linear probe on the strong features with ground truth.
- transfer(weak -> strong, xent, seed): the same probe on the supervisor's soft labels.
"""
from __future__ import annotations

from harness import __version__
from harness.plan import Stage
from harness.spec import thaw
from harness.store import content_key

from . import data
from .manifest import VisionManifest
from .spec import ImagesSpec, images_spec, stage_spec

XENT = {"name": "xent", "params": {}}     # soft-target cross-entropy, the reference's probe loss


def data_identity(m: VisionManifest) -> dict:
    """What the images are. Content for the small sets; for ImageNet (50k files) the archives' names and
    sizes, so `w2s plan` stays instant: the feature cache keys on the full content fingerprint anyway."""
    v = m.vision
    ident = {"dataset": v.dataset, "n_images": v.split.n_images, "subset_seed": v.split.subset_seed,
             "n_classes": v.n_classes}
    if data.check(v.dataset, v.data_dir):
        ident["content"] = "unavailable"          # cannot run here; preflight says why
    elif v.dataset == "imagenet_val":
        root = data.data_root(v.dataset, v.data_dir)
        ident["content"] = {f.name: f.stat().st_size for f in sorted(root.glob("ILSVRC2012_*"))}
    else:
        ident["content"] = image_set(images_spec(m, {})).fingerprint
    return ident


_SETS: dict[tuple, data.ImageSet] = {}


def image_set(images: ImagesSpec) -> data.ImageSet:
    """The stage's images (after the fixed n_images draw), opened once per process."""
    import numpy as np

    key = (images.dataset, str(images.data_dir), images.n_classes, images.n_images, images.subset_seed)
    if key not in _SETS:
        n_syn = images.n_images or 600
        ds = data.open_set(images.dataset, images.data_dir, images.n_classes, n_syn)
        if images.n_images and images.n_images < len(ds.ids):
            idx = np.sort(np.random.default_rng(images.subset_seed).choice(len(ds.ids), images.n_images, replace=False))
            ds = ds.subset(idx)
        _SETS[key] = ds
    return _SETS[key]


def build_plan(m: VisionManifest, code: dict) -> list[Stage]:
    """The vision stages, each with its resolved description (vision.spec) and the identity built from it.
    `code` is vision.protocol.stage_code() (the code that computes each role, part of each identity):
    passed in, because the protocol imports this module."""
    v = m.vision
    images = images_spec(m, data_identity(m))
    base = {"vision": True, "data": thaw(images.record), "split": images.split(), "harness": __version__}
    weak_stages, ceilings, transfers = [], [], []
    sup = stage_spec(m, v.weak, images, strong=False)
    for seed in m.seeds:
        ident = {**base, "kind": "gt", "half": "train1", "model": sup.plain_model(), "seed": seed, "code": code["weak"]}
        w = Stage(content_key(ident), "gt", sup.label, seed, "train1", XENT, ident, roles=["weak"], spec=sup)
        weak_stages.append(w)
        for s in v.strong:
            spec = stage_spec(m, s, images, strong=True)
            ident = {**base, "kind": "gt", "half": "train2", "model": spec.plain_model(), "probe": spec.probe.identity(),
                     "seed": seed, "code": code["ceiling"]}
            ceilings.append(Stage(content_key(ident), "gt", spec.label, seed, "train2", XENT, ident, roles=["ceiling"],
                                  spec=spec))
            ident = {**base, "kind": "transfer", "model": spec.plain_model(), "probe": spec.probe.identity(),
                     "seed": seed, "teacher": w.key, "loss": XENT, "code": code["transfer"]}
            transfers.append(Stage(content_key(ident), "transfer", spec.label, seed, "train2", XENT, ident,
                                   weak=v.weak.label, teacher=w.key, spec=spec))
    return weak_stages + ceilings + transfers


def preflight(m: VisionManifest) -> list[str]:
    """What this machine lacks, before any compute: data, weights, torchvision, a GPU for ImageNet."""
    from . import models

    v = m.vision
    out = [p for p in [data.check(v.dataset, v.data_dir)] if p]
    for mc in m.models:
        p = models.missing(mc.resolved())
        if p and p not in out:
            out.append(p)
    if v.dataset == "imagenet_val":
        import torch

        if not torch.cuda.is_available():
            out.append("imagenet_val is the paper tier: 50,000 images through DINO need a GPU, and none is visible "
                       "(run experiments/offline/cifar10.yaml on CPU instead)")
    return out


def estimate_images(m: VisionManifest) -> int:
    """Images passed through frozen models (for `w2s plan`): each model once over the set, then cached."""
    n = m.vision.split.n_images or {"imagenet_val": 50000, "cifar10": 10000}.get(m.vision.dataset, 600)
    return n * len(m.models)
