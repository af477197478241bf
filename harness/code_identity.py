"""The code that computes a stage is part of its identity (docs/caching.md).

`code_digest(*roots)` hashes the source of the given functions or classes and of every harness (or
vision) function, class and constant they reach by name, transitively: a loss and the helpers it calls,
a formatter, the protocol and the training loop it drives. The source is normalised through the AST
without docstrings, so comments, docstrings and formatting do not count; any change of code does.
What a name lookup cannot see (a registry entry picked at run time, a third-party library) is covered
by the explicit CODE_VERSION bump in harness/plan.py and by separate roots (each loss is its own root)."""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import marshal
import textwrap
import types

OURS = ("harness", "vision")
_OWN: dict[object, str] = {}       # object -> digest of its own source (sources do not change in-process)
_CONSTANT = (str, int, float, bool, bytes, type(None))


def _ours(obj) -> bool:
    mod = getattr(obj, "__module__", None) or ""
    return mod.split(".")[0] in OURS or mod == "__main__"


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _own(obj) -> str:
    if obj not in _OWN:
        try:
            tree = _strip_docstrings(ast.parse(textwrap.dedent(inspect.getsource(obj))))
            text = ast.dump(tree, annotate_fields=False, include_attributes=False).encode()
        except (OSError, TypeError, SyntaxError):
            # No source file (defined in `python -c` or exec): the byte code stands in for the source.
            code = getattr(obj, "__code__", None)
            text = marshal.dumps(code) if code is not None else repr(obj).encode()
        _OWN[obj] = hashlib.sha256(text).hexdigest()
    return _OWN[obj]


def _code_objects(code: types.CodeType):
    yield code
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _code_objects(c)


def _functions_of(obj) -> list:
    if isinstance(obj, type):
        out = []
        for v in vars(obj).values():
            if isinstance(v, (staticmethod, classmethod)):
                v = v.__func__
            if isinstance(v, property):
                out += [f for f in (v.fget, v.fset) if f is not None]
            elif isinstance(v, types.FunctionType):
                out.append(v)
        return out
    return [obj] if isinstance(obj, types.FunctionType) else []


def _plain(value, depth: int = 0) -> str | None:
    """A deterministic text of plain data (scalars in dicts, lists, tuples, sets, dataclasses), or None
    for anything else (functions, tensors, caches of live objects: their repr is not stable).
    Underscore names are never asked: they are per-process caches (`_MEMO`), not code."""
    if isinstance(value, _CONSTANT):
        return repr(value)
    if depth > 4:
        return None
    if isinstance(value, dict):
        items = [(_plain(k, depth + 1), _plain(v, depth + 1)) for k, v in value.items()]
        return None if any(a is None or b is None for a, b in items) else "{" + ",".join(sorted(f"{a}:{b}" for a, b in items)) + "}"
    if isinstance(value, (list, tuple, set, frozenset)):
        parts = [_plain(v, depth + 1) for v in value]
        if any(p is None for p in parts):
            return None
        return ("{" + ",".join(sorted(parts)) + "}") if isinstance(value, (set, frozenset)) else "[" + ",".join(parts) + "]"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        inner = _plain(fields, depth + 1)
        return None if inner is None else f"{type(value).__qualname__}{inner}"
    return None


