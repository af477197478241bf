"""The shape of the code (docs/architecture.md): no import cycle among harness/, vision/ and bench/ (imports
inside functions count: they run too, and a cycle there is a layering error that only bites later), and
no module over MAX_LINES lines. Both are read from the source with `ast`, so nothing is imported."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "vision", "bench")
MAX_LINES = 350


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _resolve(name: str, modules) -> str | None:
    """The longest known module that `name` names or lies in (`harness.data.DATASETS` -> `harness.data`)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules) -> dict[str, int]:
    """Modules of the project that `module` imports anywhere in its body (module level, functions, methods,
    `if TYPE_CHECKING` blocks), absolute or relative -> the first line importing it."""
    out: dict[str, int] = {}
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import name`: name may be a submodule (an edge to it) or an attribute (an edge to pkg)
            names = [f"{mod}.{a.name}" for a in node.names] or [mod]
        for name in names:
            target = _resolve(name, modules)
            if target and target != module:
                out.setdefault(target, node.lineno)
    return out


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    modules = module_files(root)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def components(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, comps, counter = {}, {}, [], set(), [], [0]

    def visit(root):
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One concrete cycle m0 -> m1 -> ... -> m0 per component, so that a failure names imports to cut."""
    return [_one_cycle(graph, comp) for comp in components(graph)]


def _one_cycle(graph, comp: list[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first inside the component)."""
    start, inside = comp[0], set(comp)
    prev, queue = {start: None}, [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w in inside and w not in prev:
                prev[w] = v
                queue.append(w)
    return comp


def describe(graph, cycle: list[str]) -> str:
    files = module_files()
    return " -> ".join(cycle) + "  (" + "; ".join(
        f"{files[a].relative_to(ROOT)}:{graph[a][b]} imports {b}" for a, b in zip(cycle, cycle[1:])) + ")"


def test_no_import_cycles():
    graph = import_graph()
    found = components(graph)
    assert not found, "import cycles (move the shared code down a layer, see docs/architecture.md):\n" + \
        "\n".join(f"{describe(graph, _one_cycle(graph, c))}; all of {c}" for c in found)


def test_no_module_over_max_lines():
    long = {str(p.relative_to(ROOT)): n for p in module_files().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"


# -- the checker itself must catch what it is for -------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir(exist_ok=True)
    return tmp_path


def test_checker_finds_function_level_and_relative_cycles(tmp_path):
    root = _tree(tmp_path, {
        "harness/__init__.py": "",
        "harness/a.py": "def f():\n    from .b import g\n",              # relative, inside a function
        "harness/b.py": "import harness.c\n",
        "harness/c.py": "from harness import a\n",                       # `from pkg import submodule`
        "vision/__init__.py": "",
        "vision/x.py": "from harness.data import DATASETS\n",            # attribute of a package
        "harness/data/__init__.py": "from ..a import f\n",
        "harness/d.py": "from . import e\n",
        "harness/e.py": "class K:\n    def m(self):\n        from harness.d import x\n",   # method-level
    })
    graph = import_graph(root)
    assert graph["vision.x"] == {"harness.data": 1}
    found = cycles(graph)
    assert sorted(map(tuple, found)) == [("harness.a", "harness.b", "harness.c", "harness.a"),
                                          ("harness.d", "harness.e", "harness.d")]


def test_checker_passes_a_layered_tree(tmp_path):
    root = _tree(tmp_path, {"harness/__init__.py": "", "harness/low.py": "import os\n",
                            "harness/high.py": "from .low import x\nfrom . import low\n",
                            "vision/__init__.py": "", "vision/top.py": "def f():\n    import harness.high\n"})
    assert cycles(import_graph(root)) == []


@pytest.mark.parametrize("pkg", PACKAGES)
def test_packages_are_scanned(pkg):
    assert any(m == pkg or m.startswith(pkg + ".") for m in module_files()), pkg
