"""docs/manifest.md, generated from the pydantic schema so the two never drift (a test checks)."""
from __future__ import annotations

import typing

from pydantic import BaseModel

from . import manifest as mf
from .data import declared as decl
from .spec import is_operational, operational_paths

# (title, schema, key prefix: where harness.spec's identity/operational declaration finds its fields)
SECTIONS = [("top level", mf.Manifest, ""), ("dataset", mf.DataConfig, "dataset."),
            ("dataset.splits", mf.Splits, "dataset.splits."),
            ("dataset.declare (docs/byod.md)", decl.Declaration, "dataset.declare."),
            ("dataset.declare.label", decl.Label, "dataset.declare.label."),
            ("dataset.declare.choice", decl.Choice, "dataset.declare.choice."),
            ("dataset.declare.pair", decl.Pair, "dataset.declare.pair."),
            ("models[] (also every field of `train`)", mf.ModelConfig, "models[]."), ("train", mf.TrainFields, "train."),
            ("losses[] / gt_loss", mf.LossConfig, "losses[]."), ("fidelity", mf.Fidelity, "fidelity."),
            ("resources (also models[].resources)", mf.Resources, "resources."), ("output", mf.Output, "output."),
            ("tracking", mf.Tracking, "tracking.")]


def _type(ann) -> str:
    text = repr(ann) if not isinstance(ann, type) else ann.__name__
    for junk in ("typing.", "harness.manifest.", "harness.data.declared.", "<class '", "'>"):
        text = text.replace(junk, "")
    return text.replace("NoneType", "None").replace("|", "\\|")


def render() -> str:
    out = ["# Manifest reference", "",
           "Generated from `harness/manifest.py` by `w2s schema-docs > docs/manifest.md`; do not edit by hand.",
           "Every key is validated before any compute: unknown keys, wrong types, unknown dataset/model/loss",
           "names and impossible ladders are reported with file, line, field path and a fix.",
           "Identity fields change results and feed cache keys and MLflow params; operational fields",
           f"({', '.join(f'`{p}`' for p in _outermost(operational_paths()))}) never do: they are marked",
           "*operational* below. Both come from one declaration, the stage description `harness/spec.py`.", "",
           "Training defaults when nothing is set: " + ", ".join(f"`{k}: {v}`" for k, v in mf.TRAIN_DEFAULTS.items()) + ".",
           "Model-table defaults (lr, optimizer, eval batch, pinned revision) apply to registry names.",
           "`extends: base.yaml` merges a manifest over a base (mappings key by key; lists are replaced), so",
           "experiment files can be small diffs; files named `_*.yaml` are such bases.", "",
           "Fidelity profiles (docs/quirks.md):", ""]
    out += ["| quirk | reference | fixed |", "|---|---|---|"]
    out += [f"| {k} | {mf.PROFILES['reference'][k]} | {mf.PROFILES['fixed'][k]} |" for k in mf.PROFILES["fixed"]]
    for title, model, prefix in SECTIONS:
        out += ["", f"## {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        fields = model.model_fields if model is not mf.ModelConfig else {
            k: v for k, v in model.model_fields.items() if k not in mf.TrainFields.model_fields}
        for name, f in fields.items():
            default = "required" if f.is_required() else repr(f.get_default(call_default_factory=False))
            if f.default_factory is not None:
                default = "(see section)" if _is_model(f.annotation) else "[xent]" if name in ("losses", "gt_loss") else "…"
            meaning = " ".join(["*operational*"] * is_operational(prefix + name) + [f.description or ""]).strip()
            out.append(f"| `{name}` | {_type(f.annotation)} | {default} | {meaning} |")
    return "\n".join(out) + "\n"


def _outermost(paths: set[str]) -> list[str]:
    """`output` rather than `output`, `output.dir`, `output.log_every`."""
    return sorted(p for p in paths if not any(p.startswith(q + ".") for q in paths))


def _is_model(ann) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel) or any(
        isinstance(a, type) and issubclass(a, BaseModel) for a in typing.get_args(ann))
