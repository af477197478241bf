"""Loading manifests: YAML with a line map, `extends:` bases, `${VAR:-default}` expansion, dotted `-o`
overrides, and validation errors formatted as `FILE:LINE: field.path: message (hint)` — every problem
of a file at once, before any compute."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from . import manifest_guard as guard
from .manifest_base import ManifestError, Problems, did_you_mean, problem as _problem

# The schemas come from the caller (harness.manifest.load): this module sits below every kind's schema.


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value):
    if isinstance(value, str):
        return _ENV.sub(lambda m: os.environ.get(m.group(1), m.group(2) if m.group(2) is not None else m.group(0)), value)
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    return value


def _line_map(node, path=(), out=None) -> dict[tuple, int]:
    """YAML path (keys and list indices) -> 1-based line, from PyYAML's node tree."""
    out = {} if out is None else out
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            _line_map(v, path + (k.value,), out)
            out[path + (k.value,)] = k.start_mark.line + 1    # the key's line, not its value's
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, path + (i,), out)
    return out


# Entries a manifest may write as their id or name alone (`models: [gpt2]`, `losses: [xent]`, `weak: small_cnn`):
# an override into one (`-o models.1.lr=...`) first spells it out as the mapping it stands for.
SHORTHAND = {"models": "id", "strong": "id", "weak": "id", "losses": "name", "gt_loss": "name"}