def _reached(obj) -> tuple[list, dict]:
    """(harness functions/classes, constants) that `obj` reaches by global name, transitively."""
    seen, consts, todo = {}, {}, [obj]
    while todo:
        cur = todo.pop()
        if id(cur) in seen:
            continue
        seen[id(cur)] = cur
        for fn in _functions_of(cur):
            names = {n for c in _code_objects(fn.__code__) for n in c.co_names}
            g = fn.__globals__
            for name in names:
                if name not in g:
                    continue
                val = g[name]
                targets = [val]
                if isinstance(val, types.ModuleType):        # `zero.resolve()`: the module's named members
                    if (val.__name__.split(".")[0]) not in OURS:
                        continue
                    targets = [getattr(val, n) for n in names if hasattr(val, n)]
                    for n in names:
                        if hasattr(val, n) and isinstance(getattr(val, n), _CONSTANT):
                            consts[f"{val.__name__}.{n}"] = repr(getattr(val, n))
                for t in targets:
                    if isinstance(t, (types.FunctionType, type)) and _ours(t):
                        todo.append(t)
                    elif isinstance(t, _CONSTANT) and t is val:
                        consts[f"{g.get('__name__')}.{name}"] = repr(t)
                    elif t is val and not name.startswith("_") and (text := _plain(t)) is not None:
                        consts[f"{g.get('__name__')}.{name}"] = text     # a lookup table (DEFAULT_POOLING)
    return list(seen.values()), consts


def code_digest(*roots) -> str:
    """16 hex digits that change whenever the code reached from `roots` changes."""
    h = hashlib.sha256()
    objs, consts = {}, {}
    for root in roots:
        found, c = _reached(root)
        objs.update({id(o): o for o in found})
        consts.update(c)
    for name, digest in sorted((f"{getattr(o, '__module__', '')}.{getattr(o, '__qualname__', '')}", _own(o))
                               for o in objs.values()):
        h.update(f"{name}={digest}\n".encode())
    for name, value in sorted(consts.items()):
        h.update(f"{name}={value}\n".encode())
    return h.hexdigest()[:16]


def module_digest(*modules: str) -> str:
    """Whole modules, read from disk without importing them (the protocol imports transformers'
    Trainer, which `w2s plan` should not pay for); normalised like `code_digest`."""
    import importlib.util

    h = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        with open(spec.origin, encoding="utf-8") as f:
            tree = _strip_docstrings(ast.parse(f.read()))
        h.update(f"{name}={ast.dump(tree, annotate_fields=False, include_attributes=False)}\n".encode())
    return h.hexdigest()[:16]


# Bump when a change the digests cannot see alters results (see docs/caching.md).
CODE_VERSION = 1
# The training loop and evaluation: every stage runs through them, so any change recomputes everything.
PROTOCOL_MODULES = ("harness.protocol", "harness.train", "harness.features", "harness.metrics")


def stage_code(dataset: str, loss: str) -> dict:
    """The code part of a language stage's identity: each piece is its own entry, so that a change
    recomputes exactly the stages that run that piece (and, through teacher keys, their students)."""
    from .data import DATASETS
    from .data.declared import DeclaredFormatter
    from .data.splits import make_splits
    from .losses import LOSSES

    formatter = DATASETS[dataset].formatter if dataset in DATASETS else DeclaredFormatter   # docs/byod.md
    return {"version": CODE_VERSION, "protocol": module_digest(*PROTOCOL_MODULES),
            "data": code_digest(make_splits), "formatter": code_digest(formatter),
            "model": model_code(), "loss": code_digest(LOSSES[loss])}


def model_code() -> str:
    """The model-loading code's digest. Walking it imports harness.models, hence torch (seconds that
    `w2s plan` should not pay). A module that is not imported yet cannot have been patched in this
    process, so its digest is its source's: remembered on disk under a digest of every source file of
    harness/ and vision/ (harness.memo). Once imported (training, tests that patch it) it is walked live."""
    import sys

    if "harness.models" in sys.modules:
        return _model_code()
    from .memo import remembered, source_digest

    return remembered("model-code", {"sources": source_digest(OURS)}, _model_code)


def _model_code() -> str:
    from .lora import apply_lora
    from .models import FAMILY_MODULES, load_classifier, load_tokenizer

    # family modules (harness.qwen1) are imported by name at load time: no name lookup reaches them;
    # the adapters (train.lora) are part of the model the protocol builds
    model = code_digest(load_classifier, load_tokenizer, apply_lora) + module_digest(*sorted(set(FAMILY_MODULES.values())))
    return hashlib.sha256(model.encode()).hexdigest()[:16]
