"""The layers of agroml point down only (shared/DESIGN.md): read every import with ``ast`` and check it.

Why a test and not a convention: a function-local import can hide a cycle for months (``analysis ->
sources -> supabase -> analysis`` did), and an upward import is the first step of one. This test reads
each module's imports, module-level and function-local alike, resolves relative ones, and fails on any
import of an agroml module from a higher layer, and on any function-local import of an agroml module.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "agroml"

#: Bottom first. A module may import from its own layer or any layer below it, never above. The first
#: prefix that matches a module name decides its layer (so list the narrower prefix first).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("agroml.core",)),
    ("images", ("agroml.images",)),
    ("data", ("agroml.data",)),
    ("demo", ("agroml.demo",)),
    (
        "model records",
        (
            "agroml.lifecycle.metrics",
            "agroml.lifecycle.plots",
            "agroml.lifecycle.registry",
            "agroml.lifecycle.tracking",
        ),
    ),
    ("training", ("agroml.training",)),
    ("model life", ("agroml.lifecycle",)),
    ("operations", ("agroml.ops",)),
    ("entry points", ("agroml.cli", "agroml.api", "agroml.__main__", "agroml")),
)
#: Third-party packages slow enough to import that a function-local import keeps `agroml --help` fast.
HEAVY = {
    "tensorflow",
    "keras",
    "matplotlib",
    "supabase",
    "fastapi",
    "uvicorn",
    "mlflow",
    "postgrest",
    "storage3",
    "httpx",
    "pyarrow",
    "pandas",
    "PIL",
    "numpy",
    "psutil",
    "filelock",
    "yaml",
}
#: Imports that may be missing where agroml runs: a platform's own module or an optional package.
OPTIONAL = {"fcntl", "msvcrt", "ai_edge_litert"}


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it to LAYERS")


def module_name(path: Path, root: Path = PACKAGE.parent) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(root: Path, dotted: str) -> bool:
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path, root: Path = PACKAGE.parent) -> list[tuple[str, int, bool]]:
    """(imported module, line, whether the import is inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, local) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from agroml.data import records` imports the module agroml.data.records
                names = [
                    f"{base}.{alias.name}" if _is_module(root, f"{base}.{alias.name}") else base
                    for alias in child.names
                ]
                found.extend((name, child.lineno, local) for name in names)
            visit(child, inner)

    visit(tree, False)
    return found


def agroml_imports() -> list[tuple[str, str, int, bool]]:
    rows = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for target, line, local in imports(path):
            if target == "agroml" or target.startswith("agroml."):
                rows.append((module_name(path), target, line, local))
    return rows


def upward_imports() -> list[str]:
    return [
        f"{src}:{line} imports {dst} ({LAYERS[layer_of(dst)][0]} is above {LAYERS[layer_of(src)][0]})"
        for src, dst, line, _ in agroml_imports()
        if layer_of(dst) > layer_of(src)
    ]


def test_every_module_has_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path))


def test_imports_point_down_only() -> None:
    assert upward_imports() == []


def test_no_function_local_import_of_agroml() -> None:
    local = [
        f"{src}:{line} imports {dst} inside a function" for src, dst, line, is_local in agroml_imports() if is_local
    ]
    assert local == [], "import agroml modules at the top; only heavy third-party packages are imported lazily"


def test_function_local_imports_are_heavy_third_party_only() -> None:
    odd = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for target, line, local in imports(path):
            root = target.split(".")[0]
            if local and root != "agroml" and root not in HEAVY | OPTIONAL:
                odd.append(f"{module_name(path)}:{line} imports {target} inside a function")
    assert odd == []


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an upward import (core -> cli) and a function-local one are both found."""
    (tmp_path / "agroml" / "core").mkdir(parents=True)
    (tmp_path / "agroml" / "records.py").write_text("")
    bad = tmp_path / "agroml" / "core" / "bad.py"
    bad.write_text(
        "from agroml.cli import output\nfrom ..data import store\n\ndef f():\n    from agroml import records\n"
    )
    found = imports(bad, tmp_path)
    assert ("agroml.cli", 1, False) in found
    assert ("agroml.data", 2, False) in found
    assert ("agroml.records", 5, True) in found
    assert layer_of("agroml.cli.output") > layer_of("agroml.core.bad")
