"""The output rooms import only downward: results -> (nothing above), plots -> results, report -> both.

Read from the source with ``ast`` (no module is imported): every ``import llem.x`` and
``from llem.x import ...`` in llem/, at module level or inside a function. The lead will
generalise this into the full layer test (L0..L8 of DESIGN.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LLEM = Path(__file__).resolve().parents[1] / "llem"

#: room -> the rooms it must never import
FORBIDDEN = {
    "llem.results": {"llem.backends", "llem.report", "llem.plots", "llem.runner", "llem.run", "llem.sweep",
                     "llem.study", "llem.widgets", "llem.magic", "llem.cli", "llem.demo"},
    "llem.plots": {"llem.report", "llem.backends", "llem.widgets", "llem.magic", "llem.cli"},
    "llem.report": {"llem.backends", "llem.widgets", "llem.magic", "llem.cli"},
    "llem.timing": {"llem"},  # L2 below backends and results: nothing of llem at all
    "llem.exporter_registry": {"llem.results", "llem.report", "llem.plots", "llem.backends"},
}
ROOMS = ("llem.results", "llem.report", "llem.plots")


def _module_name(path: Path) -> str:
    rel = path.relative_to(LLEM.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, bool, int]]:
    """``(imported llem module, inside a function, line)`` for every import of llem in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, local, child.lineno) for a in child.names if a.name.split(".")[0] == "llem")
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    mod = f"{base}.{child.module}" if child.module else base
                else:
                    mod = child.module or ""
                if mod.split(".")[0] != "llem":
                    continue
                if mod == "llem":  # from llem import spec, report ...: each name is a module
                    out.extend((f"llem.{a.name}", local, child.lineno) for a in child.names)
                else:
                    out.append((mod, local, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return out


def _room(module: str) -> str:
    for room in (*FORBIDDEN, "llem.backends", "llem.widgets", "llem.spec", "llem.energy"):
        if module == room or module.startswith(room + "."):
            return room
    return module


GRAPH = {_module_name(p): _imports(p) for p in sorted(LLEM.rglob("*.py"))}


def _edges(room: str) -> list[tuple[str, str, bool, int]]:
    return [(src, dst, local, line) for src, imps in GRAPH.items() if _room(src) == room
            for dst, local, line in imps]


def test_the_graph_is_read():
    assert "llem.results.result" in GRAPH and "llem.report.content" in GRAPH and "llem.plots" in GRAPH
    assert any(dst == "llem.results" for _, dst, _, _ in _edges("llem.plots"))


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_a_room_never_imports_upward(room):
    bad = []
    for src, dst, _local, line in _edges(room):
        for f in FORBIDDEN[room]:
            if f == "llem" and _room(dst) != room:
                bad.append(f"{src}:{line} imports {dst}")
            elif dst == f or dst.startswith(f + "."):
                bad.append(f"{src}:{line} imports {dst}")
    assert not bad, "\n".join(bad)


def test_no_circle_between_results_report_and_plots():
    reach = {r: {_room(dst) for _, dst, _, _ in _edges(r)} & set(ROOMS) - {r} for r in ROOMS}
    assert reach["llem.results"] == set()
    assert reach["llem.plots"] <= {"llem.results"}
    assert reach["llem.report"] <= {"llem.results", "llem.plots"}
    # and the closure has no circle
    for start in ROOMS:
        seen, todo = set(), list(reach[start])
        while todo:
            r = todo.pop()
            assert r != start, f"{start} reaches itself through {sorted(seen)}"
            if r not in seen:
                seen.add(r)
                todo.extend(reach[r])


@pytest.mark.parametrize("room", ROOMS)
def test_no_function_local_import_of_llem_in_the_output_rooms(room):
    """A function-local import of llem's own modules is how a circle hides; these rooms have none."""
    local = [f"{src}:{line} imports {dst} inside a function" for src, dst, is_local, line in _edges(room)
             if is_local]
    assert not local, "\n".join(local)


def test_token_times_live_below_backends_and_results():
    from llem.backends.base import TokenTimes as from_backends
    from llem.results.result import RequestRecord
    from llem.timing import TokenTimes

    assert from_backends is TokenTimes and issubclass(RequestRecord, TokenTimes)
    assert not any(dst.startswith("llem.backends") for _, dst, _, _ in _edges("llem.results"))


def test_no_module_of_the_output_rooms_is_oversized():
    for path in [*LLEM.joinpath("results").glob("*.py"), *LLEM.joinpath("report").glob("*.py"),
                 LLEM / "plots.py"]:
        n = len(path.read_text(encoding="utf-8").splitlines())
        assert n <= 800, f"{path.relative_to(LLEM.parent)} has {n} lines (keep a module under ~800)"
