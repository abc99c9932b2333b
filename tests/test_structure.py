"""The package's shape: no import cycle, the producer side never loads the worker."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pgtaskq"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _type_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, name: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """Modules of pgtaskq that ``tree`` imports at run time (``if TYPE_CHECKING`` aside;
    imports inside functions count: they run)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:
                    found.add(submodule)
                elif base in modules:
                    found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: _imports(ast.parse(path.read_text()), name, path.name == "__init__.py", modules)
        for name, path in modules.items()
    }


def _closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(graph.get(name, ()))
        # importing a.b.c runs a/__init__ and a/b/__init__ first
        parent = name.rpartition(".")[0]
        if parent:
            todo.append(parent)
    return seen


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(graph.get(name, ())):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    return cycles


def test_no_import_cycle_inside_pgtaskq():
    assert _cycles(import_graph()) == []


NOT_PRODUCER = ("pgtaskq.worker", "pgtaskq.operations")


def _worker_side(modules: set[str]) -> set[str]:
    """The modules of the worker and operations packages among ``modules``."""
    return {m for m in modules
            if any(m == p or m.startswith(p + ".") for p in NOT_PRODUCER)}


def test_the_producer_side_never_imports_the_worker_nor_operations():
    """Not even in a function body: enqueue, get_job, cancel... never load the worker.
    (The one lazy door is ``pgtaskq.Worker``, in the root package's ``__getattr__``.)"""
    graph = import_graph()
    graph["pgtaskq"] = {m for m in graph["pgtaskq"] if not m.startswith("pgtaskq.worker")}
    for producer in ("pgtaskq", "pgtaskq.queue", "pgtaskq.task", "pgtaskq.job"):
        assert _worker_side(_closure(graph, producer)) == set(), producer


def test_importing_pgtaskq_loads_no_worker_nor_operations_module():
    code = ("import sys, pgtaskq; from pgtaskq import TaskQueue, current_job; "
            "print(sorted(m for m in sys.modules "
            "if m.startswith(('pgtaskq.worker', 'pgtaskq.operations'))))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "[]"
    code = "import pgtaskq, pgtaskq.worker; assert pgtaskq.Worker is pgtaskq.worker.Worker"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_graph_sees_imports():
    """The checks above are only as good as the graph: it must see the edges it should."""
    graph = import_graph()
    assert "pgtaskq.worker.completer" in graph["pgtaskq.worker.main"]
    assert "pgtaskq.sql.worker" in graph["pgtaskq.worker.main"]
    assert "pgtaskq.worker.main" in graph["pgtaskq.worker"]
    assert "pgtaskq.queue" in graph["pgtaskq"]


MODULE_MAX_LINES = 450
CLASS_MAX_LINES = 300
SIZE_EXEMPT = ("pgtaskq/sql/migrations.py",)
"""The schema's migrations: a history, appended to and never edited, read one at a time."""


def test_no_module_over_450_lines_and_no_class_over_300():
    too_big = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).as_posix()
        if relative in SIZE_EXEMPT or "/migrations/" in relative:
            continue
        text = path.read_text()
        if len(text.splitlines()) > MODULE_MAX_LINES:
            too_big.append(f"{relative}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1
                if size > CLASS_MAX_LINES:
                    too_big.append(f"{relative}: class {node.name}, {size} lines")
    assert too_big == []


def _readme_map() -> str:
    readme = (PACKAGE.parent / "README.rst").read_text()
    start = readme.index("::\n", readme.index("How the pieces fit\n"))  # the map itself
    return readme[start:readme.index("\nDevelopment\n", start)]


def test_the_readme_map_matches_the_tree():
    """Every module of pgtaskq is on the README's map, and everything on it exists."""
    import re

    text = _readme_map()
    named: set[str] = set()
    folder = ""
    for line in text.splitlines():
        for word in re.findall(r"[\w/]+(?:\.py|/)", line):
            if word.endswith("/"):
                folder = word if word.count("/") == 1 else folder
                named.add(word)
                continue
            if "/" in word:
                folder = word.rsplit("/", 1)[0] + "/"
                named.add(word)
            else:
                named.add(folder + word if folder and (PACKAGE / folder / word).exists()
                          else word)
    for word in named:
        assert (PACKAGE / word).exists(), f"the README names {word}, not in pgtaskq/"
    covered_folders = {w for w in named if w.endswith("/")} - {"worker/", "operations/"}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if path.name in ("__init__.py", "__main__.py", "_version.py"):
            continue
        if any(relative.startswith(folder) for folder in covered_folders):
            continue
        assert relative in named, f"pgtaskq/{relative} is missing from the README's map"
