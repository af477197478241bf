"""Versions and provenance recorded with every run (and printed by `w2s env`)."""
from __future__ import annotations

import importlib.metadata as md
import platform
import subprocess
from pathlib import Path

from . import __version__

PACKAGES = ("torch", "transformers", "datasets", "accelerate", "pydantic", "mlflow", "mlflow-skinny",
            "deepspeed", "numpy", "pandas", "pyarrow")


def versions() -> dict[str, str]:
    out = {"harness": __version__, "python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None
