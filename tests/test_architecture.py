"""The package's shape, held by reading its source (ast; nothing is imported):

- no import cycle among voicebank's modules;
- no module uses a private name (one leading underscore) that another voicebank module defines:
  ``from .x import _y``, ``x._y``, ``bank._stream``;
- no module but ``voicebank.compat`` uses a private name of another package (``import _webrtcvad``,
  ``from soundfile import _snd``, ``torch.cpu._is_amx_tile_supported()``, ``getattr(warnings,
  "_filters_mutated")``), and that module imports nothing of voicebank, so any layer may use it;
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
# with why: both are reaches of the compat module into another package.
ALLOWED = {
    ("voicebank.compat", "_file"): "soundfile.SoundFile's own handle, not store.engine.Store._file",
    ("voicebank.compat", "_model"): "the network inside silero-vad's TorchScript model, not voicebank.vad's cache",
}

# The one module that may reach into another package's private names (each reach a function there,
# with the upstream version it was checked against, and a test in tests/test_compat.py).
COMPAT = "voicebank.compat"


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


def foreign_private_uses(modules: dict[str, Module], package: str, exempt: str | None = None) -> list[str]:
    """Uses of another package's private names, in every module but ``exempt``: importing one
    (``import _cext``, ``from lib import _x``, ``import lib._impl``); ``._x`` on a name bound to
    another package (``warnings._x``), or on anything else when no class of ours has an attribute
    ``_x`` (``torch.cpu._is_amx_tile_supported``, ``scripted._model``); and ``getattr``,
    ``hasattr``, ``setattr`` or ``delattr`` with such a name as a string. A private attribute that
    shares its name with one of ours is not seen here (``ALLOWED`` lists the known ones)."""
    ours = _attribute_names(modules)
    problems = []
    for module in modules.values():
        if module.name == exempt:
            continue
        foreign, own = _bound_names(module, modules, package)
        found = set()
        for node, _ in _walk(module.tree):
            if isinstance(node, ast.Import):
                found |= {(node.lineno, f"import {a.name}") for a in node.names
                          if a.name.split(".")[0] != package and any(map(_private, a.name.split(".")))}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] != package:
                parts = (node.module or "").split(".")
                found |= {(node.lineno, f"from {node.module} import {a.name}") for a in node.names
                          if _private(a.name) or any(map(_private, parts))}
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                if _reaches(node.value, node.attr, foreign, own, ours):
                    found.add((node.lineno, f"{ast.unparse(node.value)}.{node.attr}"))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) >= 2 \
                    and node.func.id in {"getattr", "hasattr", "setattr", "delattr"} \
                    and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str) \
                    and _private(node.args[1].value) and _reaches(node.args[0], node.args[1].value, foreign, own, ours):
                found.add((node.lineno, ast.unparse(node)))
        problems += [f"{module.name}:{line}: {text}" for line, text in sorted(found)]
    return problems


def _reaches(value: ast.expr, attr: str, foreign: set[str], own: set[str], ours: set[str]) -> bool:
    """Whether ``value.attr`` (``attr`` private) is another package's private name."""
    if isinstance(value, ast.Name) and value.id in foreign:
        return True
    if isinstance(value, ast.Name) and value.id in own:
        return False  # one of our modules or what it defines: private_uses' business
    return attr not in ours


def _attribute_names(modules: dict[str, Module]) -> set[str]:
    """The private names our classes have as attributes: set on an object (``self._x = ...``) or
    defined in a class body (methods, class attributes)."""
    names = set()
    for module in modules.values():
        for node, _ in _walk(module.tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        names.add(item.name)
                    names |= {t.id for t in _assigned(item)}
    return {name for name in names if _private(name)}


def _assigned(node: ast.stmt) -> list[ast.Name]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return [t for t in targets if isinstance(t, ast.Name)]


def _bound_names(module: Module, modules: dict[str, Module], package: str) -> tuple[set[str], set[str]]:
    """The names ``module`` binds by importing: (those of other packages, those of ours)."""
    foreign, own = set(), set()
    for node, _ in _walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                (own if alias.name.split(".")[0] == package else foreign).add(bound)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            for alias in node.names:
                (own if base.split(".")[0] == package else foreign).add(alias.asname or alias.name)
    return foreign, own


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


def test_only_the_compat_module_uses_other_packages_private_names(package):
    assert foreign_private_uses(package, "voicebank", exempt=COMPAT) == []


def test_the_compat_module_may_be_imported_from_any_layer(package):
    """It imports nothing of voicebank, so no module importing it can close a cycle or reach
    above its own layer."""
    assert COMPAT in package
    assert edges(package)[COMPAT] == set()


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


def test_the_checker_finds_private_names_of_other_packages(tmp_path):
    root = _write(tmp_path, {
        "__init__.py": "",
        "mine.py": "_cache = None\n\nclass Mine:\n    _shared = 1\n\n    def _step(self):\n        self._seen = 1\n",
        "reach.py": ("import _cext\nimport lib._impl\nimport torch\nimport warnings\nfrom lib import _hidden, public\n"
                     "from . import mine\n\n_model = None\n\n"
                     "def run(obj, m):\n"
                     "    torch.cpu._is_amx()\n"  # a private name of torch's, though nothing of ours has it
                     "    obj.eval()._model\n"  # _model is a global here, not an attribute of anything of ours
                     "    getattr(warnings, '_filters_mutated')\n"
                     "    warnings._step\n"  # bound to another package: theirs whatever we name ours
                     "    m._step(), m._seen, m._shared, mine._cache, getattr(m, '_seen'), public.__name__\n"),
        "compat.py": "from lib import _hidden\n",
    })
    problems = foreign_private_uses(read_package(root, "pkg"), "pkg", exempt="pkg.compat")
    assert problems == ["pkg.reach:1: import _cext", "pkg.reach:2: import lib._impl",
                        "pkg.reach:5: from lib import _hidden", "pkg.reach:11: torch.cpu._is_amx",
                        "pkg.reach:12: obj.eval()._model", "pkg.reach:13: getattr(warnings, '_filters_mutated')",
                        "pkg.reach:14: warnings._step"]


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
