"""The package's shape, held by reading its source (ast; nothing is imported):

- no import cycle among voicebank's modules;
- no module uses a private name (one leading underscore) that another voicebank module defines:
  ``from .x import _y``, ``x._y``, ``bank._stream``;
- candidate search is reached through its seam (``voicebank.index.search.Search``): only the
  factory makes a kind's search, and no module outside ``voicebank.index`` imports a kind's insides;
- the numbers decisions start from have one home (``voicebank.policy``), which imports only plain
  numpy modules;
- what a use case receives (``Services``) and its progress callback (``Progress``) are defined once.

Which imports count: all of them. Those at module level (including under ``if TYPE_CHECKING:``:
a type-only import of the facade from a use case is the same cycle in the design, only hidden from
the interpreter) and those inside a function body alike. A function-level import runs when the
function is first called rather than when the module is imported (voicebank uses them to keep
torch, FAISS and the facade off the import path of ``voicebank --help``), but it is a dependency all
the same, so it may not close a cycle either. The two kinds are kept apart (``imports``,
``lazy_imports``) so a failure says which one it is.

An import of a package is an edge to its ``__init__``; importing ``voicebank.a.b`` is an edge to
``voicebank.a.b`` only (the parent package's ``__init__`` is a node of its own, with its own edges),
and ``voicebank/__init__.py`` (which re-exports the facade for users) is not followed as a parent.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "voicebank"

# The layers above the facade: the only modules (with the package's __init__) that may import it.
ABOVE_THE_FACADE = ("voicebank.cli", "voicebank.server")

# The facade's size, in lines: past it, hand the next group of methods out as an object of its own.
FACADE_MAX_LINES = 300

# Private names are matched by name (the checker cannot know an object's type), so a private
# attribute of a third-party object that happens to share a name with one of ours is listed here,
# with why. The embedding entry is a real use, in files another change owns (issue 12, part 3, the
# split of embedding/fast.py): remove it when that lands.
ALLOWED = {
    ("voicebank.decode", "_file"): "soundfile.SoundFile's own handle, not store.engine.Store._file",
}


# Candidate search: the classes that implement the seam, each named only in its own module and the
# factory; and the FAISS kind's insides, which nothing outside voicebank.index imports.
SEARCHES = {"FaissSearch": "voicebank.index.faiss_search", "PgVectorSearch": "voicebank.index.pgvector"}
SEARCH_FACTORY = "voicebank.index.factory"
INDEX_INSIDES = {"voicebank.index.faiss_search", "voicebank.index.file", "voicebank.index.kinds"}


# The decision numbers, each assigned in voicebank.policy alone; and what that module may import
# (plain numpy: no model, database or index behind a starting threshold).
DECISION_NUMBERS = {"DEFAULT_THRESHOLDS", "CHECK_OFFSETS", "MARGIN_OFFSET", "DEFAULT_ASNORM_THRESHOLD"}
POLICY = "voicebank.policy"
PLAIN = {"voicebank.errors", "voicebank.impostors", "voicebank.norm", "voicebank.scoring"}


# Names defined in one module only: every use case receives the one Services, and reports progress
# through the one callback type.
ONE_DEFINITION = {"Services": "voicebank.services", "Progress": "voicebank.encoding"}


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool
    imports: set[str] = field(default_factory=set)  # voicebank modules imported outside functions
    lazy_imports: set[str] = field(default_factory=set)  # ... inside functions
    private_imports: list[str] = field(default_factory=list)  # "from .x import _y" of voicebank modules
    defines: set[str] = field(default_factory=set)  # private names this module defines


def read_package(root: Path, package: str) -> dict[str, Module]:
    """Every module under ``root`` (the folder of ``package``), parsed, with its imports resolved."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        modules[name] = Module(name, path, ast.parse(path.read_text(encoding="utf-8"), str(path)), is_package)
    for module in modules.values():
        _collect(module, modules, package)
    return modules


