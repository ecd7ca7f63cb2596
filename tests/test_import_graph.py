"""The import graph of ir/, passes/ and backends/ has the layering DESIGN.md promises.

Built with `ast` from the source (no module is imported), counting module-level AND
function-level imports: an import moved into a function to dodge a circle is still a
circle. Folders map to packages as pyproject's package-dir does (ir/ -> graphc.ir, ...).
No implicit edge is drawn from a module to its parent package: Python runs the parent's
``__init__`` first, but that is load order, not a dependency the module chose.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
# folder -> package, as [tool.setuptools] package-dir maps them
PACKAGES = {"ir": "graphc.ir", "passes": "graphc.passes", "backends": "graphc.backends"}

def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    parts[0] = PACKAGES[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    """Every module of the three packages, by dotted name."""
    out = {}
    for folder in PACKAGES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            out[_module_name(path)] = path
    return out


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a (possibly relative) `from X import` / `import X` target."""
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def import_graph() -> nx.DiGraph:
    """Directed graph: an edge A -> B when module A imports B anywhere in its source."""
    modules = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_pkg, node.level, node.module)
                # `from . import kernel` names a submodule; `from .x import f` names module x
                subs = [f"{base}.{a.name}" for a in node.names]
                hits = [s for s in subs if s in modules]
                targets = hits if len(hits) == len(subs) else hits + [base]
            for t in targets:
                if t.startswith("graphc") and t != name:
                    g.add_edge(name, t)
    return g


def _in(pkg: str, mod: str) -> bool:
    return mod == pkg or mod.startswith(pkg + ".")


def _cycles(g: nx.DiGraph, pkg: str) -> dict[frozenset[str], list[str]]:
    """Each simple cycle among pkg's modules, keyed by its module set, valued in import order."""
    sub = g.subgraph([m for m in g if _in(pkg, m)])
    return {frozenset(c): c for c in nx.simple_cycles(sub)}


def _show(cycles) -> str:
    return "\n".join(" -> ".join(c + c[:1]) for c in sorted(cycles))


def test_graph_sees_function_level_and_relative_imports() -> None:
    """The builder itself can fail: known edges of each kind are present."""
    g = import_graph()
    assert g.has_edge("graphc.ir.ops.contraction", "graphc.ir.kernel")  # `from .. import kernel`
    assert g.has_edge("graphc.ir.types", "graphc.ir.dtypes")  # `from .dtypes import ...`
    assert g.has_edge("graphc.ir", "graphc.ir.ops")  # package __init__, `from . import ops`


def test_no_cycle_inside_ir() -> None:
    cycles = _cycles(import_graph(), "graphc.ir")
    assert not cycles, "import cycles inside ir/:\n" + _show(cycles.values())


# The layers of ir/, bottom first (DESIGN.md: core -> op library, kernel IR, lowering). An
# op's registry entry carries its lowering hook, so the op library sits above the kernel IR
# and the lowering helpers it builds with; group lowering (fused) reads the registry only.
IR_LAYERS = {
    "core": ["errors", "loc", "dtypes", "types", "init", "registry", "graph", "text",
             "text_print", "text_parse", "verify",
             "analysis", "compare", "emitter", "rewrite", "jsonform", "provenance", "summary",
             "observe", "widen", "reference", "tolerance", "batch", "winograd"],
    "kernel IR": ["kernel", "kernel_verify", "interpret", "interpret_scalar", "interpret_memory"],
    "lowering": ["lowering", "fused"],
    "op library": ["ops", "ops.*"],
    "checks": ["validate"],  # reference vs kernel interpreter on whole programs
}


def _layer_of(mod: str) -> int | None:
    short = mod[len("graphc.ir."):]
    for rank, names in enumerate(IR_LAYERS.values()):
        if short in names or ("ops.*" in names and short.startswith("ops.")):
            return rank
    return None


def test_ir_modules_import_only_their_layer_and_below() -> None:
    g = import_graph()
    mods = [m for m in g if m.startswith("graphc.ir.")]
    unplaced = sorted(m for m in mods if _layer_of(m) is None)
    assert not unplaced, f"place these modules in IR_LAYERS: {unplaced}"
    names = list(IR_LAYERS)
    up = sorted(f"{a} ({names[_layer_of(a)]}) -> {b} ({names[_layer_of(b)]})" for a, b in g.edges
                if a in mods and b in mods and _layer_of(b) > _layer_of(a))
    assert not up, "upward imports inside ir/:\n" + "\n".join(up)


def test_ir_imports_only_ir() -> None:
    g = import_graph()
    bad = sorted((a, b) for a, b in g.edges if _in("graphc.ir", a) and not _in("graphc.ir", b))
    assert not bad, f"ir/ imports outside ir/: {bad}"


def test_passes_and_backends_have_no_cycles() -> None:
    g = import_graph()
    found = _cycles(g, "graphc.passes") | _cycles(g, "graphc.backends")
    assert not found, "import cycles:\n" + _show(found.values())


def test_backends_import_no_pass_nor_frontend() -> None:
    """Backends import ir/ only (the driver above them, graphc/pipeline.py, runs the
    passes); passes import ir/ only."""
    g = import_graph()
    found = {(a, b) for a, b in g.edges
             if _in("graphc.backends", a) and not (_in("graphc.backends", b) or _in("graphc.ir", b))}
    found |= {(a, b) for a, b in g.edges
              if _in("graphc.passes", a) and not (_in("graphc.passes", b) or _in("graphc.ir", b))}
    assert not found, f"upward imports: {sorted(found)}"
