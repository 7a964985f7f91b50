"""The shape of the package, held by tests: stages import only the stages before them, no import cycle
anywhere, and nothing below the edge reads the environment."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest
from importlinter.cli import lint_imports

PACKAGE = Path(__file__).resolve().parent.parent / "llmkube_components"
# The edges: the stack program, the command line, and a component made without settings (the edge of
# someone else's program). Everything else gets its settings passed down.
EDGES = {"program.py", "cli.py", "components.py"}


def test_the_import_contracts_in_pyproject_hold() -> None:
    # Layers (api -> sources -> resolve -> checks -> planner -> builders -> pipeline -> components) and the
    # forbidden imports; `lint-imports` prints which import breaks which contract.
    assert lint_imports(config_filename=str(PACKAGE.parent / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. every import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph.find_modules_directly_imported_by(module)):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_anywhere_in_the_package() -> None:
    assert _cycles(grimp.build_graph("llmkube_components", cache_dir=None)) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=a, imported=b)
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]


def _reads_environment(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv", "unsetenv"):
            if isinstance(node.value, ast.Name) and node.value.id == "os":
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and any(alias.name in ("environ", "getenv") for alias in node.names)
        ):
            lines.append(node.lineno)
    return lines


BELOW_THE_EDGE = sorted(p for p in PACKAGE.rglob("*.py") if not (p.parent == PACKAGE and p.name in EDGES))


@pytest.mark.parametrize("path", BELOW_THE_EDGE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_below_the_edge_reads_the_environment(path: Path) -> None:
    lines = _reads_environment(ast.parse(path.read_text()))
    assert lines == [], f"{path.relative_to(PACKAGE)} reads os.environ at lines {lines}: pass a Settings instead"


def test_the_environment_check_sees_a_read() -> None:
    assert _reads_environment(ast.parse("import os\nx = os.environ.get('A')\n")) == [2]
    assert _reads_environment(ast.parse("from os import environ\n")) == [1]


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def _writes_environment(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Del) and _is_environ(node.value):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            mutates = node.func.attr in ("update", "setdefault", "pop", "clear") and _is_environ(node.func.value)
            if mutates or node.func.attr in ("putenv", "unsetenv"):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_writes_the_environment(path: Path) -> None:
    # Not even the CLI: a setting is passed down in Settings, never smuggled through os.environ.
    assert _writes_environment(ast.parse(path.read_text())) == []


def test_the_write_check_sees_a_write() -> None:
    code = "import os\nos.environ['A'] = '1'\nos.environ.setdefault('B', '2')\nos.putenv('C', '3')\n"
    assert _writes_environment(ast.parse(code)) == [2, 3, 4]
