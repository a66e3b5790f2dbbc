"""The import graph of ``server`` and ``desktop`` (grimp, which reads every import statement, those inside
functions included): no cycles, and every import points down the layers of docs/architecture.md.

Imports under ``if TYPE_CHECKING:`` are left out: they never run, and ``server.runtime`` names the types
of the services it holds that way (those modules import it)."""

from __future__ import annotations

from collections.abc import Iterable

import grimp
import pytest

#: Who may not import whom (by package prefix). Each row is one dependency rule.
FORBIDDEN: list[tuple[str, tuple[str, ...]]] = [
    ("server", ("desktop", "PySide6", "shiboken6")),
    ("server.services", ("server.api", "server.deps", "server.app", "server.embedded")),
    ("server.providers", ("server.services", "server.api", "server.deps", "server.db", "server.schemas")),
    ("server.db", ("server.schemas", "server.services", "server.api", "server.providers")),
    ("server.schemas", ("server.services", "server.api", "server.db", "server.providers")),
    ("server.security", ("server.services", "server.api")),
    ("server.settings", ("server.services", "server.api", "server.db", "server.providers")),
    ("server.errors", ("server.services", "server.api", "server.db", "server.providers")),
]
#: The only parts of the server the desktop shell may import; everything else goes over HTTP.
DESKTOP_MAY_IMPORT = ("server.settings", "server.app", "server.embedded")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(
        "server", "desktop", include_external_packages=True, exclude_type_checking_imports=True
    )


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _ours(graph: grimp.ImportGraph) -> list[str]:
    return sorted(m for m in graph.modules if _within(m, "server") or _within(m, "desktop"))


def _where(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    details = graph.get_import_details(importer=importer, imported=imported)
    lines = ", ".join(f"line {d['line_number']}" for d in details)
    return f"{importer} -> {imported} ({lines})"


def strongly_connected(nodes: Iterable[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the groups of modules that import each other (size > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(edges.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            if children:
                child = children.pop()
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, sorted(edges.get(child, ()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def test_tarjan_finds_cycles_and_only_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": set()}
    assert strongly_connected(sorted(edges), edges) == [["a", "b", "c"]]


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    modules = _ours(graph)
    # A package's __init__ re-exporting its own submodules is not a cycle between layers.
    edges = {
        m: {i for i in graph.find_modules_directly_imported_by(m) if i in modules and not _within(m, i)}
        for m in modules
    }
    cycles = strongly_connected(modules, edges)
    detail = [
        "; ".join(_where(graph, a, b) for a in group for b in sorted(edges[a] & set(group)))
        for group in cycles
    ]
    assert not cycles, "import cycles:\n" + "\n".join(detail)


@pytest.mark.parametrize(("importer", "forbidden"), FORBIDDEN, ids=[row[0] for row in FORBIDDEN])
def test_layers_point_down(graph: grimp.ImportGraph, importer: str, forbidden: tuple[str, ...]) -> None:
    wrong = [
        _where(graph, module, imported)
        for module in _ours(graph)
        if _within(module, importer)
        for imported in sorted(graph.find_modules_directly_imported_by(module))
        if any(_within(imported, f) for f in forbidden)
    ]
    assert not wrong, f"{importer} may not import {', '.join(forbidden)}:\n" + "\n".join(wrong)


def test_desktop_uses_only_the_server_surface(graph: grimp.ImportGraph) -> None:
    wrong = [
        _where(graph, module, imported)
        for module in _ours(graph)
        if _within(module, "desktop")
        for imported in sorted(graph.find_modules_directly_imported_by(module))
        if _within(imported, "server")
        and not any(_within(imported, allowed) for allowed in DESKTOP_MAY_IMPORT)
    ]
    assert not wrong, "desktop reaches past server.settings/app/embedded:\n" + "\n".join(wrong)