def _set_dotted(raw: dict, dotted: str, value) -> None:
    keys = [int(k) if k.isdigit() else k for k in dotted.split(".")]
    cur, name = raw, None
    for k in keys[:-1]:
        if isinstance(cur, list):
            if isinstance(cur[k], str) and name in SHORTHAND:
                cur[k] = {SHORTHAND[name]: cur[k]}
            cur = cur[k]
        else:
            if isinstance(cur.get(k), str) and k in SHORTHAND:
                cur[k] = {SHORTHAND[k]: cur[k]}
            cur, name = cur.setdefault(k, {}), k
    cur[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in overrides:
        if "=" not in item:
            raise ManifestError([f"override {item!r}: expected key=value, e.g. -o dataset.n_docs=2000"])
        key, value = item.split("=", 1)
        try:
            node = guard.compose(value, f"override -o {item}") if value.strip() else None
            out.append((key.strip(), yaml.safe_load(value) if node is not None else None))
        except yaml.YAMLError as e:
            raise ManifestError([f"override -o {item}: not a YAML value ({getattr(e, 'problem', None) or e}); "
                                 f"quote strings, e.g. -o 'name=\"my run\"', and write lists as [a, b]"]) from None
    return out


def _read_yaml(path: Path, chain: tuple = ()) -> tuple[dict, dict]:
    """Raw mapping plus {yaml path: "FILE:LINE"}; `extends: base.yaml` merges the file over its base
    (mappings merge key by key, anything else is replaced), so a manifest can be a small diff."""
    if not path.exists():
        raise ManifestError([f"{chain[-1] if chain else path}: no such file {path}" if chain else f"{path}: no such file"])
    if path.resolve() in chain:
        raise ManifestError([f"{path}: `extends` loops back to itself"])
    text = guard.read_text(path, "a base manifest" if chain else "a manifest")
    try:
        node = guard.compose(text, str(path))     # bounded: an alias bomb is refused before it is expanded
        dupes = guard.duplicate_keys(node, path) if node is not None else []
        if dupes:
            raise ManifestError(dupes)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ManifestError([f"{where}: not valid YAML: {getattr(e, 'problem', e)} "
                             f"(check the indentation, colons and quoting on this line and the one before)"]) from None
    if not isinstance(raw, dict):
        raise ManifestError([f"{path}:1: a manifest is a YAML mapping (name:, dataset:, models:, ...)"])
    lines = {k: f"{path}:{v}" for k, v in (_line_map(node) if node is not None else {}).items()}
    for key in [k for k in raw if isinstance(k, str) and k.startswith("x-")]:
        raw.pop(key)      # `x-` keys hold YAML anchors for reuse, as in compose files
    base = raw.pop("extends", None)
    if base is None:
        return raw, lines
    if not isinstance(base, str):
        raise ManifestError([f"{lines.get(('extends',), path)}: extends: expected a path to a base manifest"])
    base_raw, base_lines = _read_yaml((path.parent / base), chain + (path.resolve(),))
    return _merge(base_raw, raw), {**base_lines, **lines}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_manifest(path: str | Path, overrides: list[str] = (), *, default: type[BaseModel],
                  sections: dict[str, type[BaseModel]] = {}) -> BaseModel:  # noqa: B006 - read only
    """The manifest at `path` validated by `default`, or by sections[key] when it has that top-level key."""
    try:
        return _load_manifest(Path(path), overrides, default, sections)
    except RecursionError:     # self-referencing aliases (`&a [*a]`) or absurd nesting
        raise ManifestError([f"{path}: the YAML refers to itself (an alias inside its own anchor) or nests too "
                             f"deeply; a manifest is a plain mapping"]) from None


def _load_manifest(path: Path, overrides, default, sections) -> BaseModel:
    raw, lines = _read_yaml(path)
    parsed = parse_overrides(list(overrides))
    for key, value in parsed:
        try:
            _set_dotted(raw, key, value)
        except (IndexError, KeyError, TypeError, AttributeError):
            raise ManifestError([f"override -o {key}: no such place in {path}"]) from None
    # A kind's top-level section (e.g. `vision:`) selects its schema: same loader, same errors.
    schema = next((s for key, s in sections.items() if key in raw), default)
    keys = [k for k, _ in parsed]
    problems = guard.raw_problems(raw, lines, path, keys)
    if problems:
        raise ManifestError(problems)
    try:
        # context: a declared dataset's files are relative to the manifest's folder (harness.data.declared)
        m = schema.model_validate(_expand(raw), context={"base": str(path.parent)})
    except ValidationError as e:
        problems = _format_errors(e, path, lines, keys, root=schema)
        problems += [p for p in _cross_field_problems(schema, _expand(raw), e, path, lines, keys) if p not in problems]
        raise ManifestError(problems) from None
    problems = guard.size_problems(m, lines, path, keys) if getattr(schema, "SIZE_CHECKED", False) else []
    if problems:
        raise ManifestError(problems)
    _anchor_paths(m, raw, path, lines, keys)
    return m


# Paths a manifest may give relative to itself: (section, field)
ANCHORED = (("output", "dir"), ("dataset", "source"), ("vision", "data_dir"))


def _anchor_paths(m, raw: dict, path: Path, lines: dict, overridden: list[str]) -> None:
    """A relative path (`output.dir`, `dataset.source`, `vision.data_dir`) is relative to the folder of the
    file that sets it (a base's, under `extends`), or the manifest's when left default, so `w2s results`
    from any directory finds the runs and the data; a `-o section.key=...` override is relative to the
    working directory, as paths typed in a shell are, and so is a value built from `${VAR}` (or its
    `:-default`; W2S_DATA_DIR is read that way everywhere else too). Made absolute here, once: everything
    downstream (and every printed path) sees that."""
    for section, key in ANCHORED:
        obj = getattr(m, section, None)
        value = getattr(obj, key, None) if obj is not None else None
        if not isinstance(value, str) or not value:
            continue
        d = Path(value).expanduser()
        written = raw.get(section)
        written = written.get(key) if isinstance(written, dict) else None     # as in the YAML, before ${VAR}
        if not d.is_absolute():
            if any(k in (section, f"{section}.{key}") for k in overridden) or \
                    (isinstance(written, str) and _ENV.search(written)):
                base = Path.cwd()
            else:
                where = lines.get((section, key))
                base = Path(where.rsplit(":", 1)[0]).parent if where else path.parent
            d = base / d
        setattr(obj, key, str(d.resolve()))


def _cross_field_problems(schema, raw: dict, err: ValidationError, path: Path, lines: dict,
                          overridden: list[str]) -> list[str]:
    """Pydantic skips the cross-field checks (pairs, batch divisibility) when any field fails. To still
    report every problem at once, validate again with the failing unrelated top-level fields replaced
    by placeholders or defaults, and keep only the problems under the schema's CROSS_FIELD_KEYS."""
    keys = getattr(schema, "CROSS_FIELD_KEYS", ())
    failed = {e["loc"][0] for e in err.errors() if e["loc"]}
    if not keys or not isinstance(raw, dict) or failed & set(keys) or not failed:
        return []
    retry = {k: v for k, v in raw.items() if k not in failed}
    retry.update({k: v for k, v in schema.PLACEHOLDERS.items() if k in failed})
    try:
        schema.model_validate(retry)
    except ValidationError as e2:
        return _format_errors(e2, path, lines, overridden, keep=lambda loc: bool(loc) and loc[0] in keys, root=schema)
    return []


def _format_errors(err: ValidationError, path: Path, lines: dict, overridden: list[str],
                   keep=lambda loc: True, root=None) -> list[str]:
    problems = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x in ("function-after", "function-before")))
        loc = tuple(x for x in loc if not (isinstance(x, str) and x.startswith(("tuple[", "list[", "literal[", "Literal["))))
        error = (e.get("ctx") or {}).get("error")
        if isinstance(error, Problems):     # several problems, each at its own place
            problems += [_problem(loc + tuple(sub), msg, path, lines, overridden)
                         for sub, msg in error.problems if keep(loc + tuple(sub))]
            continue
        if not keep(loc):
            continue
        msg = e["msg"].removeprefix("Value error, ")
        parent = _model_at(loc[:-1], root) if loc else None
        field = parent.model_fields.get(loc[-1]) if parent and isinstance(loc[-1], str) else None
        hint = field.description if field is not None and field.description else ""
        if e["type"] == "extra_forbidden":
            close = did_you_mean(loc[-1], parent.model_fields) if parent else ""
            msg = f"unknown key {loc[-1]!r}" + (close or (f" (valid keys: {', '.join(parent.model_fields)})" if parent else ""))
        elif e["type"] == "missing":
            msg = "required field is missing" + (f" ({hint})" if hint else "")
        elif "input" in e and e["type"] not in ("value_error", "assertion_error") and not isinstance(e["input"], dict):
            msg += f" (got {e['input']!r}" + (f"; {loc[-1]}: {hint})" if hint else ")")
        problems.append(_problem(loc, msg, path, lines, overridden))
    return problems


def _model_at(loc: tuple, root) -> type[BaseModel] | None:
    """The pydantic model class at a location, to suggest the closest valid key."""
    cls: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part) if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        if field is None:
            return None
        ann = field.annotation
        for cand in (ann, *getattr(ann, "__args__", ())):
            for sub in (cand, *getattr(cand, "__args__", ())):
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    cls = sub
                    break
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


