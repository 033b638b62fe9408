"""Which package modules a script or module runs, read from the import statements themselves.

A Snakemake rule lists the package modules its script imports, directly or through other modules,
as inputs (``code=``), so that editing one module reruns exactly the rules that run it; a resume
checkpoint hashes the same set, so that a measurement saved by other code is not reused. Both come
from :func:`module_files`: every ``import`` / ``from ... import`` statement of a file, wherever it
stands (top of the module or inside a function), is resolved to a file of this package and
followed transitively. Only this package is followed; the standard library and third-party
packages are not files of the repository. Importing ``a.b.c`` also runs ``a/__init__.py`` and
``a/b/__init__.py``, so those count too.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "medusa_roofline"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def module_path(name: str) -> Path | None:
    """The file of a dotted module name of this package (a module or a subpackage), or None."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str | None:
    """The dotted name of a file of this package, or None for a file outside it (a script)."""
    try:
        rel = Path(path).resolve().relative_to(PACKAGE_DIR.parent)
    except ValueError:
        return None
    if rel.parts[0] != PACKAGE:
        return None
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs every package above it."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _absolute(node: ast.ImportFrom, importer: str | None, is_package: bool) -> str | None:
    """The absolute module a ``from ... import`` names (relative imports resolved against ``importer``)."""
    if not node.level:
        return node.module
    if importer is None:
        return None  # a relative import outside the package: not ours to follow
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(path: Path) -> set[str]:
    """Every module of this package that ``path`` imports, directly (any statement, any depth)."""
    path = Path(path)
    return set(_imported_modules(path, PACKAGE_DIR, path.read_bytes()))


@functools.cache
def _imported_modules(path: Path, package_dir: Path, source: bytes) -> frozenset[str]:
    """:func:`imported_modules` of one version of a file, read against one package: a Snakefile parse asks
    for the same modules once per script that imports them, and an edited file is parsed again."""
    importer = module_name(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _statements(ast.parse(source.decode("utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, importer, is_package)
            if module is None:
                continue
            # ``from pkg import mod`` imports the submodule when one exists, else a name of pkg.
            names = [module] + [f"{module}.{alias.name}" for alias in node.names if alias.name != "*"]
        else:
            continue
        for name in names:
            if module_path(name) is not None:
                found.update(n for n in _with_parents(name) if module_path(n) is not None)
    return frozenset(found)


def _statements(tree: ast.Module):
    """Every statement of ``tree`` at any depth (function and class bodies, branches, handlers), skipping the
    expressions, where no import statement can stand: a tenth of the nodes :func:`ast.walk` visits."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        todo.extend(child for child in ast.iter_child_nodes(node)
                    if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)))


def _closure(start: set[str]) -> list[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(imported_modules(module_path(name)) - seen)
    return sorted(seen)


def module_closure(path: str | Path) -> list[str]:
    """Dotted names of every package module that running ``path`` (a script or a module) imports."""
    path = Path(path)
    own = module_name(path)
    start = imported_modules(path) | ({own} if own else set())
    return _closure(start)


def module_files(path: str | Path) -> list[str]:
    """The files of :func:`module_closure`, as sorted absolute paths (a rule's ``code=`` input)."""
    return sorted(str(module_path(name)) for name in module_closure(path))


def code_digest(module: str) -> str:
    """A short hash over the source of ``module`` and everything it imports from this package."""
    digest = hashlib.sha256()
    for name in module_closure(module_path(module)):
        digest.update(name.encode() + b"\0" + module_path(name).read_bytes())
    return digest.hexdigest()[:16]
