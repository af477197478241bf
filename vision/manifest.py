"""The vision manifest: a top-level `vision:` section selects this schema in harness.manifest.load, which
validates it with the same YAML line map and error formatting as a language manifest.

It answers what the shared machinery asks of every manifest (name, model labels, pairs, seeds, output,
tracking); what differs by kind (the dataset's name, the losses, a stage's operational settings) the
tracker and results ask the Kind (vision.kind.Vision): one protocol, one stage cache, one tracker.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from harness.manifest_base import ManifestError, Output, Problems, Strict, Tracking, _did_you_mean


DATASETS = ("imagenet_val", "cifar10", "synthetic")


class VisionModel(Strict):
    id: str = Field(description="vision model registry name (vision.models.REGISTRY)")
    name: str | None = Field(None, description="label in pairs and reports (default: the id)")
    weights: str | None = Field(None, description="pinned weights: torchvision enum name (AlexNet), file name (EfficientNet), checkpoint name (DINO)")
    sha256: str | None = Field(None, description="sha256 of the weights file; verified before use (default: the registry's)")
    hub_commit: str | None = Field(None, description="torch.hub repository commit (DINO), never a branch")
    image_size: int | None = Field(None, ge=8, description="input side in pixels for `resize` transforms (default: the registry's)")
    epochs: int | None = Field(None, ge=1, description="trained weak models (small_cnn): passes over the weak-train part")
    lr: float | None = Field(None, gt=0, description="trained weak models: Adam learning rate")
    width: int | None = Field(None, ge=1, description="small_cnn/tiny_cnn: channels of the first conv layer")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v):
        return {"id": v} if isinstance(v, str) else v      # `strong: [dino_resnet50]`

    @field_validator("id")
    @classmethod
    def _known(cls, v):
        from .models import REGISTRY   # torch: only when a vision manifest is checked

        if v not in REGISTRY:
            raise ValueError(f"unknown vision model {v!r}{_did_you_mean(v, REGISTRY)}; registered: {', '.join(REGISTRY)}")
        return v

    @property
    def label(self) -> str:
        return self.name or self.id

    def spec(self):
        from .models import REGISTRY

        return REGISTRY[self.id]

    def resolved(self) -> dict:
        """Registry defaults under the manifest's values: what identifies this model's outputs."""
        s = self.spec()
        out = {"id": self.id, "kind": s.kind, "weights": self.weights or s.weights, "sha256": self.sha256 or s.sha256,
               "hub_commit": self.hub_commit or s.hub_commit, "image_size": self.image_size or s.image_size,
               "transform": s.transform}
        if s.kind in ("trained", "random"):
            out.update(epochs=self.epochs or s.epochs, lr=self.lr or s.lr, width=self.width or s.width)
        return out


class Probe(Strict):
    """The linear probe of the reference (vision/run_weak_strong.py): Linear(d, C) with bias, soft-target
    cross-entropy, Adam, cosine schedule; the last epoch is reported."""
    epochs: int = Field(10, ge=1, description="reference: 20 for DINO ResNet-50, 5 for ViT-B/8")
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(100, ge=1, description="reference: 100")
    weight_decay: float = Field(0.0, ge=0)


class Split(Strict):
    n_images: int | None = Field(None, ge=3, description="use this many images of the dataset (a fixed draw, `subset_seed`); default all")
    subset_seed: int = Field(0, description="seed of the n_images draw (the same images for every run seed)")
    n_weak_train: int = Field(0, ge=0, description="images to train a trainable weak model on (0 for pretrained supervisors such as AlexNet)")
    n_train: int = Field(40000, ge=1, description="probe-train images (reference: 40000 of ImageNet val)")
    n_test: int | None = Field(None, ge=1, description="test images (default: all the rest)")


class VisionConfig(Strict):
    dataset: Literal[DATASETS] = Field(description="imagenet_val | cifar10 | synthetic")
    data_dir: str | None = Field(None, description="ImageNet: the folder with ILSVRC2012_img_val.tar + devkit (default $W2S_IMAGENET_DIR); cifar10: the shared data folder (default $W2S_DATA_DIR); relative to the manifest's folder, or to the working directory when typed with -o or built from ${VAR}")
    n_classes: int | None = Field(None, ge=2, description="synthetic only: number of classes (default 10)")
    split: Split = Field(default_factory=Split)
    weak: VisionModel = Field(description="the supervisor")
    strong: list[VisionModel] = Field(min_length=1, description="frozen feature extractors probed on weak labels and on ground truth")
    probe: Probe = Field(default_factory=Probe)
    feature_batch: int = Field(64, ge=1, description="inference batch; operational")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; operational (default: torch's)")


class VisionFidelity(Strict):
    schedule: Literal["cosine_per_step", "prefix_bug"] = Field(
        "cosine_per_step", description="Q28: cosine with T_max = steps (after reference PR #16), or T_max = epochs stepped per batch (the initial commit / paper column)")


class VisionManifest(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="experiment name (MLflow experiment, results folder)")
    vision: VisionConfig
    seeds: list[int] = Field([0], min_length=1, description="each seed: the data cut, weak training, probe init and order")
    fidelity: VisionFidelity = Field(default_factory=VisionFidelity)
    output: Output = Field(default_factory=Output)
    tracking: Tracking = Field(default_factory=Tracking)

    @model_validator(mode="after")
    def _check(self):
        from .models import REGISTRY

        v, problems = self.vision, []
        if len(set(self.seeds)) != len(self.seeds):
            problems.append((("seeds",), "duplicate seeds; list each seed once"))
        labels = [m.label for m in self.models]
        for i, lab in enumerate(labels):
            if lab in labels[:i]:
                problems.append((("vision", "strong", i - 1), f"duplicate model name {lab!r}; give each a distinct `name:`"))
        if v.weak.spec().role == "strong":
            problems.append((("vision", "weak", "id"), f"{v.weak.id} is a feature extractor; a supervisor must be a classifier "
                             f"({', '.join(k for k, s in REGISTRY.items() if s.role != 'strong')})"))
        for i, s in enumerate(v.strong):
            if s.spec().role == "weak":
                problems.append((("vision", "strong", i, "id"), f"{s.id} has no feature head; strong models: "
                                 f"{', '.join(k for k, x in REGISTRY.items() if x.role != 'weak')}"))
        trained = v.weak.spec().kind == "trained"
        if trained and v.split.n_weak_train < 1:
            problems.append((("vision", "split", "n_weak_train"), f"{v.weak.id} is trained here: give it a disjoint "
                             f"weak-train part (n_weak_train > 0)"))
        if not trained and v.split.n_weak_train:
            problems.append((("vision", "split", "n_weak_train"), f"{v.weak.id} is pretrained: n_weak_train must be 0"))
        if v.dataset == "imagenet_val" and v.weak.spec().n_classes not in (None, 1000):
            problems.append((("vision", "weak", "id"), "on ImageNet the supervisor must predict the 1000 ImageNet classes"))
        if v.dataset != "imagenet_val" and v.weak.spec().kind == "pretrained":
            problems.append((("vision", "weak", "id"), f"{v.weak.id} predicts ImageNet classes, not {v.dataset}'s; "
                             f"use a trained supervisor (small_cnn) here"))
        if v.n_classes is not None and v.dataset != "synthetic":
            problems.append((("vision", "n_classes"), "only the synthetic dataset takes n_classes"))
        sp = v.split
        if sp.n_images is not None and sp.n_weak_train + sp.n_train + (sp.n_test or 1) > sp.n_images:
            problems.append((("vision", "split"), f"n_weak_train + n_train + n_test = "
                             f"{sp.n_weak_train + sp.n_train + (sp.n_test or 1)} exceeds n_images={sp.n_images}"))
        if problems:
            raise Problems(problems)
        return self

    # -- what the shared machinery asks of every manifest (the rest it asks the Kind: vision.kind) ----
    @property
    def models(self) -> list[VisionModel]:
        return [self.vision.weak, *self.vision.strong]

    def pairs_list(self) -> list[tuple[str, str]]:
        return [(self.vision.weak.label, s.label) for s in self.vision.strong]

    def model(self, label: str) -> VisionModel:
        return next(m for m in self.models if m.label == label)

    def select_models(self, labels: list[str]) -> "VisionManifest":
        if self.vision.weak.label not in labels:
            raise ManifestError([f"--models: a vision run needs its supervisor {self.vision.weak.label!r}"])
        raw = self.model_dump(exclude_unset=True)
        raw["vision"]["strong"] = [s.model_dump(exclude_unset=True) for s in self.vision.strong if s.label in labels]
        return VisionManifest.model_validate(raw)

    def lint(self) -> list[str]:
        out, sp = [], self.vision.split
        if sp.n_test is not None and sp.n_test < 500:
            out.append(f"vision.split.n_test={sp.n_test} is small: accuracy has a standard error of about "
                       f"{0.5 / sp.n_test ** 0.5:.3f}")
        for m in self.models:
            r = m.resolved()
            # AlexNet's torchvision file name carries its sha256 prefix, which torch.hub checks
            if r["kind"] == "pretrained" and not r["sha256"] and m.id != "alexnet":
                out.append(f"{m.label}: no sha256 pinned for its weights; the file's checksum is recorded at run time")
        return out
