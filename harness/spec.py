"""One resolved, immutable description per stage: what training, launch and the worker read.

The manifest is resolved once, when the plan is built (harness.plan.build_plan): defaults <- model
table <- `train:` <- per-model overrides, the fidelity profile, the resources. The result is a
`StageSpec` of frozen dataclasses attached to every stage (`stage.spec`); nothing downstream goes back
to the raw manifest, so a setting cannot be resolved two ways in two places.

Identity vs operational is declared here, once, on each field (`ident(...)` / `op(...)`, with the
manifest path the value comes from). From that one declaration come the stage identity (cache keys
and MLflow params: `StageSpec.model_identity`), the MLflow operational tags (`StageSpec.operational`)
and the manifest reference's list of operational keys (harness.schema_docs, docs/manifest.md).

This module imports nothing of the harness but the model table: the manifest validator, `harness.zero`
and the planner all import it, so anything above them here would be an import cycle.
"""
from __future__ import annotations

import copyreg
import dataclasses
import types
from dataclasses import dataclass, field
from typing import Any, Mapping

from .model_table import MODELS, is_local

# Manifest sections that no stage spec carries (training never reads them), declared operational here
# so that the declaration stays in one place.
OPERATIONAL_ELSEWHERE = {"tracking": "where runs are recorded",
                         "output": "where results go and how they are shown (dir and log_every are below)"}


def ident(*keys: str, omit_none: bool = False, **kw):
    """An identity field: it changes results, so it is part of the stage key and MLflow params. `keys`:
    the manifest keys it is resolved from; `omit_none`: left out of the identity while unset."""
    return field(metadata={"operational": False, "manifest": keys, "omit_none": omit_none}, **kw)


def op(*keys: str, **kw):
    """An operational field: how or where a stage runs, never what it computes (float noise at most)."""
    return field(metadata={"operational": True, "manifest": keys}, **kw)


def freeze(v):
    """Deep-immutable copy: mappings become read-only MappingProxyType, lists tuples."""
    if isinstance(v, Mapping):
        return types.MappingProxyType({k: freeze(x) for k, x in v.items()})
    if isinstance(v, (list, tuple)):
        return tuple(freeze(x) for x in v)
    return v


