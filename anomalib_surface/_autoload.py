"""Start-up hook that makes ``anomalib.models`` / ``anomalib.data`` entry points effective.

anomalib reads no entry points, so this package ships ``anomalib_surface_autoload.pth``, which
site runs at interpreter start-up and which calls :func:`install`. ``install`` only puts a tiny
import finder on ``sys.meta_path`` (standard library only, no torch): nothing else happens until
the process imports one of :data:`WATCHED_MODULES`. When one of those modules has finished
executing, :mod:`anomalib_surface.registration` loads the plugins declared in the matching
entry-point group and publishes them to anomalib (or adapts the CLI and the benchmark pipeline).

Set ``ANOMALIB_DISABLE_PLUGIN_AUTOLOAD=1`` to switch the hook off.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

DISABLE_ENV_VAR = "ANOMALIB_DISABLE_PLUGIN_AUTOLOAD"
WATCHED_MODULES = frozenset({
    "anomalib.models",
    "anomalib.data",
    "anomalib.cli.cli",
    "anomalib.pipelines.benchmark.job",
    "anomalib.engine.plugins.checkpoint_io",
})


def autoload_disabled() -> bool:
    """Whether the user switched the hook off through ``ANOMALIB_DISABLE_PLUGIN_AUTOLOAD``."""
    return os.environ.get(DISABLE_ENV_VAR, "").strip().lower() in {"1", "true", "yes", "on"}


class _RegisterAfterExec(importlib.abc.Loader):
    """Loader wrapper: executes the real module, then hands it to the registration code."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        from anomalib_surface import registration

        registration.on_module_loaded(module.__name__)

    def __getattr__(self, name: str) -> object:
        return getattr(self._loader, name)


class AnomalibImportWatcher(importlib.abc.MetaPathFinder):
    """Meta-path finder that wraps the loaders of :data:`WATCHED_MODULES` and finds nothing else."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname not in WATCHED_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RegisterAfterExec(spec.loader)
                return spec
        return None


def install() -> None:
    """Put the watcher first on ``sys.meta_path`` once, unless switched off by the environment."""
    if autoload_disabled() or any(isinstance(finder, AnomalibImportWatcher) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, AnomalibImportWatcher())
    # anomalib may have been imported before this hook was installed (e.g. install() called by hand).
    for name in sorted(WATCHED_MODULES & sys.modules.keys()):
        from anomalib_surface import registration

        registration.on_module_loaded(name)
