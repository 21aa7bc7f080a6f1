"""The package's layout holds: imports flow down the pipeline, no module-level import cycle, and
every name is imported from the module that defines it.

The package's imports are read with `ast` (nothing is imported): every `import` and
`from ... import` statement, at module level and inside functions, and the lazy tables of the
package `__init__`s (`{"name": "raydistill.x.y"}`, PEP 562). The layers, lowest first, are the
folders of `raydistill/`; a module may import its own layer and the ones below it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "raydistill"
LAYERS = [
    "core",
    "data",
    "students",
    "training",
    "tracking",
    "distill",
    "search",
    "report",
    "export",
    "study",
    "cli",
]
# Modules outside the folders: `raydistill/__init__` is the facade (its public names load on
# first use and it imports nothing of the package statically, so anything may read
# `raydistill.__version__`); `__main__` runs the CLI.
TOP_LEVEL = {"raydistill": "core", "raydistill.__main__": "cli"}
# Allowed exceptions: (importer, imported) → why. None today; an entry needs its reason.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}
# Private names that may cross a module boundary: (importer, name) → why.
ALLOWED_PRIVATE = {
    ("raydistill.search", "_CellState"): "Tune pickled the searcher state of searches made "
    "before search/ was split as raydistill.search._CellState; --resume of them unpickles it",
}
# Package __init__s that may export names defined outside their own package. The facade's
# table is also exempt from the layer rule: it resolves on first attribute access, once the
# package is imported, and nothing below imports those names through it.
FACADES = {"raydistill": "the top-level load_student and the budget helpers the README shows"}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    module: str  # the module the statement names (resolved to a submodule when it is one)
    names: tuple[str, ...]  # `from module import names`; () for `import module`
    line: int
    module_level: bool  # runs when the importer is imported (not inside a function)
    type_checking: bool  # under `if TYPE_CHECKING:` (never runs)
    lazy: bool = False  # an entry of a package __init__'s PEP 562 table


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
PACKAGES = {module_name(p) for p in ROOT.rglob("__init__.py")}


def layer(module: str) -> int:
    if module in TOP_LEVEL:
        return LAYERS.index(TOP_LEVEL[module])
    return LAYERS.index(module.split(".")[1])


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, in_function: bool, in_tc: bool) -> Iterator[tuple[ast.AST, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        yield child, in_function, in_tc
        fn = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        tc = in_tc or (isinstance(child, ast.If) and _is_type_checking(child))
        yield from _walk(child, fn, tc)


def imports_of(name: str) -> list[Import]:
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    out = []
    for node, in_fn, in_tc in _walk(tree, False, False):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "raydistill":
                    out.append(Import(name, alias.name, (), node.lineno, not in_fn, in_tc))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "raydistill":
                continue
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{node.module}.{alias.name}"
                target, names = (sub, ()) if sub in MODULES else (node.module, (alias.name,))
                out.append(Import(name, target, names, node.lineno, not in_fn, in_tc))
        elif isinstance(node, ast.Dict) and name in PACKAGES:
            out += _lazy_table(name, node)
    return out


def _lazy_table(package: str, node: ast.Dict) -> list[Import]:
    """A PEP 562 table: {"name": "raydistill.x"} or {"name": ("raydistill.x", "attr")}."""
    out = []
    for key, value in zip(node.keys, node.values, strict=True):
        target = value.elts[0] if isinstance(value, ast.Tuple) and value.elts else value
        if not (isinstance(key, ast.Constant) and isinstance(target, ast.Constant)):
            continue
        if isinstance(target.value, str) and target.value.startswith("raydistill."):
            out.append(Import(package, target.value, (key.value,), key.lineno, False, False, True))
    return out


IMPORTS = [imp for name in MODULES for imp in imports_of(name)]


def defined_names(module: str) -> set[str]:
    """Names a module binds itself at top level (defs, classes, assignments), not imports."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    names: set[str] = set()
    for node, in_fn, _ in _walk(tree, False, False):
        if in_fn:
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def test_the_walk_sees_the_package():
    """The walk finds the layers' modules and their imports, function-level ones included."""
    assert {m.split(".")[1] for m in MODULES if m not in TOP_LEVEL} == set(LAYERS)
    assert sum(not i.module_level for i in IMPORTS) > 50  # the lazy imports of heavy modules
    assert any(i.lazy for i in IMPORTS)  # and the PEP 562 tables


