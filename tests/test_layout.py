"""The house rules that code review alone would let slip: read from the source, nothing is imported.

- the import graph of gantools has no cycles, counting imports inside functions (but not the
  `if TYPE_CHECKING:` imports, which never run);
- no module imports another module's private (`_name`) names;
- files outside cli/ and scenes/ stay readable in one sitting, and functions stay short unless a
  comment beginning `# long:` says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gantools"
MAX_FILE_LINES = 620  # "about 600"
MAX_FUNCTION_LINES = 80
LONG_MARKER = "# long:"
EXEMPT_FROM_FILE_LIMIT = ("cli", "scenes")  # command modules and scene drawing read as lists, not logic


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, at any depth, except inside `if TYPE_CHECKING:` blocks (those imports never run)."""
    nodes, stack = [], [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
            else:
                stack.append(child)
    return nodes


def _imports(name: str) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every import that runs, at any depth."""
    found = []
    for node in _runtime_nodes(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.startswith("gantools")]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(name, node)
            if not target.startswith("gantools"):
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.append((submodule, "", node.lineno) if submodule in MODULES else (target, alias.name, node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for target, _, _ in _imports(name):
            if target in MODULES and target not in (name, "gantools"):
                graph[name].add(target)
            # importing a.b.c runs a/__init__ and a/b/__init__ first: edges too, except to the importer's
            # own enclosing packages, which are already running by the time it is imported
            parts = target.split(".")
            for i in range(2, len(parts)):
                parent = ".".join(parts[:i])
                if parent in MODULES and not name.startswith(parent + "."):
                    graph[name].add(parent)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return components


def test_the_checker_sees_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_has_no_cycles() -> None:
    graph = _graph()
    assert sum(map(len, graph.values())) > 20, "the import reader found almost no imports"
    assert _cycles(graph) == []


def test_no_module_imports_another_modules_private_names() -> None:
    offences = [f"{name}:{line} takes {target}.{imported}"
                for name in MODULES for target, imported, line in _imports(name)
                if imported.startswith("_") and not imported.startswith("__") and target != name]
    assert offences == []


def test_files_are_readable_in_one_sitting() -> None:
    too_long = [f"{name} ({n} lines)" for name, path in MODULES.items()
                if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
                and name.split(".")[1:2] and name.split(".")[1] not in EXEMPT_FROM_FILE_LIMIT]
    assert too_long == []


def test_functions_are_short_or_say_why() -> None:
    too_long = []
    for name, path in MODULES.items():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                body = lines[node.lineno - 1: node.end_lineno]
                if length > MAX_FUNCTION_LINES and not any(LONG_MARKER in line for line in body):
                    too_long.append(f"{name}.{node.name} ({length} lines)")
    assert too_long == []
