"""Every runtime dependency of the package is pinned for `make install` and locked into the trainer image.

The trainer image installs the package with --no-deps from docker/requirements.lock and runs `pip check`:
a dependency added to pyproject.toml but not to the lock breaks the image build (CI, docker tier), which is
only noticed twenty minutes into `make test`. This check costs milliseconds.
"""
import re
import tomllib

from conftest import ROOT


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _names(path, pattern=r"^([A-Za-z0-9_.\-]+)==") -> set[str]:
    return {_name(m.group(1)) for m in re.finditer(pattern, path.read_text(), re.M)}


def test_runtime_dependencies_are_pinned_and_locked():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {_name(r) for r in project["dependencies"]} - {"torch"}   # torch: a wheel per variant (requirements.in)
    pinned = _names(ROOT / "requirements.txt")
    locked = _names(ROOT / "docker" / "requirements.lock")
    assert needed - pinned == set(), "pin these in requirements.txt"
    assert needed - locked == set(), "add these to docker/requirements.in and run docker/lock.sh"
