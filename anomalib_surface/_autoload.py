"""Start-up hook that makes ``anomalib.models`` / ``anomalib.data`` entry points effective.

anomalib reads no entry points, so this package ships ``anomalib_surface_autoload.pth`` (and, for Python 3.15+,
the PEP 829 ``anomalib_surface_autoload.start`` beside it), which site runs at interpreter start-up. The ``.pth``
line imports nothing: it reads ``ANOMALIB_DISABLE_PLUGIN_AUTOLOAD``, checks that this package is still installed
(silent when the package was removed but the ``.pth`` file left behind) and puts a placeholder finder, built inline,
on ``sys.meta_path``. At the first lookup of ``anomalib`` or a submodule the placeholder imports this module and
:func:`take_over` puts the real watcher (:class:`AnomalibImportWatcher`) in its place; the ``.start`` file calls
:func:`install`, which installs the watcher at once. When one of the watched anomalib modules
(:func:`watched_modules`) has finished executing, :mod:`anomalib_surface.registration` loads the plugins declared
in the matching entry-point group and publishes them to anomalib, and :mod:`anomalib_surface.compat` applies its
fixes for that module.

This module imports nothing beyond what the interpreter has already loaded at start-up (``os``, ``sys``): no
``importlib.abc``, no ``typing``, no torch.
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


def watcher_wanted() -> bool:
    """Whether a watcher should be installed now: the hook is switched on and none is on ``sys.meta_path`` yet."""
    return not autoload_disabled() and not any(isinstance(finder, AnomalibImportWatcher) for finder in sys.meta_path)


def take_over(placeholder: object, fullname: str, path: object, target: object = None) -> object:
    """Answer the first anomalib lookup for the ``.pth`` line's placeholder finder, which imports nothing at start-up.

    The placeholder (a class the ``.pth`` line builds inline) calls this for ``anomalib`` and its submodules only.
    Unless a watcher is already installed (by :func:`install`), the placeholder's slot on ``sys.meta_path`` becomes
    an :class:`AnomalibImportWatcher` (replaced in place: the import system is iterating that list right now) and
    the lookup is answered through it; otherwise the placeholder stays, inert.
    """
    if not watcher_wanted():
        return None
    watcher = AnomalibImportWatcher()
    if placeholder in sys.meta_path:
        sys.meta_path[sys.meta_path.index(placeholder)] = watcher
    else:
        sys.meta_path.insert(0, watcher)
    return watcher.find_spec(fullname, path, target)


def install() -> None:
    """Put the watcher first on ``sys.meta_path`` once, unless switched off by the environment.

    The entry point of the ``.start`` file (Python 3.15+) and of code that wants the hook at once; the ``.pth``
    line (older Pythons) defers it to the first anomalib import through :func:`take_over`.
    """
    if not watcher_wanted():
        return
    watcher = AnomalibImportWatcher()
    sys.meta_path.insert(0, watcher)
    # anomalib may have been imported before this hook was installed (e.g. install() called by hand).
    loaded = {name for name in sys.modules if is_anomalib_module(name)}
    for name in sorted(watcher.watched & loaded if loaded else ()):
        from anomalib_surface import registration

        registration.on_module_loaded(name)
