"""One resolved, immutable description per vision stage: what vision.protocol reads, never the manifest.

The vision counterpart of harness.spec, declared the same way (`ident(...)` / `op(...)` on each field,
with the manifest path the value comes from): the images (dataset, the n_images draw, the split sizes,
the content fingerprint), the model (its registry entry under the manifest's values), the probe (strong
stages only: a supervisor trains no probe, so the probe is not part of its identity) and where and how
the stage runs (feature batch, threads, output dir: operational). vision.plan builds one per stage and
the stage identity from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from harness.spec import _Spec, freeze, ident, op, thaw

# How the probe is built and seeded: part of a strong stage's identity (vision.protocol.train_probe)
PROBE_FORM = {"head": "linear+bias", "seeded": "torch+order"}


@dataclass(frozen=True)
class ImagesSpec(_Spec):
    dataset: str = ident("vision.dataset")
    n_classes: int | None = ident("vision.n_classes")
    n_images: int | None = ident("vision.split.n_images")
    subset_seed: int = ident("vision.split.subset_seed")
    n_weak_train: int = ident("vision.split.n_weak_train")
    n_train: int = ident("vision.split.n_train")
    n_test: int | None = ident("vision.split.n_test")
    record: Mapping = ident("vision.dataset", "vision.split")   # vision.plan.data_identity: what the images are
    data_dir: str | None = op("vision.data_dir")   # where they are (their content is in `record`)

    def split(self) -> dict:
        return {k: getattr(self, k) for k in ("n_images", "subset_seed", "n_weak_train", "n_train", "n_test")}


@dataclass(frozen=True)
class ProbeSpec(_Spec):
    epochs: int = ident("vision.probe.epochs")
    lr: float = ident("vision.probe.lr")
    batch_size: int = ident("vision.probe.batch_size")
    weight_decay: float = ident("vision.probe.weight_decay")
    schedule: str = ident("fidelity.schedule")

    def identity(self) -> dict:
        return {**super().identity(), **PROBE_FORM}


@dataclass(frozen=True)
class VisionStageSpec(_Spec):
    model: Mapping = ident("vision.weak", "vision.strong[]")   # vision.manifest.VisionModel.resolved()
    images: ImagesSpec = ident("vision")
    probe: ProbeSpec | None = ident("vision.probe", omit_none=True)   # None: the supervisor
    label: str = op("vision.weak.name", "vision.strong[].name")
    feature_batch: int = op("vision.feature_batch")
    threads: int | None = op("vision.threads")
    output_dir: str = op("output.dir")

    def operational(self) -> dict:
        """MLflow tags (never params)."""
        out = {"eval_batch": self.feature_batch, "threads": self.threads, "output_dir": self.output_dir,
               "data_dir": self.images.data_dir}
        if self.probe is not None:
            out["micro_batch"] = self.probe.batch_size     # the probe trains in whole batches
        return out

    def plain_model(self) -> dict:
        return thaw(self.model)


def images_spec(m, record: Mapping) -> ImagesSpec:
    v = m.vision
    return ImagesSpec(dataset=v.dataset, n_classes=v.n_classes, record=freeze(record),
                      data_dir=str(v.data_dir) if v.data_dir else None, **v.split.model_dump())


def stage_spec(m, model, images: ImagesSpec, strong: bool) -> VisionStageSpec:
    """Resolve the vision manifest `m` once for `model` (a VisionModel); `strong`: a probed feature model."""
    v = m.vision
    probe = ProbeSpec(**v.probe.model_dump(), schedule=m.fidelity.schedule) if strong else None
    return VisionStageSpec(model=freeze(model.resolved()), images=images, probe=probe, label=model.label,
                           feature_batch=v.feature_batch, threads=v.threads, output_dir=str(m.output.dir))
