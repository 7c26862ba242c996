"""No import circle between the package's top-level units (folders and modules), counting imports
inside functions too: the building blocks sit below the scorers, the scorers below the bundle, the
bundle below the pipeline, and the doors on top (issue 27). The import-order test catches circles
that break an import; this one catches the ones a function-level import hides."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import llm_recommender

PACKAGE = Path(llm_recommender.__file__).parent


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def import_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts)
        package = module[: -len(".__init__")] if module.endswith(".__init__") else module.rsplit(".", 1)[0]
        source = unit_of(module) if module != "llm_recommender.__init__" else "__init__"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
                target = ".".join(base + [node.module]) if node.level and node.module else (
                    ".".join(base) if node.level else node.module or "")
                targets = [f"{target}.{a.name}" for a in node.names] if target == "llm_recommender" else [target]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                if t.startswith("llm_recommender.") and unit_of(t) != source:
                    edges[source].add(unit_of(t))
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_package():
    edges = import_graph()
    assert "scorers" in edges["recommender"] and "protocol" in edges["scorers"]  # the reader reads imports


def test_no_import_circle_between_top_level_units():
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
