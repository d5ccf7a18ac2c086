"""The house rules of llem/: each room in its layer, imports only downward, no circles.

docs/architecture.md is the map; this test is how CI keeps it true. It reads llem/ with
``ast`` (nothing is imported), so it also sees imports inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "llem"

#: Layer of each room (a module or a package prefix); an import may go to a lower layer,
#: or sideways within a layer when that makes no circle.
LAYERS: dict[str, int] = {
    "llem.errors": 0, "llem._files": 0, "llem._input": 0, "llem._version": 0, "llem.plugins": 0, "llem.timing": 0,
    "llem.exporter_registry": 0,
    "llem.spec": 1,
    "llem.machine": 2, "llem.energy": 2, "llem.models": 2, "llem.prompts": 2, "llem.testing": 2,
    "llem._fake_pynvml": 2,
    "llem.sections": 3, "llem._config_types": 3, "llem.config": 3, "llem.options": 3,
    "llem.backends": 3,
    "llem.results": 4,
    "llem.runner": 5, "llem.progress": 5,
    "llem.plots": 6, "llem.report": 6,
    "llem.study": 7,
    "llem.widgets": 8, "llem.magic": 8, "llem.magic_keep": 8, "llem.cli": 8, "llem.demo": 8,
    "llem.gpucheck": 8,
}

#: The allowed imports upward: (importer, imported) with the reason.
UPWARD_ALLOWED: dict[tuple[str, str], str] = {
    ("llem.study", "llem.widgets"): "the sweep's notebook progress hook (llem.study.api imports "
                                    "llem.widgets.sweep inside sweep(), only in a running notebook)",
}

#: Violations being removed by the redesign's open branches. Each must still occur: delete it
#: when it is fixed (none is left).
PENDING: set[str] = set()
_SEEN: set[str] = set()


def _check(found: list[str], what: str) -> None:
    _SEEN.update(f for f in found if f in PENDING)
    new = sorted(f for f in found if f not in PENDING)
    assert not new, f"{what}:\n" + "\n".join(new)


#: Rooms that may import these front-end packages; nothing else may.
FRONT_END = ("IPython", "ipywidgets", "click")
FRONT_END_ROOMS = ("llem.widgets", "llem.magic", "llem.cli", "llem.demo")


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def room(module: str) -> str | None:
    """The longest LAYERS key that ``module`` is or is inside."""
    best = None
    for key in LAYERS:
        if (module == key or module.startswith(key + ".")) and (best is None or len(key) > len(best)):
            best = key
    return best


def _owner(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> list[tuple[str, int]]:
    """(imported name, line) for every import in ``module``, relative ones resolved."""
    path = MODULES[module]
    pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            out.append((base, node.lineno))
            out += [(f"{base}.{a.name}", node.lineno) for a in node.names
                    if f"{base}.{a.name}" in MODULES]
    return out


def llem_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        if m == "llem":
            continue
        for name, _ in imports(m):
            if name.startswith("llem"):
                target = _owner(name)
                if target and target not in (m, "llem"):
                    edges[m].add(target)
    return edges


def test_every_room_has_a_layer():
    missing = sorted(m for m in MODULES if m != "llem" and room(m) is None)
    assert not missing, f"add these modules to LAYERS here and to docs/architecture.md: {missing}"


def test_imports_go_only_downward():
    bad = []
    for m, targets in llem_edges().items():
        if m == "llem":
            continue
        for t in targets:
            lm, lt = LAYERS[room(m)], LAYERS[room(t)]
            if lt > lm and (room(m), room(t)) not in UPWARD_ALLOWED:
                bad.append(f"{m} (L{lm}) imports {t} (L{lt})")
    _check(bad, "imports upward")


def test_no_import_circles():
    edges = llem_edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append("circle " + " <-> ".join(sorted(comp)))

    for v in edges:
        if v not in index:
            visit(v)
    _check(circles, "import circles")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("llem.spec")))
def test_spec_imports_only_errors(module):
    bad = [n for n, _ in imports(module) if n.startswith("llem") and not n.startswith("llem.spec")
           and n != "llem.errors" and not n.startswith("llem.errors.")]
    assert not bad, f"{module} imports {bad}: the table imports nothing of llem but errors"
    third = [n for n, _ in imports(module) if n.split(".")[0] in ("traitlets", "torch", "IPython")]
    assert not third, f"{module} imports {third}"


def test_energy_and_machine_never_import_config_runner_or_results():
    forbidden = ("llem.config", "llem.sections", "llem.runner", "llem.results", "llem.backends")
    for m in MODULES:
        if room(m) in ("llem.energy", "llem.machine"):
            bad = [n for n, _ in imports(m) if n.startswith(forbidden)]
            assert not bad, f"{m} imports {bad}"


def test_results_never_import_backends_report_or_plots():
    bad = []
    for m in MODULES:
        if room(m) == "llem.results":
            bad += sorted({f"{m} imports {_owner(n)}" for n, _ in imports(m)
                           if n.startswith(("llem.backends", "llem.report", "llem.plots"))})
    _check(bad, "results imports what is above it")


def test_only_the_front_ends_import_ipython_ipywidgets_or_click():
    for m in MODULES:
        if m == "llem" or room(m) in FRONT_END_ROOMS:
            continue
        bad = [(n, line) for n, line in imports(m) if n.split(".")[0] in FRONT_END]
        assert not bad, f"{m} imports {bad}; only {', '.join(FRONT_END_ROOMS)} may"


def test_no_room_is_oversized():
    big = [f"oversized {m}" for m, p in MODULES.items() if sum(1 for _ in p.open(encoding="utf-8")) > 800]
    _check(big, "rooms over 800 lines (split them by job)")


def test_zz_every_pending_violation_still_occurs():
    """A fixed violation leaves PENDING, so the list only shrinks (runs after the others)."""
    gone = sorted(PENDING - _SEEN)
    assert not gone, f"these are fixed: remove them from PENDING in tests/test_layers.py: {gone}"


def test_the_one_upward_import_is_the_sweep_progress_hook():
    up = sorted((m, n) for m in MODULES if room(m) == "llem.study"
                for n, _ in imports(m) if n.startswith("llem.widgets"))
    assert up == [("llem.study.api", "llem.widgets.sweep")], f"only sweep()'s progress hook may: {up}"


def local_imports(module: str) -> list[tuple[str, int]]:
    """(imported llem name, line) for the imports of ``module`` made inside a function."""
    out: list[tuple[str, int]] = []
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "llem"]
                elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("llem")):
                    out.append((node.module or ".", node.lineno))
    return out


#: Sideways edges forbidden inside a layer: (importer room, imported room).
SIDEWAYS_FORBIDDEN = {("llem.plots", "llem.report"): "the report draws with plots, never the reverse"}


def test_forbidden_sideways_imports():
    bad = [f"{m} imports {t}: {why}" for m, targets in llem_edges().items() if m != "llem"
           for t in targets for (a, b), why in SIDEWAYS_FORBIDDEN.items() if room(m) == a and room(t) == b]
    assert not bad, "\n".join(bad)


def test_timing_imports_nothing_of_llem():
    """Token times sit below both the backends and the results: they import nothing of llem."""
    assert not [n for n, _ in imports("llem.timing") if n.startswith("llem")]
    from llem.backends.base import TokenTimes as from_backends
    from llem.results.result import RequestRecord
    from llem.timing import TokenTimes

    assert from_backends is TokenTimes and issubclass(RequestRecord, TokenTimes)


@pytest.mark.parametrize("room_name", ["llem.results", "llem.report", "llem.plots"])
def test_no_function_local_import_of_llem_in_the_output_rooms(room_name):
    """A function-local import of llem's own modules is how a circle hides; these rooms have none."""
    local = [f"{m}:{line} imports {n} inside a function" for m in MODULES if room(m) == room_name
             for n, line in local_imports(m)]
    assert not local, "\n".join(local)
