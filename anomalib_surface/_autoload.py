"""Start-up hook that makes ``anomalib.models`` / ``anomalib.data`` entry points effective.

anomalib reads no entry points, so this package ships ``anomalib_surface_autoload.pth`` (and, for Python 3.15+,
the PEP 829 ``anomalib_surface_autoload.start`` beside it), which site runs at interpreter start-up and which
calls :func:`install`. ``install`` only puts a tiny import finder on ``sys.meta_path``: nothing else happens until
the process imports one of the watched anomalib modules (:func:`watched_modules`). When one of those has finished
executing, :mod:`anomalib_surface.registration` loads the plugins declared in the matching entry-point group and
publishes them to anomalib, and :mod:`anomalib_surface.compat` applies its fixes for that module.

Every Python process of the environment runs this file, so it imports nothing beyond what the interpreter has
already loaded at start-up (``os``, ``sys``): no ``importlib.abc``, no ``typing``, no torch. The ``.pth`` line reads
``ANOMALIB_DISABLE_PLUGIN_AUTOLOAD`` before importing anything, and is silent when this package has been removed
but the ``.pth`` file left behind.
"""

import os
import sys

DISABLE_ENV_VAR = "ANOMALIB_DISABLE_PLUGIN_AUTOLOAD"
PLUGIN_GROUPS = ("anomalib.models", "anomalib.data")
"""Entry-point groups, named after the anomalib module that the plugins of each are published on."""


def autoload_disabled() -> bool:
    """Whether the user switched the hook off through ``ANOMALIB_DISABLE_PLUGIN_AUTOLOAD``."""
    return os.environ.get(DISABLE_ENV_VAR, "").strip().lower() in {"1", "true", "yes", "on"}


def watched_modules() -> frozenset:
    """The anomalib modules whose import triggers registration (plugin groups) or a compatibility fix."""
    from anomalib_surface.compat import FIXES

    return frozenset(PLUGIN_GROUPS) | frozenset(FIXES)


class _RegisterAfterExec:
    """Loader wrapper: executes the real module, then hands it to the registration code."""

    def __init__(self, loader: object) -> None:
        self._loader = loader

    def create_module(self, spec: object) -> object:
        return self._loader.create_module(spec)

    def exec_module(self, module: object) -> None:
        self._loader.exec_module(module)
        from anomalib_surface import registration

        registration.on_module_loaded(module.__name__)

    def __getattr__(self, name: str) -> object:
        return getattr(self._loader, name)


def is_anomalib_module(name: str) -> bool:
    """Whether ``name`` is ``anomalib`` or one of its submodules (not ``anomalib_surface``)."""
    return name == "anomalib" or name.startswith("anomalib.")


class AnomalibImportWatcher:
    """Meta-path finder (``find_spec`` protocol) that wraps the loaders of the watched modules and finds nothing else.

    The watched set (:func:`watched_modules`) is read at the first import of an anomalib module, not at start-up:
    a process that never imports anomalib imports nothing of this package beyond this file.
    """

    def __init__(self) -> None:
        self._watched: frozenset | None = None

    @property
    def watched(self) -> frozenset:
        """The watched module names, read once."""
        if self._watched is None:
            self._watched = watched_modules()
        return self._watched

    def find_spec(self, fullname: str, path: object, target: object = None) -> object:
        if not is_anomalib_module(fullname) or fullname not in self.watched:
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
    """Put the watcher first on ``sys.meta_path`` once, unless switched off by the environment.

    The entry point of the ``.start`` file (Python 3.15+) and of the ``.pth`` line (older Pythons).
    """
    if autoload_disabled() or any(isinstance(finder, AnomalibImportWatcher) for finder in sys.meta_path):
        return
    watcher = AnomalibImportWatcher()
    sys.meta_path.insert(0, watcher)
    # anomalib may have been imported before this hook was installed (e.g. install() called by hand).
    loaded = {name for name in sys.modules if is_anomalib_module(name)}
    for name in sorted(watcher.watched & loaded if loaded else ()):
        from anomalib_surface import registration

        registration.on_module_loaded(name)
