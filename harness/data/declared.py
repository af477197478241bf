"""Datasets declared in YAML (docs/byod.md): a manifest's `dataset.declare` (inline, or the path of a YAML
file of the user's own) becomes a DatasetSpec like the registry's, so the splits, validation, cache keys
and reports treat it as any built-in dataset. No Python: a text template over the row's fields, and the
label as a field (optionally mapped), one right vs one random wrong choice, or a chosen/rejected pair.

The constructions consume the formatter RNG exactly as the reference's formatters do
(harness.data.formatters: `choice` with right/wrong = sciq, with options/right_index = cosmos_qa,
`pair` = anthropic_hh); tests/test_declared.py checks the built-ins' declarations (datasets/*.yaml)
byte for byte against them."""
from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, model_validator

from ..manifest_base import Problems, Strict
from . import DATASETS, DatasetSpec
from .validate import key_text

CHOICE = "choice"      # the template's placeholder for the candidate answer of `choice` / `pair`
SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".csv", ".parquet")


class Label(Strict):
    field: str = Field(description="the row's field holding the label")
    map: dict[str, int] | None = Field(None, description="value -> 0/1, e.g. {true: 1, false: 0} or {pos: 1, neg: 0}; values compare as text")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v):
        if isinstance(v, str):
            return {"field": v}
        if isinstance(v, dict) and isinstance(v.get("map"), dict):
            v = {**v, "map": {key_text(k): x for k, x in v["map"].items()}}
        return v

    @model_validator(mode="after")
    def _binary(self):
        bad = {k: x for k, x in (self.map or {}).items() if x not in (0, 1)}
        if bad:
            raise Problems([(("map",), f"labels are 0 or 1 (binary tasks); {bad} maps elsewhere")])
        return self


class Choice(Strict):
    """One right vs one random wrong answer: a coin per row says which one the text shows (label 1 = right)."""
    right: str | None = Field(None, description="field with the right answer (sciq: correct_answer); use with `wrong`")
    wrong: list[str] | None = Field(None, min_length=1, description="fields with wrong answers, one drawn at random (sciq: distractor1..3)")
    options: str | list[str] | None = Field(None, description="a list-valued field, or several fields, holding every option; use with `right_index`")
    right_index: str | None = Field(None, description="field with the 0-based index of the right option in `options`")
    negative_if_contains: str | None = Field(None, description="a right answer containing this text makes the row a negative without a coin (cosmos_qa: 'None of the above choices .')")

    @model_validator(mode="after")
    def _one_way(self):
        by_fields, by_index = self.right is not None or self.wrong is not None, self.options is not None or self.right_index is not None
        if by_fields == by_index or (by_fields and (self.right is None or self.wrong is None)) or \
                (by_index and (self.options is None or self.right_index is None)):
            raise ValueError("give either `right` + `wrong` (fields of the right and the wrong answers) or "
                             "`options` + `right_index` (the options and the index of the right one)")
        return self


class Pair(Strict):
    """A chosen/rejected pair (anthropic_hh): a coin per row shows the chosen (label 1) or the rejected text."""
    chosen: str = Field(description="field of the preferred text")
    rejected: str = Field(description="field of the other text")


class Declaration(Strict):
    hub: str | None = Field(None, description="Hugging Face dataset id, for the splits without a file")
    revision: str | None = Field(None, description="hub revision (pin it: an unpinned dataset may drift)")
    config: str | None = Field(None, description="hub configuration name, if the dataset has several")
    files: dict[str, str] = Field(default_factory=dict, description="split name -> local JSONL/CSV/parquet file, relative to the YAML file's folder")
    train_split: str = Field("train", description="the split to train from (dataset.splits.train overrides it)")
    test_split: str = Field("test", description="the split to test on (dataset.splits.test overrides it; `cut` carves it from train)")
    template: str = Field(description="the text: row fields in braces, e.g. 'Q: {question} A: {choice}'; {{ and }} are literal braces")
    label: Label | None = Field(None, description="the label field (0/1), or {field, map}; for plain classification")
    choice: Choice | None = Field(None, description="one right vs one random wrong answer, shown as {choice} in the template")
    pair: Pair | None = Field(None, description="chosen/rejected texts, shown as {choice} in the template")
    warning: str = Field("", description="a caveat printed by validate/run for every manifest on this dataset")

    @model_validator(mode="after")
    def _check(self):
        problems = []
        if sum(x is not None for x in (self.label, self.choice, self.pair)) != 1:
            problems.append(((), "give exactly one of `label` (a label field), `choice` (right vs wrong answer) "
                                 "or `pair` (chosen/rejected)"))
        if not self.hub and not self.files:
            problems.append(((), "give `hub` (a Hugging Face dataset id) or `files` (split -> local file)"))
        for split, f in self.files.items():
            if not f.endswith(SUFFIXES):
                problems.append((("files", split), f"{f}: a data file ends in {', '.join(SUFFIXES)}"))
            elif not Path(f).is_file():
                problems.append((("files", split), f"no such file {f} (paths are relative to the YAML file's folder)"))
        try:
            fields = template_fields(self.template)
        except ValueError as e:
            problems.append((("template",), str(e)))
        else:
            constructed = self.choice is not None or self.pair is not None
            if constructed and CHOICE not in fields:
                problems.append((("template",), f"{self.template!r} never shows the answer: add {{{CHOICE}}}"))
        if problems:
            raise Problems(problems)
        return self