def thaw(v):
    """Plain dicts and lists again (for JSON identities, HF and DeepSpeed, which mutate their configs)."""
    if isinstance(v, Mapping):
        return {k: thaw(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return [thaw(x) for x in v]
    return v


def _proxy(d: dict) -> types.MappingProxyType:
    return types.MappingProxyType(d)


# Stages are pickled (Ray tasks, spawn); pickle has no reducer for a read-only mapping of its own (and
# cannot name its type: a module-level function rebuilds it).
copyreg.pickle(types.MappingProxyType, lambda p: (_proxy, (dict(p),)))


class _Spec:
    def fields(self, operational: bool) -> dict:
        return {f.name: thaw(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.metadata.get("operational") is operational
                and not (f.metadata.get("omit_none") and getattr(self, f.name) is None)}

    def identity(self) -> dict:
        return self.fields(False)

    def as_dict(self) -> dict:
        """Every field, plain (for code that takes the resolved values as a dict, e.g. training_args)."""
        return {f.name: thaw(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class ModelSpec(_Spec):
    id: str = ident("models[].id")   # hub id or local directory; a model-table name resolves to its hub id
    revision: str | None = ident("models[].revision")   # default: the model table's pin
    pooling: str | None = ident("models[].pooling")   # None: the family's default
    decoder_pooling: str = ident("fidelity.pooling")
    precision: str = ident("fidelity.precision")
    trust_remote_code: bool = ident("models[].trust_remote_code")
    local_digest: str | None = ident("models[].id", omit_none=True, default=None)   # a local model: its bytes
    params: float | None = op(default=None)   # derived: the model table's parameter count; sizes resources only


@dataclass(frozen=True)
class TrainSpec(_Spec):
    lr: float = ident("train.lr")
    batch_size: int = ident("train.batch_size")
    epochs: float = ident("train.epochs")
    lr_schedule: str = ident("train.lr_schedule")
    optimizer: str = ident("train.optimizer")
    dtype: str = ident("train.dtype")
    linear_probe: bool = ident("train.linear_probe")
    head_init: str = ident("train.head_init")
    dropout: bool = ident("train.dropout")
    gradient_checkpointing: bool = ident("train.gradient_checkpointing")
    micro_batch: int = op("train.micro_batch")
    eval_batch: int = op("train.eval_batch")
    lora: Mapping | None = ident("train.lora", omit_none=True, default=None)


@dataclass(frozen=True)
class DataSpec(_Spec):
    """What training reads of the data; `record` is the whole data identity (harness.plan.data_identity:
    registry pins, file fingerprints, sizes, sampling, dedup), all of it identity."""
    name: str = ident("dataset.name")
    max_ctx: int = ident("dataset.max_ctx")
    overlength: str = ident("fidelity.overlength")
    record: Mapping = ident("dataset", "fidelity.sampling", "fidelity.overlength", "fidelity.dedup")

    def identity(self) -> dict:
        return thaw(self.record)


@dataclass(frozen=True)
class ResourceSpec(_Spec):
    """Resolved `resources:` (model over top level over defaults). ZeRO's `auto` is decided at launch
    (harness.zero.resolve): it needs the GPU the stage lands on, which planning does not know."""
    launcher: str = op("resources.launcher")
    gpus: int = op("resources.gpus")
    nodes: int = op("resources.nodes")
    hostfile: str | None = op("resources.hostfile")
    zero_stage: Any = op("resources.zero_stage")
    offload_optimizer: str | None = op("resources.offload_optimizer")
    offload_params: str | None = op("resources.offload_params")
    gpu_memory_gb: float | None = op("resources.gpu_memory_gb")
    deepspeed: Mapping | None = op("resources.deepspeed")

    @property
    def world(self) -> int:
        return self.gpus * self.nodes


@dataclass(frozen=True)
class StageSpec(_Spec):
    model: ModelSpec = ident("models[]")
    train: TrainSpec = ident("train", "models[]")   # per-model values override `train:`
    data: DataSpec = ident("dataset")
    label: str = op("models[].name")
    resources: ResourceSpec = op("resources", "models[].resources")
    output_dir: str = op("output.dir")
    log_every: int = op("output.log_every")

    def model_identity(self) -> dict:
        """The stage identity's `model` entry: the model and its resolved training, identity fields only."""
        return {**self.model.identity(), **self.train.identity()}

    def operational(self) -> dict:
        """Operational values, flat (MLflow tags, never params)."""
        return {**self.train.fields(True), "log_every": self.log_every, "output_dir": self.output_dir,
                **{f"resources.{k}": v for k, v in self.resources.fields(True).items()}}


def _paths(cls, operational: bool) -> set[str]:
    out = set()
    for f in dataclasses.fields(cls):
        sub = f.type if isinstance(f.type, type) else globals().get(str(f.type))
        if f.metadata.get("operational") is operational:
            out.update(f.metadata["manifest"])
        elif sub is not None and dataclasses.is_dataclass(sub):
            out |= _paths(sub, operational)
    return out


def operational_paths() -> set[str]:
    """Manifest keys declared operational (`train.x` also stands for `models[].x`)."""
    return _paths(StageSpec, True) | set(OPERATIONAL_ELSEWHERE)


def is_operational(path: str) -> bool:
    """Whether a manifest key (`train.micro_batch`, `resources.gpus`, `models[].name`) is operational."""
    ops = operational_paths()
    parts = path.split(".")
    return any(".".join(parts[:i]) in ops for i in range(1, len(parts) + 1))


def local_model_digest(path: str) -> str:
    """A local model is identified by its bytes, not its path."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    for f in sorted(Path(path).expanduser().rglob("*")):
        if f.is_file():
            h.update(f.relative_to(Path(path).expanduser()).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def stage_spec(m, mc, data: Mapping) -> StageSpec:
    """Resolve the language manifest `m` once for model `mc`; `data` is harness.plan.data_identity(m)."""
    hub_id, revision = m.hub_id(mc)
    t = m.resolved_train(mc)
    fid = m.fidelity.resolved()
    entry = MODELS.get(mc.id)
    model = ModelSpec(id=hub_id, revision=revision, pooling=mc.pooling, decoder_pooling=fid["pooling"],
                      precision=fid["precision"], trust_remote_code=m.trust_remote_code(mc),
                      local_digest=local_model_digest(hub_id) if is_local(hub_id) else None,
                      params=entry.params if entry else None)
    names = {f.name for f in dataclasses.fields(TrainSpec)}
    unknown = set(t) - names
    if unknown:     # a new train field must be declared here (identity or operational) before it is used
        raise TypeError(f"harness.spec.TrainSpec does not declare {sorted(unknown)}")
    train = TrainSpec(**{k: freeze(v) for k, v in t.items()})
    res = m.resolved_resources(mc)
    return StageSpec(model=model, train=train,
                     data=DataSpec(name=data["name"], max_ctx=data["max_ctx"], overlength=data["overlength"],
                                   record=freeze(data)),
                     label=mc.label, resources=ResourceSpec(**{k: freeze(v) for k, v in res.items()}),
                     output_dir=str(m.output.dir), log_every=m.output.log_every)
