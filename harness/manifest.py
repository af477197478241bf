"""The experiment manifest: the pydantic schema and its resolution (defaults <- model table <- train:
<- per-model overrides), its lint, and `load`, which picks the schema of the manifest's kind. Loading YAML
with line numbers, overrides and error messages that name the file, the line, the field and a fix live
in harness.manifest_io; what every kind's schema shares, in harness.manifest_base (re-exported here).

Which resolved values are identity (cache keys, MLflow params) and which operational is declared once,
on the stage description that this manifest resolves to (harness.spec).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .data import DATASETS
from .data.declared import Declaration, name_problems, resolve as resolve_declaration, spec_of
from .lora import LoraConfig, problems as lora_problems
from .losses import LOSS_DEFAULTS, LOSSES
# The shared base, re-exported: callers import the manifest's names from here.
from .manifest_base import ManifestError, Output, Problems, Strict, Tracking, _did_you_mean  # noqa: F401
from .model_table import MODELS, POOLINGS, is_local


class Splits(Strict):
    train: str | None = Field(None, description="source split to train from (default: the registry's train split)")
    test: str | None = Field(None, description="source split to test on, or `cut` to carve the test set out of the train split with `cut_seed`")


class DataConfig(Strict):
    name: str = Field(description="dataset registry name (harness.data.DATASETS), or the name of the dataset `declare` describes")
    declare: Declaration | None = Field(None, description="a dataset of your own, described in YAML (docs/byod.md): inline, or the path of a YAML file relative to the manifest's folder")
    source: str | None = Field(None, description="local data directory laid out as ../shared/data (default: $W2S_DATA_DIR, else the hub); relative to the manifest's folder, or to the working directory when typed with -o or built from ${VAR}")
    revision: str | None = Field(None, description="hub revision (default: the registry's pin)")
    n_docs: int = Field(20000, ge=2, description="training rows drawn before the 50/50 weak/student split (at least 2: one per half)")
    n_test_docs: int = Field(10000, ge=1, description="test rows")
    max_ctx: int = Field(1024, ge=8, description="examples with >= max_ctx tokens are dropped (or truncated, per fidelity.overlength)")
    splits: Splits = Field(default_factory=Splits)
    cut_seed: int = Field(0, description="seed of the test cut when splits.test is `cut` (the same test set for every run seed)")
    sampling: Literal["head", "random"] | None = Field(None, description="head = the first n rows (reference); random = seeded draw. Default from fidelity")

    @field_validator("declare", mode="before")
    @classmethod
    def _declaration_file(cls, v, info: ValidationInfo):
        return resolve_declaration(v, info.context)     # a file of its own; files relative to their YAML

    @model_validator(mode="after")
    def _known(self):
        problems = name_problems(self.name, self.declare, self.splits, DATASETS)
        if problems:
            raise Problems(problems)
        return self


class TrainFields(Strict):
    """Training settings; under `train:` they are defaults, under a model they override them."""
    lr: float | None = Field(None, gt=0, description="learning rate (default: the model table's, else 5e-5)")
    batch_size: int | None = Field(None, ge=1, description="optimizer batch (reference: 32); identity")
    micro_batch: int | None = Field(None, ge=1, description="per-device micro-batch; operational (must divide batch_size)")
    eval_batch: int | None = Field(None, ge=1, description="inference batch; operational")
    epochs: float | None = Field(None, gt=0, description="passes over the training half (reference: 2)")
    lr_schedule: Literal["cosine_anneal", "constant"] | None = None
    optimizer: Literal["adam", "adafactor"] | None = None
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(None, description="weight dtype")
    linear_probe: bool | None = Field(None, description="train the head only")
    head_init: Literal["zero", "normal"] | None = Field(None, description="zero = the reference")
    dropout: bool | None = Field(None, description="train with dropout (reference: off)")
    gradient_checkpointing: bool | None = None
    lora: LoraConfig | None = Field(None, description="LoRA adapters {r, alpha, dropout, target_modules} (harness.lora); identity. Per model it replaces the train: one")


TRAIN_DEFAULTS = dict(batch_size=32, micro_batch=8, epochs=2.0, lr_schedule="cosine_anneal", dtype="float32",
                      linear_probe=False, head_init="zero", dropout=False, gradient_checkpointing=False)


class Resources(Strict):
    """Where and how a stage trains; operational (never in cache keys): ZeRO partitions the same
    computation, so results change by float noise only. Precision is not here: it is the model's
    `dtype` + `fidelity.precision` (identity). Unset keys fall back to the top-level `resources:`."""
    launcher: Literal["none", "deepspeed", "torchrun"] | None = Field(None, description="none = train in the `w2s run` process; else each stage runs in a launched multi-process worker (default none)")
    gpus: int | None = Field(None, ge=1, description="processes (GPUs) per node (default 1)")
    nodes: int | None = Field(None, ge=1, description="nodes (default 1; more than one needs launcher deepspeed and a hostfile)")
    hostfile: str | None = Field(None, description="DeepSpeed hostfile for several nodes")
    zero_stage: Literal[0, 2, 3, "auto"] | None = Field(None, description="ZeRO stage; auto picks stage and offload from the parameter count and GPU memory (default auto)")
    offload_optimizer: Literal["none", "cpu"] | None = Field(None, description="optimizer states on the CPU (set by auto unless given)")
    offload_params: Literal["none", "cpu"] | None = Field(None, description="ZeRO-3 parameters on the CPU (set by auto unless given)")
    gpu_memory_gb: float | None = Field(None, gt=0, description="GPU memory for the auto policy (default: the visible GPU's)")
    deepspeed: dict[str, Any] | None = Field(None, description="extra DeepSpeed config keys merged over the generated config (allow-listed)")


RESOURCE_DEFAULTS = dict(launcher="none", gpus=1, nodes=1, hostfile=None, zero_stage="auto", offload_optimizer=None,
                         offload_params=None, gpu_memory_gb=None, deepspeed=None)


class ModelConfig(TrainFields):
    id: str = Field(description="model-table name, hub id, or local directory")
    name: str | None = Field(None, description="short label used in pairs and reports (default: the id's last part)")
    revision: str | None = Field(None, description="hub revision (default: the model table's pin)")
    pooling: Literal[POOLINGS] | None = Field(None, description="last | nonzero_count | mean | cls (default: per family and fidelity)")
    resources: Resources | None = Field(None, description="per-model overrides of the top-level `resources:` (operational)")
    trust_remote_code: bool | None = Field(None, description="run the model repo's own code (Qwen-1 needs it; default: the model table's)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v):
        return {"id": v} if isinstance(v, str) else v      # `models: [gpt2, gpt2-medium]`

    @field_validator("id")
    @classmethod
    def _known(cls, v):
        if v in MODELS or "/" in v or is_local(v):
            return v
        raise ValueError(f"unknown model {v!r}{_did_you_mean(v, MODELS)}: use a model-table name "
                         f"({', '.join(MODELS)}), a hub id 'org/name', or a local directory")

    @property
    def label(self) -> str:
        return self.name or self.id.rstrip("/").split("/")[-1]


class LossConfig(Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v):
        return {"name": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self):
        if self.name not in LOSSES:
            raise ValueError(f"unknown loss {self.name!r}{_did_you_mean(self.name, LOSSES)}; registered: {', '.join(LOSSES)}")
        for key in self.params:
            if key not in LOSS_DEFAULTS[self.name]:
                raise Problems([(("params", key), f"loss {self.name!r} has no parameter {key!r}"
                                 f"{_did_you_mean(key, LOSS_DEFAULTS[self.name])}; "
                                 f"its parameters: {', '.join(LOSS_DEFAULTS[self.name]) or 'none'}")])
        if self.name == "logconf" and self.params.get("warmup") not in (None, "linear", "reference"):
            raise ValueError("logconf warmup must be 'linear' or 'reference'")
        return self


PROFILES = {  # every numerics-affecting quirk at once (docs/quirks.md)
    "reference": dict(pooling="nonzero_count", logconf_warmup="reference", sampling="head",
                      overlength="drop", ceiling_half="weak_half", precision="reference", dedup="none"),
    "fixed": dict(pooling="attention_mask", logconf_warmup="linear", sampling="random",
                  overlength="drop", ceiling_half="student_half", precision="mixed", dedup="text"),
}


class Fidelity(Strict):
    profile: Literal["reference", "fixed"] = Field("fixed", description="sets every quirk below at once")
    pooling: Literal["nonzero_count", "attention_mask"] | None = Field(None, description="decoder pooling (Q1)")
    logconf_warmup: Literal["reference", "linear"] | None = Field(None, description="Q2")
    sampling: Literal["head", "random"] | None = Field(None, description="Q11")
    overlength: Literal["drop", "truncate"] | None = Field(None, description="Q12")
    ceiling_half: Literal["weak_half", "student_half"] | None = Field(None, description="Q14")
    precision: Literal["reference", "mixed"] | None = Field(None, description="Q9: pure low-precision weights + Adam, or fp32 master weights with autocast")
    dedup: Literal["none", "text"] | None = Field(None, description="text = each formatted text used once: repeats dropped from training, test texts seen in training dropped from test; none = the reference (overlap counted and logged)")

    def resolved(self) -> dict[str, str]:
        base = dict(PROFILES[self.profile])
        base.update({k: v for k, v in self.model_dump().items() if v is not None and k != "profile"})
        return base


class Manifest(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="experiment name (MLflow experiment, results folder)")
    dataset: DataConfig
    models: list[ModelConfig] = Field(min_length=1, description="the ladder, weakest first; an entry is a mapping, or just the model's id (`[gpt2, gpt2-medium]`)")
    train: TrainFields = Field(default_factory=TrainFields)
    pairs: Literal["all", "strictly_stronger", "with_self"] | list[tuple[str, str]] = Field("all", description="`all` = `strictly_stronger` (every weak<strong in ladder order); `with_self` adds the reference sweep's self-pairs (weak = strong, i <= j; their PGR is NaN under ceiling_half=weak_half); or [[weak, strong], ...] by model name")
    chains: list[list[str]] = Field(default_factory=list, description="bootstrapping (paper §4.3.1): [[weak, middle, ..., strong], ...] by model name, at least 3 each, weakest first; each model trains on the previous one's weak labels; compared with the direct first -> strong transfers (harness.chains, docs/research.md)")
    losses: list[LossConfig] = Field(default_factory=lambda: [LossConfig(name="xent")], min_length=1)
    gt_loss: LossConfig = Field(default_factory=lambda: LossConfig(name="xent"), description="loss of ground-truth stages (Q4: always xent unless set here)")
    seeds: list[int] = Field([0], min_length=1)
    fidelity: Fidelity = Field(default_factory=Fidelity)
    output: Output = Field(default_factory=Output)
    tracking: Tracking = Field(default_factory=Tracking)
    resources: Resources = Field(default_factory=Resources, description="launcher, GPUs, ZeRO (operational; see docs/performance.md)")

    # For the loader (harness.manifest_io): pydantic skips cross-field checks when any field fails, so
    # these keys are validated again with the failing others replaced by placeholders; then the sizes
    # that validate but cannot run are refused (manifest_guard.size_problems).
    CROSS_FIELD_KEYS: ClassVar[tuple] = ("models", "pairs", "train", "chains")
    PLACEHOLDERS: ClassVar[dict] = {"name": "placeholder", "dataset": {"name": "sst2"}}
    SIZE_CHECKED: ClassVar[bool] = True

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v):
        dupes = sorted({x for x in v if v.count(x) > 1})
        if dupes:
            raise Problems([((), f"duplicate seed(s) {dupes}; list each seed once")])
        return v

    @field_validator("losses")
    @classmethod
    def _unique_losses(cls, v):
        names = [l.name for l in v]
        problems = [((i,), f"loss {n!r} is listed twice; one entry per loss")
                    for i, n in enumerate(names) if n in names[:i]]
        if problems:
            raise Problems(problems)
        return v

    @field_validator("models")
    @classmethod
    def _unique_models(cls, v):
        labels = [m.label for m in v]
        problems = [((i,), f"duplicate model name {n!r} (also models.{labels.index(n)}); "
                                    f"give each a distinct `name:`")
                    for i, n in enumerate(labels) if n in labels[:i]]
        if problems:
            raise Problems(problems)
        return v

    @model_validator(mode="after")
    def _ladder(self):
        # Every cross-field problem is collected, each with its own location (see Problems).
        problems: list[tuple[tuple, str]] = []
        labels = [m.label for m in self.models]
        if isinstance(self.pairs, list):
            for k, (weak, strong) in enumerate(self.pairs):
                unknown = [m for m in (weak, strong) if m not in labels]
                for m in unknown:
                    problems.append((("pairs", k), f"{m!r} is not a model name{_did_you_mean(m, labels)}; "
                                                   f"names: {labels}"))
                if unknown:
                    continue
                if weak == strong:
                    problems.append((("pairs", k), f"[{weak}, {strong}]: weak and strong are the same model; "
                                                   f"a pair needs two different models"))
                elif labels.index(weak) > labels.index(strong):
                    problems.append((("pairs", k), f"[{weak}, {strong}] makes no sense: the weak model must come "
                                                   f"before the strong one in `models` (weakest first)"))
        elif len(labels) < 2:
            problems.append((("models",), "a weak-to-strong ladder needs at least two models "
                                          "(weakest first); add a stronger model"))
        for i, m in enumerate(self.models):
            t = self.resolved_train(m)
            if t["batch_size"] % t["micro_batch"]:
                loc = (("models", i, "micro_batch") if m.micro_batch is not None else
                       ("models", i, "batch_size") if m.batch_size is not None else
                       ("train", "micro_batch") if self.train.micro_batch is not None else ("models", i))
                msg = (f"batch_size {t['batch_size']} is not divisible by micro_batch {t['micro_batch']}"
                       f"{'' if loc[0] == 'train' else f' (model {m.label})'}; pick a micro_batch that divides it")
                if all(loc != seen for seen, _ in problems):
                    problems.append((loc, msg))
                continue
            from .zero import resource_problems   # no deepspeed import: arithmetic and allow-list only
            problems += [p for p in resource_problems(self, i, m, t) if all(p[0] != seen for seen, _ in problems)]
            problems += lora_problems(self, i, m, t)
        from .chains import problems as chain_problems   # names, >= 3 models, ladder order, repeats
        problems += chain_problems(self)
        if problems:
            raise Problems(problems)
        return self

    # -- resolution: defaults <- model table <- train: <- model overrides ------------------------
    def resolved_train(self, m: ModelConfig) -> dict:
        out = dict(TRAIN_DEFAULTS)
        entry = MODELS.get(m.id)
        if entry:
            out.update(lr=entry.lr, optimizer=entry.optimizer, eval_batch=entry.eval_batch,
                       gradient_checkpointing=entry.grad_ckpt)   # the table's "grad ckpt" column
        out.update({k: v for k, v in self.train.model_dump().items() if v is not None})
        out.update({k: v for k, v in m.model_dump(include=set(TrainFields.model_fields)).items() if v is not None})
        out.setdefault("lr", 5e-5)
        out.setdefault("optimizer", "adam")
        out["micro_batch"] = min(out["micro_batch"], out["batch_size"])
        out.setdefault("eval_batch", out["micro_batch"] * 4)
        return out

    def trust_remote_code(self, m: ModelConfig) -> bool:
        entry = MODELS.get(m.id)
        return m.trust_remote_code if m.trust_remote_code is not None else bool(entry and entry.trust_remote_code)

    def resolved_resources(self, m: ModelConfig) -> dict:
        out = dict(RESOURCE_DEFAULTS)
        out.update({k: v for k, v in self.resources.model_dump().items() if v is not None})
        if m.resources is not None:
            out.update({k: v for k, v in m.resources.model_dump().items() if v is not None})
        return out

    def hub_id(self, m: ModelConfig) -> tuple[str, str | None]:
        entry = MODELS.get(m.id)
        return (entry.hub_id, m.revision or entry.revision) if entry else (m.id, m.revision)

    def pairs_list(self) -> list[tuple[str, str]]:
        labels = [m.label for m in self.models]
        if self.pairs in ("all", "strictly_stronger", "with_self"):   # sweep.py: i <= j with self-pairs
            first = 0 if self.pairs == "with_self" else 1
            return [(w, s) for i, w in enumerate(labels) for s in labels[i + first:]]
        return [tuple(p) for p in self.pairs]

    def select_models(self, labels: list[str]) -> "Manifest":
        """The same experiment on a sub-ladder (`--models a,b`): pairs outside it are dropped."""
        unknown = [x for x in labels if x not in [m.label for m in self.models]]
        if unknown:
            raise ManifestError([f"--models: unknown model name(s) {unknown}; names: {[m.label for m in self.models]}"])
        raw = self.model_dump(exclude_unset=True)
        raw["models"] = [m.model_dump(exclude_unset=True) for m in self.models if m.label in labels]
        if isinstance(self.pairs, list):
            raw["pairs"] = [p for p in self.pairs if p[0] in labels and p[1] in labels]
        if self.chains:     # a chain leaves with any of its models
            raw["chains"] = [c for c in self.chains if all(x in labels for x in c)]
        return Manifest.model_validate(raw)

    def model(self, label: str) -> ModelConfig:
        return next(m for m in self.models if m.label == label)


def lint(m: Manifest) -> list[str]:
    """Warnings: valid, but probably not what was meant."""
    if not isinstance(m, Manifest):      # another kind's manifest (vision) lints itself
        return m.lint()
    out = []
    if m.dataset.n_test_docs < 200:
        out.append(f"dataset.n_test_docs={m.dataset.n_test_docs} is small: accuracy has a standard error of about "
                   f"{0.5 / m.dataset.n_test_docs ** 0.5:.3f} (reference issue #3 saw below-chance results at 100)")
    if spec_of(m.dataset).warning:      # the registry (or the declaration) carries its datasets' caveats
        out.append(spec_of(m.dataset).warning)
    if m.gt_loss.name != "xent":
        out.append(f"gt_loss is {m.gt_loss.name!r}: ground-truth baselines are not plain xent (Q4)")
    for mc in m.models:
        t = m.resolved_train(mc)
        if mc.lr is None and m.train.lr is None and t["batch_size"] != 32:   # train_simple.py asserts this
            out.append(f"{mc.label}: lr is the default ({t['lr']:g}) but batch_size is {t['batch_size']}; the reference "
                       f"requires batch_size 32 with a default lr (its learning rates were tuned at batch 32): set lr")
        if t["optimizer"] == "adafactor":
            out.append(f"{mc.label}: adafactor uses relative step sizes as the reference's (lr {t['lr']:g} and "
                       f"lr_schedule have no effect)")
            from .zero import lint as zero_lint   # Adafactor's semantics under ZeRO (per-partition)
            out += zero_lint(m, mc, t)
        if mc.id not in MODELS and not mc.revision and not is_local(mc.id):
            out.append(f"{mc.label}: no revision pinned for {mc.id}; the resolved commit is recorded, but the run may drift")
    return out


def load(path, overrides=()) -> Manifest:
    """Load and validate a manifest file (harness.manifest_io); raises ManifestError with every problem.
    A top-level `vision:` section selects the vision schema; without one it is a language manifest."""
    from vision.manifest import VisionManifest

    from .manifest_io import load_manifest

    return load_manifest(path, overrides, default=Manifest, sections={"vision": VisionManifest})
