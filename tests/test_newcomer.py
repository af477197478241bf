"""Issue #15 (newcomer): fast commands, clear "nothing found" errors, a fuller `w2s env`, `w2s ui` that
stops its process group and fails on a busy port, and a quirk list the docs can cite."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "pandas", "transformers", "mlflow", "deepspeed")
_PROBE = """
import json, sys
from harness.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


def _heavy_imports(*args: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    return json.loads(r.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [("validate", "experiments/quickstart.yaml"), ("--help",), ("plan", "--help")])
def test_light_commands_do_not_import_heavy_libraries(args):
    # torch alone costs 1-2 s of import: checking a YAML file must not pay for it
    assert _heavy_imports(*args) == []
