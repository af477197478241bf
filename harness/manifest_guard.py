"""Guards of the manifest loader (harness.manifest_io) against inputs that are not manifests: a
directory, a binary or huge file, YAML alias bombs, duplicate keys, non-finite numbers, names that
are not safe path components, and sizes no machine can run. Each gives a ManifestError naming the
file, the line and the field, with the fix; nothing here imports torch."""
from __future__ import annotations

import math
from pathlib import Path

import yaml

from .manifest_base import ManifestError, problem as _problem

MAX_BYTES = 1 << 20          # a manifest is a few KiB; this is a typo'd path (a dataset, a checkpoint)
MAX_NODES = 20_000           # YAML nodes after expanding aliases: a ladder of 100 models is ~3000
# Rows a training stage materialises (half of n_docs x epochs, harness.train.epoch_concat): 1e8 is
# 50x the largest reference run (amazon_polarity 3.6M rows x 2 epochs), and ~1 GB of row references.
MAX_TRAIN_ROWS = 100_000_000
MAX_DOCS = 1_000_000_000     # more rows than any registered dataset has, by far


def read_text(path: Path, what: str) -> str:
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.y*ml"))[:5]
        raise ManifestError([f"{path}: is a directory; {what} is a YAML file"
                             + (f" (here: {', '.join(found)})" if found else "")])
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ManifestError([f"{path}: cannot be read: {e.strerror or e}"]) from None
    if len(data) > MAX_BYTES:
        raise ManifestError([f"{path}: larger than {MAX_BYTES >> 10} KiB; {what} is a small YAML file "
                             f"(is this the right path?)"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError([f"{path}: not a text file (byte {e.start} is not UTF-8); {what} is a YAML file"]) from None
    if "\x00" in text:
        raise ManifestError([f"{path}: not a text file (it contains NUL bytes); {what} is a YAML file"])
    return text


def compose(text: str, where: str):
    """The YAML node tree, refused before anything walks it if aliases expand it beyond MAX_NODES."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise ManifestError([f"{where}: nested too deeply to be a manifest"]) from None
    if node is not None:
        n = expanded_size(node)
        if n > MAX_NODES:
            raise ManifestError([f"{where}: the YAML expands to more than {MAX_NODES} values (aliases `*name` "
                                 f"that repeat anchors that repeat anchors); a manifest needs a few hundred. "
                                 f"Remove the nested aliases"])
    return node


def expanded_size(node, memo=None) -> int:
    """Nodes after alias expansion, counted without expanding (each shared node is sized once)."""
    memo = {} if memo is None else memo
    stack, order = [node], []
    while stack:                       # iterative post-order: a deep document must not hit the C stack
        cur = stack.pop()
        if id(cur) in memo:
            continue
        memo[id(cur)] = None
        order.append(cur)
        stack.extend(_children(cur))
    for cur in reversed(order):
        memo[id(cur)] = min(MAX_NODES + 1, 1 + sum(memo[id(c)] or 0 for c in _children(cur)))
    return memo[id(node)]


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [x for kv in node.value for x in kv]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def duplicate_keys(node, path: Path) -> list[str]:
    """Keys given twice in one mapping (YAML keeps the last silently); `<<` merges are not duplicates."""
    out, seen_nodes, stack = [], set(), [(node, ())]
    while stack:
        cur, loc = stack.pop()
        if id(cur) in seen_nodes:
            continue
        seen_nodes.add(id(cur))
        if isinstance(cur, yaml.MappingNode):
            first: dict = {}
            for k, v in cur.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else None
                if key is not None and key != "<<":
                    if key in first:
                        dotted = ".".join(map(str, loc + (key,)))
                        out.append((k.start_mark.line, f"{path}:{k.start_mark.line + 1}: {dotted}: duplicate key {key!r} (first on line "
                                   f"{first[key]}); YAML would keep only the last one: remove one of them"))
                    else:
                        first[key] = k.start_mark.line + 1
                stack.append((v, loc + ((key,) if key is not None else ())))
        elif isinstance(cur, yaml.SequenceNode):
            stack.extend((v, loc + (i,)) for i, v in enumerate(cur.value))
    return [msg for _, msg in sorted(out)]


def raw_problems(raw: dict, lines: dict, path: Path, overridden: list[str]) -> list[str]:
    """Non-finite numbers anywhere, and a `name` that is not a safe folder name."""
    out = []

    def walk(v, loc):
        if isinstance(v, float) and not math.isfinite(v):
            out.append(_problem(loc, f"{v} is not a finite number; write a number (e.g. 1e-5), not .inf/.nan",
                                path, lines, overridden))
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(x, loc + (k,))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, loc + (i,))
    walk(raw, ())
    name = raw.get("name")
    if isinstance(name, str) and name.startswith("."):
        out.append(_problem(("name",), f"{name!r} is not a safe folder name (results go to output.dir/<name>); "
                                       f"start it with a letter or digit", path, lines, overridden))
    return out


def size_problems(m, lines: dict, path: Path, overridden: list[str]) -> list[str]:
    """Sizes that validate but cannot run: rows x epochs materialised per stage, seeds numpy refuses."""
    out = []
    d = m.dataset
    for field in ("n_docs", "n_test_docs"):
        if getattr(d, field) > MAX_DOCS:
            out.append(_problem(("dataset", field), f"{getattr(d, field)} rows is more than any dataset has "
                                                    f"(limit {MAX_DOCS:.0e}); use the number of rows you mean",
                                path, lines, overridden))
    for i, s in enumerate(m.seeds):
        if not 0 <= s < 2 ** 32:
            out.append(_problem(("seeds", i), f"seed {s} is outside 0..2**32-1 (numpy and torch refuse it)",
                                path, lines, overridden))
    if not 0 <= d.cut_seed < 2 ** 32:
        out.append(_problem(("dataset", "cut_seed"), f"{d.cut_seed} is outside 0..2**32-1", path, lines, overridden))
    if out:
        return out
    for i, mc in enumerate(m.models):
        t = m.resolved_train(mc)
        rows = math.ceil(d.n_docs / 2) * t["epochs"]
        if rows > MAX_TRAIN_ROWS:
            loc = (("models", i, "epochs") if mc.epochs is not None else
                   ("train", "epochs") if m.train.epochs is not None else ("dataset", "n_docs"))
            out.append(_problem(loc, f"{math.ceil(d.n_docs / 2)} rows per half x {t['epochs']:g} epochs = {rows:.3g} "
                                     f"training rows per stage ({rows / t['batch_size']:.3g} optimizer steps, model {mc.label}), more "
                                     f"than {MAX_TRAIN_ROWS:.0e}: it cannot fit in memory; the reference trains 2 epochs", path, lines, overridden))
    return out
