"""The registry of kinds of experiment (harness.kind): which one a loaded manifest is. One line per kind;
harness.manifest.load picks the schema by the manifest's top-level section."""
from __future__ import annotations

from vision.kind import Vision

from .kind import Kind, Language

KINDS: tuple[Kind, ...] = (Language(), Vision())


def kind_of(m) -> Kind:
    for kind in KINDS:
        if isinstance(m, kind.schema):
            return kind
    raise TypeError(f"{type(m).__name__} is not the manifest of a registered kind ({', '.join(k.name for k in KINDS)})")
