"""Data validation before any training: the columns a formatter reads are present and typed, labels
are in the dataset's label set, splits are not empty. A problem raises DataError naming the file (or
hub split), the row (and the line of a local file) and the field; `w2s run` prints it and exits 2.

Only the rows a run draws are checked (a bad row the run never reads does not stop it); a local file
that the JSON reader cannot load at all is scanned line by line to find the first bad line."""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

MAX_REPORTED = 5     # problems listed per file; the rest are counted


class DataError(ValueError):
    """A data file (or hub split) that a run cannot use, with every reported problem."""


def key_text(value) -> str:
    """Label-map keys and row values compare as text: YAML `true:` and a JSON round trip's "true" agree."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


# Field kinds: text = a string; bool = true/false; label = an integer in the dataset's label set; and for
# declared datasets (harness.data.declared): any = not null; list = a list of strings; index:F = a valid
# index into the list in field F; a tuple = the value's text is one of these (a label map's keys).
def check_value(kind, value, labels: tuple, row: dict | None = None) -> str | None:
    if value is None:
        return "is null (missing)"
    if kind == "any":
        return None
    if isinstance(kind, tuple):
        return None if key_text(value) in kind else f"{value!r} is not one of {', '.join(kind)}"
    if kind == "list":
        ok = isinstance(value, list) and len(value) >= 2 and all(isinstance(x, str) for x in value)
        return None if ok else f"{value!r} is not a list of at least two strings"
    if kind.startswith("index:"):
        options = (row or {}).get(kind[6:])
        ok = isinstance(value, int) and not isinstance(value, bool) and isinstance(options, list) and 0 <= value < len(options)
        return None if ok else f"{value!r} is not an index into field {kind[6:]!r} (0 to {len(options or []) - 1})"
    if kind == "text":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    if kind == "bool":
        return None if isinstance(value, bool) else f"{value!r} is not true/false"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r} is not an integer label (labels: {', '.join(map(str, labels))})"
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        return f"{value!r} is not an integer label (labels: {', '.join(map(str, labels))})"
    if int(value) not in labels:
        return f"{value!r} is not a label of this dataset (labels: {', '.join(map(str, labels))})"
    return None


def row_problems(spec, row: dict) -> list[tuple[str, str]]:
    """(field, problem) for one raw row."""
    out = []
    for name, kind in spec.fields.items():
        if name not in row:
            out.append((name, "is missing"))
            continue
        why = check_value(kind, row[name], spec.labels, row)
        if why:
            out.append((name, why))
    return out


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def line_of(path: Path | None, index: int) -> str:
    """' (line N)' for row `index` of a local JSON-lines file (blank lines are not rows)."""
    if path is None:
        return ""
    try:
        with _open(path) as f:
            n = -1
            for lineno, line in enumerate(f, 1):
                n += bool(line.strip())
                if n == index:
                    return f" (line {lineno})"
    except (OSError, UnicodeDecodeError):
        pass
    return ""


def where(spec, split: str, path: Path | None) -> str:
    return str(path) if path is not None else f"{spec.hub_id} split {split!r}"


def check_columns(spec, split: str, path: Path | None, columns: list[str], n_rows: int) -> None:
    src = where(spec, split, path)
    if n_rows == 0:
        raise DataError(f"{src}: has no rows; a split needs data (check the file, or dataset.splits)")
    missing = [f for f in spec.fields if f not in columns]
    if missing:
        raise DataError(f"{src}: field(s) {', '.join(map(repr, missing))} missing from every row "
                        f"(columns: {', '.join(columns)}); dataset {spec.name!r} reads "
                        f"{', '.join(spec.fields)}")


def check_rows(spec, split: str, path: Path | None, indexed_rows) -> None:
    """Raise DataError for the drawn rows ((index, row) pairs) that a formatter cannot use."""
    problems, count = [], 0
    for idx, row in indexed_rows:
        for field, why in row_problems(spec, row):
            count += 1
            if len(problems) < MAX_REPORTED:
                problems.append((idx, field, why))
    if problems:
        raise DataError(_report(spec, split, path, problems, count))


def _report(spec, split, path, problems, count) -> str:
    src = where(spec, split, path)
    lines = [f"{src}: row {idx}{line_of(path, idx)}: field {field!r} {why}" for idx, field, why in problems]
    more = f"\n... and {count - len(problems)} more problem(s)" if count > len(problems) else ""
    return "\n".join(lines) + more + f"\nfix or remove these rows of {src}; nothing was trained"


def scan_file(spec, split: str, path: Path, error: Exception) -> DataError:
    """Why the JSON reader could not load `path`: the first malformed line, else row problems, else
    the reader's own message (always naming the file)."""
    problems, count, rows = [], 0, 0
    try:
        with _open(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    return DataError(f"{path}:{lineno}: not valid JSON ({e}); each line must be one JSON object")
                if not isinstance(row, dict):
                    return DataError(f"{path}:{lineno}: a line must be a JSON object, not {type(row).__name__}")
                for field, why in row_problems(spec, row):
                    count += 1
                    if len(problems) < MAX_REPORTED:
                        problems.append((rows, field, why))
                rows += 1
    except UnicodeDecodeError:
        return DataError(f"{path}: not UTF-8 text; a data file is JSON lines (optionally .gz)")
    except (OSError, EOFError) as e:
        return DataError(f"{path}: cannot be read: {e}")
    if rows == 0:
        return DataError(f"{path}: has no rows; a split needs data (check the file, or dataset.splits)")
    if problems:
        return DataError(_report(spec, split, path, problems, count))
    return DataError(f"{path}: the JSON reader failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
