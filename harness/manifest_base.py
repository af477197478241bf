"""What every kind's manifest schema shares (harness.manifest for language, vision.manifest for vision):
the strict base model, the sections every experiment has (output, tracking), and the problem types and
`FILE:LINE: field.path: message` formatting the loader (harness.manifest_io) reports them with.

This is the bottom of the manifest layer: it imports no schema, so any kind can build on it."""
from __future__ import annotations

import difflib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class Problems(ValueError):
    """Several problems found by one validator, each with its location (a tuple of keys and list
    indices) relative to what the validator checks, so that each is reported on its own line."""

    def __init__(self, problems: list[tuple[tuple, str]]):
        super().__init__("; ".join(msg for _, msg in problems))
        self.problems = problems


class ManifestError(Exception):
    """Every problem with one manifest, formatted for people."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class Output(Strict):
    dir: str = Field("runs", description="stage cache (dir/stages) and results (dir/<name>); a relative path is "
                     "relative to the folder of the manifest that sets it (not the working directory); "
                     "`-o output.dir=...` on the command line is relative to the working directory")
    log_every: int = Field(10, ge=1, description="optimizer steps between train-metric logs")


class Tracking(Strict):
    mlflow: bool = Field(True, description="record runs in MLflow")
    uri: str | None = Field(None, description="tracking URI (default: $MLFLOW_TRACKING_URI, else an sqlite store under output.dir)")


def did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_did_you_mean = did_you_mean   # the name the schemas use


def problem(loc: tuple, msg: str, path: Path, lines: dict, overridden: list[str]) -> str:
    """`FILE:LINE: field.path: message (hint)`, or `override -o KEY: ...` when an override put it there."""
    dotted = ".".join(str(x) for x in loc)
    line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), None)
    src = next((f"override -o {k}" for k in overridden
                if dotted == k or dotted.startswith(k + ".") or (dotted and k.startswith(dotted + "."))),
               line if isinstance(line, str) else f"{path}:{line}" if line else str(path))
    return f"{src}: {dotted or '<top>'}: {msg}"
