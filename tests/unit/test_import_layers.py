"""The package's import rules, read from the source (AST, nothing imported): layers only import downwards.

Layers, lowest first (a module may import its own subpackage and lower ranks only):

- ``io``, ``utils``: reading and checking files, stand-alone tools;
- ``components`` (pieces used by two or more models, or by a model and a post-processor), ``metrics``;
- ``data``, ``post_processing``;
- ``models.<name>``: one folder per model, none importing another model;
- the top level (``registration``, ``_autoload``, ``compat``): plugin plumbing, may import anything.

Every import counts, also one inside a function (a lazy import hides a dependency, it does not remove it).
On top of the ranks: no cycle between subpackages, the layers below the models do not import anomalib's model
package (its import loads our models: a cycle at run time), no module imports one of anomalib's models (their
internals), and a model's ``torch_model.py`` (its pure ``nn.Module``) imports neither post-processing nor metrics.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "anomalib_surface"
ROOT = Path(__file__).parents[2] / PACKAGE
TOP = 4
RANKS = {"io": 0, "utils": 0, "components": 1, "metrics": 1, "data": 2, "post_processing": 2, "models": 3, "testing": 4}
"""Rank of each subpackage; a module of rank ``r`` may import subpackages of rank ``< r`` (and its own)."""
TOP_LEVEL = {"registration", "_autoload", "compat", "__init__"}
"""Top-level modules and subpackages above every layer."""
NO_ANOMALIB_MODELS = ("io", "components", "metrics", "data", "post_processing")
"""Importing ``anomalib.models`` runs the plugin hook, which imports our models, which import these layers."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (``from x import y`` gives ``x`` and ``x.y``)."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _unit(module: str) -> str:
    """The layer unit of a module of the package: its subpackage, or ``models.<name>`` for a model."""
    parts = module.split(".")[1:]
    if not parts:
        return "__init__"
    if parts[0] == "models" and len(parts) > 1:
        return f"models.{parts[1]}"
    return parts[0]


def _rank(unit: str) -> int:
    head = unit.split(".")[0]
    if head in TOP_LEVEL:
        return TOP
    if head not in RANKS:
        pytest.fail(f"anomalib_surface.{head} has no layer: add it to RANKS or TOP_LEVEL in {__file__}.")
    return RANKS[head]


def _is_model_index(source: str, target: str) -> bool:
    """``models/__init__.py`` may list the model folders."""
    return source == "models" and target.startswith("models.")


def _graph() -> dict[str, dict[str, set[str]]]:
    """``{unit: {imported unit: {importing files}}}`` over the package's own modules."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        source = _unit(_module_name(path))
        edges = graph.setdefault(source, {})
        for name in _imports(path):
            if name.startswith(f"{PACKAGE}."):  # the root package itself is import-free
                target = _unit(name)
                if target != source:
                    edges.setdefault(target, set()).add(str(path.relative_to(ROOT.parent)))
    return graph


def test_layers_import_only_downwards() -> None:
    violations = [
        f"{file} ({source}) imports anomalib_surface.{target}"
        for source, edges in _graph().items()
        for target, files in edges.items()
        for file in sorted(files)
        if _rank(source) < TOP and _rank(target) >= _rank(source) and not _is_model_index(source, target)
    ]
    assert not violations, "Imports that go sideways or upwards:\n" + "\n".join(violations)


def test_no_cycle_between_subpackages() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(unit: str, path: list[str]) -> None:
        if unit in path:
            cycle = [*path[path.index(unit) :], unit]
            pytest.fail("Import cycle between subpackages: " + " -> ".join(cycle))
        if unit in done:
            return
        for target in graph.get(unit, {}):
            visit(target, [*path, unit])
        done.add(unit)

    for unit in graph:
        visit(unit, [])


def test_low_layers_do_not_import_anomalib_models() -> None:
    offenders = [
        f"{path.relative_to(ROOT.parent)} imports {name}"
        for sub in NO_ANOMALIB_MODELS
        for path in sorted((ROOT / sub).rglob("*.py"))
        for name in _imports(path)
        if name == "anomalib.models" or name.startswith("anomalib.models.")
    ]
    assert not offenders, "\n".join(offenders)


def test_no_module_imports_another_anomalib_model() -> None:
    """anomalib's model folders (``anomalib.models.image.*``) are internals: use ``anomalib.models.components``."""
    offenders = [
        f"{path.relative_to(ROOT.parent)} imports {name}"
        for path in sorted(ROOT.rglob("*.py"))
        for name in _imports(path)
        if name.startswith(("anomalib.models.image", "anomalib.models.video"))
    ]
    assert not offenders, "\n".join(offenders)


def test_torch_models_import_neither_post_processing_nor_metrics() -> None:
    offenders = [
        f"{path.relative_to(ROOT.parent)} imports {name}"
        for path in sorted((ROOT / "models").glob("*/torch_model.py"))
        for name in _imports(path)
        if name.startswith((f"{PACKAGE}.post_processing", f"{PACKAGE}.metrics"))
    ]
    assert not offenders, "\n".join(offenders)


def test_the_scan_resolves_relative_imports_and_units() -> None:
    """The rules are only as good as the import reading: a relative import resolves to its absolute module."""
    assert f"{PACKAGE}.components.checks" in _imports(ROOT / "components" / "input_size.py")  # ``from .checks``
    assert f"{PACKAGE}.models.tocoad.coreset" in _imports(ROOT / "models" / "tocoad" / "lightning_model.py")
    assert _unit(f"{PACKAGE}.models.tocoad.coreset") == "models.tocoad"
    assert _rank("components") < _rank("models.tocoad")
