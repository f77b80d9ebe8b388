"""The import layers of docs/architecture.md, enforced: who may import whom, no cycles, no
private names reached across packages. Reads the source (``ast``); imports nothing."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ringkernel"

#: Lower numbers are lower layers. A module may import its own unit and lower layers only;
#: units of one layer are independent of each other. (Keep docs/architecture.md in step.)
LAYERS: dict[str, int] = {
    "errors": 0, "_fileio": 0, "_layout": 0, "_versions": 0, "_current": 0,
    "driver": 1,
    "config": 2,
    "device": 3, "native": 3,
    "launch": 4,
    "compile": 5, "memory": 5, "streams": 5,
    "kernel": 6,
    "benchmark": 7, "kernels": 7, "profiling": 7, "messaging": 7, "hybrid": 7,
    "context": 8, "cli": 8, "__main__": 9,
    "ringkernel": 10,  # the package's __init__: re-exports everything
}  # fmt: skip


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ringkernel"


class _Imports(ast.NodeVisitor):
    """Every ``import``/``from ... import`` outside ``if TYPE_CHECKING:`` blocks."""

    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.module, self.known = module, known
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[tuple[str, str | None, int]] = []  # (target module, imported name, line)

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            for stmt in node.orelse:
                self.visit(stmt)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.startswith("ringkernel"):
                self.found.append((alias.name, None, node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        elif node.module and node.module.startswith("ringkernel"):
            target = node.module
        else:
            return
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            if sub in self.known:  # `from . import driver`: the submodule itself
                self.found.append((sub, None, node.lineno))
            else:
                self.found.append((target, alias.name, node.lineno))


def _graph() -> dict[str, list[tuple[str, str | None, int]]]:
    mods = _modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        v = _Imports(name, path.name == "__init__.py", known)
        v.visit(ast.parse(path.read_text(), str(path)))
        graph[name] = v.found
    return graph


def test_every_unit_has_a_layer() -> None:
    missing = sorted({_unit(m) for m in _modules()} - set(LAYERS))
    assert not missing, f"add these to LAYERS (and docs/architecture.md): {missing}"


def test_imports_go_down_the_layers() -> None:
    bad = []
    for module, imports in _graph().items():
        mu = _unit(module)
        for target, name, line in imports:
            tu = _unit(target)
            if tu == mu or (target == "ringkernel" and name == "__version__"):
                continue
            if LAYERS[tu] >= LAYERS[mu]:
                bad.append(f"{module}:{line} imports {target} (layer {LAYERS[tu]} >= {LAYERS[mu]})")
    assert not bad, "\n".join(bad)


def test_no_private_names_across_packages() -> None:
    bad = []
    for module, imports in _graph().items():
        for target, name, line in imports:
            if _unit(target) == _unit(module):
                continue
            if target.split(".")[-1].startswith("_") and target.count(".") == 1:
                continue  # ringkernel._fileio and friends: the root package's shared internals
            if name is not None and name.startswith("_") and name != "__version__":
                bad.append(f"{module}:{line} imports {target}.{name}")
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    graph = {m: sorted({t for t, _, _ in imps if t in _modules() and t != m}) for m, imps in _graph().items()}
    # A package's __init__ re-exports its modules; importing a sibling through the package is
    # the same edge as importing the module, so the package node is not a cycle by itself.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, []):
            if path and nxt == path[0].rpartition(".")[0]:
                continue
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif state.get(nxt) is None:
                visit(nxt, path + [nxt])
        state[node] = 2

    for m in sorted(graph):
        if state.get(m) is None:
            visit(m, [m])
    real = [c for c in cycles if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:]))]
    assert not real, "\n".join(" -> ".join(c) for c in real)
