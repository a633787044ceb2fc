"""gaga's import graph, read from the source with `ast` (imports inside functions included): no cycles.

Nodes are module files (a package is its __init__.py); an edge A -> B means A's file imports B, where
`from gaga.x import name` counts as importing gaga.x and also the submodule that gaga.x re-exports `name` from.
A package's __init__.py importing its own submodules is not an edge (the submodules need the package anyway).
Neither the module graph nor its collapse to subpackages (gaga.data, gaga.io, ...) may have a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "gaga"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, module: str) -> list[tuple[str, str | None]]:
    """(module, imported name or None) of every import statement in the file, relative ones resolved."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            found += [(base, alias.name) for alias in node.names]
    return found


def build_graph() -> dict[str, set[str]]:
    files = {module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}
    imports = {module: imported_names(path, module) for module, path in files.items()}
    # which submodule each package's __init__.py takes a re-exported name from
    reexports = {
        (package, name): source
        for package, path in files.items()
        if path.name == "__init__.py"
        for source, name in imports[package]
        if name and source in files and source != package
    }

    def owner(dotted: str) -> str | None:
        """The gaga module file that a dotted name lives in (the longest existing module prefix)."""
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in files:
                return ".".join(parts[:end])
        return None

    graph: dict[str, set[str]] = {module: set() for module in files}
    for module, names in imports.items():
        for source, name in names:
            if not (source == "gaga" or source.startswith("gaga.")):
                continue
            targets = {owner(source)}
            if name is not None:
                targets |= {owner(f"{source}.{name}"), reexports.get((source, name))}
            own_children = module + "." if files[module].name == "__init__.py" else None
            graph[module] |= {
                target
                for target in targets
                if target and target != module and not (own_children and target.startswith(own_children))
            }
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle [a, b, ..., a] of the graph, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return build_graph()


def test_graph_sees_lazy_and_reexported_imports(graph):
    assert "gaga.metrics.rdkit_molecules" in graph["gaga.io.sdf"]  # imported inside write_sdf
    assert "gaga.data.molecules" in graph["gaga.io.xyz"]
    assert {"gaga.io", "gaga.io.formats"} <= graph["gaga.evaluate"]  # `from gaga.io import read_molecules`, lazily


def test_no_import_cycle_between_modules(graph):
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_import_cycle_between_subpackages(graph):
    def subpackage(module: str) -> str:
        return ".".join(module.split(".")[:2])

    collapsed: dict[str, set[str]] = {}
    for module, targets in graph.items():
        collapsed.setdefault(subpackage(module), set()).update(
            subpackage(target) for target in targets if subpackage(target) != subpackage(module)
        )
    assert find_cycle(collapsed) is None, " -> ".join(find_cycle(collapsed))


def test_rdkit_reader_does_not_import_drugs(graph):
    assert "gaga.data.drugs" not in graph["gaga.data.rdkit_io"]


def test_metrics_do_not_import_io(graph):
    """gaga.io writes SDF with gaga.metrics' bonds, so gaga.metrics must not need gaga.io."""
    offenders = {
        module: sorted(target for target in targets if target == "gaga.io" or target.startswith("gaga.io."))
        for module, targets in graph.items()
        if module == "gaga.metrics" or module.startswith("gaga.metrics.")
    }
    assert not {module: targets for module, targets in offenders.items() if targets}


def test_drawing_libraries_load_only_when_a_picture_is_drawn():
    """sample.py's and evaluate's modules, and gaga.pictures itself, import neither matplotlib nor RDKit's drawing
    code until a picture is asked for (a fresh interpreter, so nothing else has imported them)."""
    import subprocess
    import sys

    modules = "gaga.sampling, gaga.cli, gaga.evaluate, gaga.pictures.write, gaga.pictures.grid, gaga.pictures.chain"
    code = (
        f"import sys, {modules}\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] == 'matplotlib' or m.startswith('rdkit.Chem.Draw')]\n"
        "print(loaded)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
