"""Versions and provenance recorded with every run (and printed by `w2s env`)."""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import re
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


# Variables that change where data, weights and runs come from: a bug report without them is a guess.
ENV_VARS = ("W2S_DATA_DIR", "W2S_QWEN1_CODE", "W2S_VISION_WEIGHTS", "W2S_IMAGENET_DIR", "HF_HOME", "HF_HUB_CACHE",
            "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "MLFLOW_TRACKING_URI", "RAY_ADDRESS",
            "CUDA_VISIBLE_DEVICES")


def git_state(root: Path | None = None) -> tuple[str | None, bool | None]:
    """(HEAD commit, whether tracked files differ from it) of the checkout the code runs from."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        if sha.returncode:
            return None, None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip(), bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return None, None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _redact(value: str) -> str:
    """user:password@ in a URI is a credential: never printed into a bug report."""
    return re.sub(r"(?<=://)[^/@\s]+@", "***@", value)


def system() -> dict[str, str]:
    """OS, CPUs, GPUs/CUDA (through torch, when it imports), the data/cache variables and the checkout."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = {"os": f"{platform.platform()} ({platform.machine()})",
           "cpu": f"{os.cpu_count()} logical ({usable} usable) · {_cpu_model()}"}
    try:
        import torch   # only here: `w2s env` is the one light command that reports on it
    except Exception as e:  # noqa: BLE001 - a broken CUDA install fails in many ways; report, do not crash
        out["gpu"] = f"unknown (torch does not import: {type(e).__name__}: {str(e)[:100]})"
    else:
        out["cuda"] = f"torch built with CUDA {torch.version.cuda or 'none (CPU build)'}"
        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            out["gpu"] = f"{len(names)} × " + ", ".join(sorted(set(names)))
        else:
            out["gpu"] = "none visible to torch"
    names = list(ENV_VARS) + sorted(k for k in os.environ if k.startswith("W2S_") and k not in ENV_VARS)
    for k in names:
        out[k] = _redact(os.environ[k]) if k in os.environ else "(unset)"
    sha, dirty = git_state()
    out["git"] = sha or "unknown (not a git checkout)"
    out["git dirty"] = "unknown" if dirty is None else "yes (tracked files differ from the commit)" if dirty else "no"
    return out