def name_problems(name: str, declare: Declaration | None, splits, registry) -> list[tuple[tuple, str]]:
    """A manifest's `dataset:` name against the registry and its declaration (for harness.manifest)."""
    from ..manifest_base import _did_you_mean

    if declare is None:
        return [] if name in registry else [(("name",), f"unknown dataset {name!r}{_did_you_mean(name, registry)}; "
                                                        f"registered: {', '.join(sorted(registry))}; or describe "
                                                        f"your own under `declare:` (docs/byod.md)")]
    if name in registry:
        return [(("name",), f"{name!r} is a built-in dataset; give the dataset you declare another name")]
    if not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
        return [(("name",), f"{name!r}: a declared dataset's name has letters, digits, _ . - only")]
    out = []
    if not declare.hub:      # only files: the splits a run reads must be among them
        for key, split in (("train", splits.train or declare.train_split),
                           ("test", None if splits.test == "cut" else splits.test or declare.test_split)):
            if split is not None and split not in declare.files:
                out.append((("splits", key), f"split {split!r} has no file in declare.files "
                                             f"({', '.join(declare.files)}); name one of them, or `test: cut`"))
    return out


def template_fields(template: str) -> list[str]:
    """The field names of a template; only plain names (no attribute, index, conversion or format spec:
    a template reads the row, nothing else)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"{template!r}: {e} (write literal braces as {{{{ and }}}})") from None
    out = []
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conv:
            raise ValueError(f"{template!r}: {{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}} is not a "
                             f"plain field name; write {{field}} with the row's field name")
        out.append(name)
    return out


def resolve(value, context) -> object:
    """`declare:` before validation: a string is a YAML file (relative to the manifest's folder) holding the
    declaration; `files` become absolute paths, relative to the folder of the YAML that names them."""
    base = Path((context or {}).get("base", "."))
    if isinstance(value, str):
        import yaml

        path = (base / value).expanduser()
        if not path.is_file():
            raise ValueError(f"no such file {path} (a declaration file, relative to the manifest's folder)")
        try:
            value = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(value, dict):
            raise ValueError(f"{path}: a declaration is a YAML mapping (template:, label:, files: ...)")
        value = value.get("declare", value)     # a file may hold the mapping itself or `declare:` around it
        base = path.parent
    if isinstance(value, dict) and isinstance(value.get("files"), dict):
        value = {**value, "files": {k: str((base / f).expanduser().resolve()) if isinstance(f, str) else f
                                    for k, f in value["files"].items()}}
    return value


@dataclass(frozen=True)
class DeclaredFormatter:
    """`fn(row, rng) -> (text, label)` of a declaration, with the reference formatters' RNG order."""
    decl: Declaration

    def __call__(self, row: dict, rng) -> tuple[str, int]:
        d, extra = self.decl, {}
        if d.label is not None:
            value = row[d.label.field]
            label = d.label.map[key_text(value)] if d.label.map else int(value)
        elif d.pair is not None:
            label = int(rng.random() < 0.5)
            extra[CHOICE] = row[d.pair.chosen] if label else row[d.pair.rejected]
        else:
            label, extra[CHOICE] = self._choose(d.choice, row, rng)
        return d.template.format_map({**row, **extra}), label

    @staticmethod
    def _choose(c: Choice, row: dict, rng) -> tuple[int, str]:
        if c.right is not None:       # sciq: the coin, then a distractor only when it says "wrong"
            right, wrong = row[c.right], [row[f] for f in c.wrong]
        else:                         # cosmos_qa: the wrong ones are the options that differ from the right one
            options = row[c.options] if isinstance(c.options, str) else [row[f] for f in c.options]
            right = options[int(row[c.right_index])]
            wrong = [o for o in options if o != right]
        label = 0 if c.negative_if_contains and c.negative_if_contains in right else int(rng.random() < 0.5)
        return label, right if label else rng.choice(wrong)


def field_kinds(d: Declaration) -> dict[str, object]:
    """The raw fields a declaration reads and their kinds (harness.data.validate.check_value)."""
    out: dict[str, object] = {f: "any" for f in template_fields(d.template) if f != CHOICE or d.label is not None}
    if d.label is not None:
        out[d.label.field] = tuple(d.label.map) if d.label.map else "label"
    if d.pair is not None:
        out.update({d.pair.chosen: "text", d.pair.rejected: "text"})
    if d.choice is not None:
        c = d.choice
        if c.right is not None:
            out.update({f: "text" for f in [c.right, *c.wrong]})
        else:
            out.update({c.options: "list"} if isinstance(c.options, str) else {f: "text" for f in c.options})
            out[c.right_index] = f"index:{c.options}" if isinstance(c.options, str) else tuple(map(str, range(len(c.options))))
    return out


def to_spec(name: str, d: Declaration) -> DatasetSpec:
    return DatasetSpec(name, DeclaredFormatter(d), d.hub or "", d.train_split, d.test_split, revision=d.revision,
                       hub_kwargs={"name": d.config} if d.config else {}, paths=dict(d.files), warning=d.warning,
                       fields=field_kinds(d))


def spec_of(data) -> DatasetSpec:
    """The DatasetSpec of a manifest's `dataset:` section: its declaration, else the registry's entry."""
    declare = getattr(data, "declare", None)
    return to_spec(data.name, declare) if declare is not None else DATASETS[data.name]


def identity(data) -> dict | None:
    """What of a declaration enters the stage identity: all of it but where the files lie (their bytes do)."""
    declare = getattr(data, "declare", None)
    if declare is None:
        return None
    out = declare.model_dump(mode="json", exclude={"files"})
    out["files"] = sorted(declare.files)
    return out
