"""The floor plan: core below everything, export and runtimes independent, bench composing them, no cycles.

Imports are read from the source (every ``import`` statement, inside functions too), so a lazy import
against the layering fails here as surely as a module-level one.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "export", "runtimes", "bench")
# package -> packages it must never import
FORBIDDEN = {
    "core": {"export", "runtimes", "bench"},
    "export": {"runtimes", "bench"},
    "runtimes": {"export", "bench"},
    "bench": set(),
}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    name = module_name(path, root)
    package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def project_modules(root: Path = ROOT) -> dict[str, set[str]]:
    modules = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            modules[module_name(path, root)] = imports_of(path, root)
    return modules


def node_of(module: str, known: set[str]) -> str:
    """Subpackages are one node each (bench.harness, export.models); top-level modules are their own."""
    parts = module.split(".")
    for depth in range(len(parts), 0, -1):
        prefix = ".".join(parts[:depth])
        if prefix in known:
            module = prefix
            break
    parts = module.split(".")
    if len(parts) >= 2 and (ROOT / parts[0] / parts[1]).is_dir():
        return ".".join(parts[:2])
    return module


def wrong_imports(modules: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, imported in sorted(modules.items()):
        top = module.split(".")[0]
        for name in sorted(imported):
            if name.split(".")[0] in FORBIDDEN[top]:
                wrong.append(f"{module} imports {name}")
    return wrong


def test_no_import_points_the_wrong_way():
    wrong = wrong_imports(project_modules())
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_package_level_import_cycle():
    modules = project_modules()
    known = set(modules)
    graph: dict[str, set[str]] = defaultdict(set)
    for module, imported in modules.items():
        source = node_of(module, known)
        for name in imported:
            target = node_of(name, known)
            if target != source and not source.startswith(target + ".") and not target.startswith(source + "."):
                graph[source].add(target)
    cycles = [component for component in strongly_connected(graph) if len(component) > 1]
    assert not cycles, f"import cycles between packages/modules: {cycles}"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative enough for this graph's size)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            result.append(sorted(component))

    for node in sorted(set(graph) | {t for targets in graph.values() for t in targets}):
        if node not in index:
            visit(node)
    return result


def test_the_checks_catch_a_wrong_import(tmp_path):
    """The layering test itself fails on a violation and a cycle, planted in a copy of the tree's layout (never in
    the source tree itself)."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert [c for c in strongly_connected(graph) if len(c) > 1] == [["a", "b"]]
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "core" / "planted.py").write_text("def f():\n    from bench.cell import run_cell\n")
    assert wrong_imports(project_modules(tmp_path)) == ["core.planted imports bench.cell",
                                                       "core.planted imports bench.cell.run_cell"]


MAX_MODULE_LINES = 400


def test_modules_stay_small():
    big = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            lines = len(path.read_text().splitlines())
            if lines > MAX_MODULE_LINES:
                big.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"


MAX_FUNCTION_LINES = 60
WHOLE = "# whole:"  # a function longer than the limit says, on its first lines, why it is better whole


def test_functions_stay_short():
    long = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            source = path.read_text()
            lines = source.splitlines()
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = node.end_lineno - node.lineno + 1
                    head = "\n".join(lines[node.lineno - 1: node.lineno + 3])
                    if length > MAX_FUNCTION_LINES and WHOLE not in head:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines without a '{WHOLE}' reason: {long}"