def test_imports_flow_down_the_pipeline():
    """(a) No module imports from a layer above its own (TYPE_CHECKING imports included: a
    type from an upper layer is a dependency on it all the same)."""
    upward = [
        f"{i.importer}:{i.line} imports {i.module} ({LAYERS[layer(i.importer)]} → "
        f"{LAYERS[layer(i.module)]})"
        for i in IMPORTS
        if layer(i.module) > layer(i.importer)
        and (i.importer, i.module) not in ALLOWED_UPWARD
        and not (i.lazy and i.importer in FACADES)
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_module_level_import_cycle():
    """(b) The module-level imports form no cycle. TYPE_CHECKING imports are left out: they
    never run, so they cannot leave a module half-initialised."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for i in IMPORTS:
        if i.module_level and not i.type_checking and i.module in MODULES and not i.lazy:
            graph[i.importer].add(i.module)
    cycles = [c for c in _components(graph) if len(c) > 1 or c[0] in graph[c[0]]]
    assert not cycles, f"module-level import cycles: {cycles}"


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
            out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_name_is_imported_from_its_definition():
    """(c) `from raydistill.X import n`: when X is a module, X defines n (no re-exports); when
    X is a package, n is one of its submodules or a name from inside the package (its
    `__init__` exports its own package's API, eagerly or lazily)."""
    bad = []
    for i in IMPORTS:
        if i.module not in MODULES or not i.names:
            continue
        if i.lazy or i.module in PACKAGES:
            bad += _outside_exports(i)
            continue
        missing = sorted(set(i.names) - defined_names(i.module) - {"*"})
        if missing:
            bad.append(
                f"{i.importer}:{i.line} imports {missing} from {i.module}, which does not define them"
            )
    assert not bad, "names imported from a module that does not define them:\n" + "\n".join(bad)


def _outside_exports(i: Import) -> list[str]:
    """A package __init__ exporting names from outside the package (FACADES aside)."""
    if i.lazy and i.importer not in FACADES and not i.module.startswith(i.importer + "."):
        return [f"{i.importer} exports {list(i.names)} from {i.module}, outside the package"]
    return []


def test_no_private_name_is_imported_from_another_module():
    """(d) `from raydistill.X import _name`: a private name stays in the module that defines it."""
    bad = [
        f"{i.importer}:{i.line} imports {[n for n in i.names if n.startswith('_')]} from {i.module}"
        for i in IMPORTS
        if any(
            n.startswith("_") and not n.startswith("__") and (i.importer, n) not in ALLOWED_PRIVATE
            for n in i.names
        )
    ]
    assert not bad, "\n".join(bad)


def test_package_inits_export_only_their_own_package():
    """An eager export (a name in `__all__`) of a package __init__ comes from its own package."""
    bad = []
    for package in sorted(PACKAGES - set(FACADES)):
        exported = _all_names(package)
        bad += [
            f"{i.importer}:{i.line} exports {sorted(set(i.names) & exported)} from {i.module}"
            for i in IMPORTS
            if i.importer == package
            and not i.lazy
            and set(i.names) & exported
            and not i.module.startswith(package + ".")
        ]
    assert not bad, "\n".join(bad)


def _all_names(module: str) -> set[str]:
    """The string constants of a module's `__all__` list or tuple (empty when there is none)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
            and isinstance(node.value, (ast.List, ast.Tuple))
        ):
            return {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
    return set()
