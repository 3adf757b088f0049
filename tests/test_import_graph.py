"""No import cycle among wanr2v's modules, function-level imports included.

Every module under ``wanr2v/`` is parsed (never imported) and every import that runs
(at module level or inside a function; not under ``if TYPE_CHECKING:``) is an edge:
relative imports are resolved, ``from pkg import name`` is an edge to ``pkg.name``
when that is a module (else to ``pkg``, its ``__init__``), and an edge to a package
means its ``__init__``. The graph must be acyclic: a cycle is printed when it is not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "wanr2v"


def _modules(root: Path) -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that may run: ``if TYPE_CHECKING:`` bodies are skipped
    (their ``else:`` branch is kept)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _edges(module: str, path: Path, mods: Mapping[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                # ``import a.b.c`` runs a, a.b and a.b.c: the deepest known module counts.
                name = alias.name
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                if name:
                    out.add(name)
            continue
        if node.level:
            base = package.split(".")
            base = base[: len(base) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            if sub in mods:
                out.add(sub)  # ``from pkg import module``: that module, not pkg
            elif target in mods:
                out.add(target)  # a name defined in that module (or package __init__)
    out.discard(module)
    return {m for m in out if m.startswith("wanr2v")}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    mods = _modules(root)
    return {m: _edges(m, p, mods) for m, p in mods.items()}


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``None`` when it is acyclic."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if color[start] != WHITE:
            continue
        path = [start]
        color[start] = GREY
        iters = [iter(sorted(graph[start]))]
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                color[path.pop()] = BLACK
                iters.pop()
                continue
            state = color.get(nxt, BLACK)
            if state == GREY:
                return [*path[path.index(nxt) :], nxt]
            if state == WHITE:
                color[nxt] = GREY
                path.append(nxt)
                iters.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_wanr2v_has_no_import_cycle() -> None:
    """Every runtime import of wanr2v's modules, function-level included, forms a DAG."""
    graph = import_graph()
    assert "wanr2v._client" in graph and "wanr2v.testing._emulator" in graph
    assert "wanr2v._polling" in graph["wanr2v._client"]  # the scanner sees edges
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_function_level_imports_count(tmp_path: Path) -> None:
    """An import inside a function is an edge; one under TYPE_CHECKING is not; a
    relative ``from . import x`` is an edge to the sibling x, not to the package."""
    pkg = tmp_path / "wanr2v"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n"
    )
    (pkg / "sub" / "__init__.py").write_text("from .x import y\n")
    (pkg / "sub" / "x.py").write_text("from . import z\ny = 1\n")
    (pkg / "sub" / "z.py").write_text("import wanr2v.a\n")
    graph = import_graph(pkg)
    assert graph["wanr2v.a"] == {"wanr2v.b"}
    assert graph["wanr2v.b"] == set()
    assert graph["wanr2v.sub.x"] == {"wanr2v.sub.z"}
    assert graph["wanr2v.sub.z"] == {"wanr2v.a"}
    assert find_cycle(graph) is None
    (pkg / "b.py").write_text("import wanr2v.a\n")
    assert find_cycle(import_graph(pkg)) == ["wanr2v.a", "wanr2v.b", "wanr2v.a"]


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}, None),
        ({"a": set(), "b": {"c"}, "c": {"b"}}, ["b", "c", "b"]),
    ],
)
def test_cycle_finder(graph: dict[str, set[str]], expected: list[str] | None) -> None:
    """The cycle finder reports a synthetic cycle (so the test above can fail)."""
    assert find_cycle(graph) == expected