def _collect(module: Module, modules: dict[str, Module], package: str) -> None:
    for node, in_function in _walk(module.tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    targets.append(sub)  # from . import audio: the module
                else:
                    targets.append(base)  # from .audio import load: the module holding it
                    if _private(alias.name) and base in modules:
                        module.private_imports.append(f"from {base} import {alias.name}")
        for target in targets:
            found = _nearest(target, modules)
            if found is not None and found != module.name:
                (module.lazy_imports if in_function else module.imports).add(found)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and _private(node.name):
            module.defines.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and _private(node.id):
            module.defines.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _private(node.attr):
            module.defines.add(node.attr)  # self._x = ...: an attribute of a class of this module
        elif isinstance(node, ast.arg) and _private(node.arg):
            module.defines.add(node.arg)


def _walk(tree: ast.AST):
    """(node, inside a function body?) for every node of ``tree``."""
    stack = [(tree, False)]
    while stack:
        node, in_function = stack.pop()
        yield node, in_function
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        stack.extend((child, inner) for child in ast.iter_child_nodes(node))


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    parts = module.name.split(".")
    anchor = parts if module.is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join(anchor + ([node.module] if node.module else []))


def _nearest(target: str, modules: dict[str, Module]) -> str | None:
    """The module ``target`` names, or the nearest package above it that is one of ours."""
    parts = target.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def edges(modules: dict[str, Module]) -> dict[str, set[str]]:
    """Who imports whom, at module level or inside functions."""
    return {name: (module.imports | module.lazy_imports) - {name} for name, module in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def private_uses(modules: dict[str, Module], allowed: dict[tuple[str, str], str] | None = None) -> list[str]:
    """Uses of a private name that another module of the package defines, and not this one
    (except the (module, name) pairs in ``allowed``)."""
    allowed = allowed or {}
    owners: dict[str, set[str]] = {}
    for module in modules.values():
        for name in module.defines:
            owners.setdefault(name, set()).add(module.name)
    problems = []
    for module in modules.values():
        problems += [f"{module.name}: {text}" for text in module.private_imports]
        found = set()
        for node, _ in _walk(module.tree):
            if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in module.defines \
                    and (module.name, node.attr) not in allowed:
                others = owners.get(node.attr, set()) - {module.name}
                if others:
                    found.add((node.lineno, node.attr, ", ".join(sorted(others))))
        problems += [f"{module.name}:{line}: .{attr} (defined in {where})" for line, attr, where in sorted(found)]
    return problems


# -- the package ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def package() -> dict[str, Module]:
    return read_package(PACKAGE, "voicebank")


def test_the_checker_sees_the_package(package):
    assert {"voicebank.bank", "voicebank.enrollment", "voicebank.store.repository", "voicebank.index.search"} <= set(package)
    graph = edges(package)
    assert "voicebank.store.repository" in graph["voicebank.enrollment"]  # it reads imports, not nothing
    assert "voicebank.enrollment" in graph["voicebank.bank"]


def test_no_import_cycle(package):
    assert cycles(edges(package)) == []


def test_no_module_uses_another_modules_private_names(package):
    assert private_uses(package, ALLOWED) == []


def test_no_use_case_imports_the_facade(package):
    """Use cases receive what they use; only the layers above the facade (and the package's
    ``__init__``) may import it."""
    importers = {name for name, targets in edges(package).items() if "voicebank.bank" in targets}
    assert importers <= {"voicebank"} | {n for n in package if n.startswith(ABOVE_THE_FACADE)}, importers


def test_candidate_search_is_reached_through_its_seam(package):
    """A kind's search is made in one place (the factory), whatever uses it; the rest of the package
    holds a ``Search`` (or both channels' ``BankSearch``) and never the FAISS index behind one."""
    named = sorted(f"{module.name} names {node.id if isinstance(node, ast.Name) else node.attr}"
                   for module in package.values() for node, _ in _walk(module.tree)
                   if (node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None)
                   in SEARCHES and module.name not in {SEARCH_FACTORY, *SEARCHES.values()})
    assert named == []
    reaching = {name: sorted(targets & INDEX_INSIDES) for name, targets in edges(package).items()
                if not name.startswith("voicebank.index") and targets & INDEX_INSIDES}
    assert reaching == {}


def test_the_decision_numbers_have_one_home(package):
    assigned = sorted(f"{module.name} assigns {node.id}" for module in package.values() for node, _ in _walk(module.tree)
                      if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id in DECISION_NUMBERS
                      and module.name != POLICY)
    assert assigned == []
    assert edges(package)[POLICY] <= PLAIN, edges(package)[POLICY]


def test_what_use_cases_receive_is_defined_once(package):
    defined = sorted(f"{module.name} defines {name}" for module in package.values() for node in module.tree.body
                     for name in _defined_at_top(node) if ONE_DEFINITION.get(name, module.name) != module.name)
    assert defined == []


def test_the_facade_stays_small():
    """The facade only wires: a group of methods that grows is handed out as an object of its own
    (``bank.thresholds``, ``bank.cohort``, ``bank.audit``, ``bank.index``, ``bank.api_keys``)
    rather than cutting the documentation to make room."""
    lines = len((PACKAGE / "bank.py").read_text(encoding="utf-8").splitlines())
    assert lines <= FACADE_MAX_LINES, f"voicebank/bank.py has {lines} lines (at most {FACADE_MAX_LINES})"


def _defined_at_top(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.ClassDef):
        return [node.name]
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [t.id for t in targets if isinstance(t, ast.Name)]
    return []


# -- the checker can fail ---------------------------------------------------------------------
def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_checker_finds_cycles_through_every_kind_of_import(tmp_path):
    root = _write(tmp_path, {
        "__init__.py": "",
        "a.py": "from . import b\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n",
        "c.py": "def f():\n    from .a import thing\n",  # a function-level import counts too
        "d.py": "from .sub.e import x\n",
        "sub/__init__.py": "",
        "sub/e.py": "import pkg.d\n",
        "f.py": "from . import a\n",  # imports into a cycle without being part of it
    })
    assert cycles(edges(read_package(root, "pkg"))) == [["pkg.a", "pkg.b", "pkg.c"], ["pkg.d", "pkg.sub.e"]]


def test_the_checker_finds_private_names_used_across_modules(tmp_path):
    root = _write(tmp_path, {
        "__init__.py": "",
        "bank.py": "class Bank:\n    def _stream(self):\n        self._store = 1\n\ndef _helper():\n    pass\n",
        "enroll.py": ("from .bank import _helper\nfrom . import bank\n\n"
                      "def run(b):\n    b._stream()\n    return bank._helper, b._store\n"),
        "fine.py": "class A:\n    def _own(self, other):\n        return other._own, self.__class__\n",
    })
    problems = private_uses(read_package(root, "pkg"))
    assert problems == ["pkg.enroll: from pkg.bank import _helper", "pkg.enroll:5: ._stream (defined in pkg.bank)",
                        "pkg.enroll:6: ._helper (defined in pkg.bank)", "pkg.enroll:6: ._store (defined in pkg.bank)"]


def test_the_tests_ci_names_exist():
    """CI's emulated lane names its tests one by one (the whole file is too slow under emulation):
    a test renamed or moved must not turn that lane into "not found"."""
    import re

    root = Path(__file__).resolve().parent.parent
    script = (root / ".ci" / "emulated").read_text()
    named = re.findall(r'"(tests/[\w/]+\.py)::(\w+)(?:\[[^\]]*\])?"', script)
    assert named, "no test ids found in .ci/emulated"
    for path, test in named:
        assert re.search(rf"^def {test}\(", (root / path).read_text(), re.M), f".ci/emulated names {path}::{test}"
