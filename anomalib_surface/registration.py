"""Publish entry-point plugins to anomalib.

Plugins declare their classes in the entry-point groups named after the host modules:

.. code-block:: toml

    [project.entry-points."anomalib.models"]
    Clgan = "anomalib_surface.models.clgan:Clgan"

    [project.entry-points."anomalib.data"]
    SurfaceDemo = "anomalib_surface.data.surface_demo:SurfaceDemo"

anomalib finds models only among *imported direct* subclasses of ``AnomalibModule`` that are
attributes of ``anomalib.models`` (``get_model``, ``list_models``, the CLI's short names, the
benchmark pipeline) and datamodules only as attributes of ``anomalib.data``
(``get_datamodule``). :func:`on_module_loaded` closes that gap: it is called by
:mod:`anomalib_surface._autoload` right after anomalib's own module has executed, imports every
plugin of the matching group and sets it as an attribute of the host module. A plugin that fails
to load is skipped with a :class:`PluginLoadWarning` naming it.

Only *installed* distributions count (:func:`installed_distributions`): those in the interpreter's
site-packages, the user site, or another absolute ``site-packages``/``dist-packages`` folder on ``sys.path``
(editable installs keep their metadata there too). A ``*.dist-info`` folder in the current directory or behind
a relative ``sys.path`` entry is never loaded, so importing anomalib in a folder does not run code found there.

Registration does not depend on import order: a plugin whose package is still being imported when anomalib's
module completes (``import anomalib_surface.metrics`` first, which imports anomalib) is registered on the first
lookup that needs it (``get_model``, ``list_models``, attribute access on the host module) instead.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from importlib.metadata import Distribution, EntryPoint
    from types import ModuleType

logger = logging.getLogger(__name__)

MODELS_GROUP = "anomalib.models"
DATA_GROUP = "anomalib.data"
_SITE_FOLDER_NAMES = frozenset({"site-packages", "dist-packages"})
_loaded_groups: set[str] = set()
_pending: dict[str, dict[str, EntryPoint]] = {}


class PluginLoadWarning(UserWarning):
    """A third-party anomalib plugin could not be loaded and was skipped."""


def warn(message: str, category: type[Warning]) -> None:
    """Log ``message`` and raise it as a warning of ``category`` (shown once per call site by default)."""
    logger.warning(message)
    warnings.warn(message, category, stacklevel=3)


def _base_class(group: str) -> type:
    if group == MODELS_GROUP:
        from anomalib.models.components import AnomalibModule

        return AnomalibModule
    from anomalib.data import AnomalibDataModule

    return AnomalibDataModule


# --- which distributions count as installed -------------------------------------------------------


def installed_locations() -> list[str]:
    """The ``sys.path`` entries, in ``sys.path`` order, that hold installed distributions.

    Those are the interpreter's site-packages folders, the user site (when enabled), and any other absolute
    ``sys.path`` entry named ``site-packages`` or ``dist-packages`` (``--system-site-packages``,
    ``site.addsitedir``). Relative entries (``""``, ``"."``: the current directory) and other folders are left out.
    """
    import site

    trusted = set(site.getsitepackages()) if hasattr(site, "getsitepackages") else set()
    if site.ENABLE_USER_SITE:
        trusted.add(site.getusersitepackages())
    trusted = {os.path.realpath(folder) for folder in trusted}
    return [
        entry
        for entry in dict.fromkeys(sys.path)
        if os.path.isabs(entry)
        and (os.path.realpath(entry) in trusted or os.path.basename(os.path.normpath(entry)) in _SITE_FOLDER_NAMES)
    ]


def installed_distributions() -> Iterator[Distribution]:
    """Every installed distribution once (the first on ``sys.path`` wins, as for imports)."""
    from importlib.metadata import distributions

    seen = set()
    for distribution in distributions(path=installed_locations()):
        name = (distribution.metadata["Name"] or "").lower().replace("_", "-")
        if name and name not in seen:
            seen.add(name)
            yield distribution


def plugin_entry_points(group: str) -> list[EntryPoint]:
    """The entry points of ``group`` declared by installed distributions."""
    return [
        entry_point
        for distribution in installed_distributions()
        for entry_point in distribution.entry_points
        if entry_point.group == group
    ]


# --- loading and publishing -------------------------------------------------------------------------


def _load_entry_point(entry_point: EntryPoint, base: type) -> type | None:
    """Import one entry point and check that it is a subclass of ``base``; ``None`` if not usable."""
    origin = f"'{entry_point.name} = {entry_point.value}' (group '{entry_point.group}'"
    if getattr(entry_point, "dist", None) is not None:
        origin += f", distribution '{entry_point.dist.name}'"
    origin += ")"
    try:
        plugin = entry_point.load()
    except Exception as error:  # noqa: BLE001 - any failure of third-party code must not break anomalib
        warn(f"Skipping anomalib plugin {origin}: it failed to load: {error!r}", PluginLoadWarning)
        return None
    if not (inspect.isclass(plugin) and issubclass(plugin, base)):
        warn(f"Skipping anomalib plugin {origin}: it is not a subclass of {base.__name__}.", PluginLoadWarning)
        return None
    if base.__name__ == "AnomalibModule" and base not in plugin.__bases__:
        warn(
            f"anomalib plugin {origin}: {plugin.__name__} is not a direct subclass of AnomalibModule, "
            "so anomalib's get_model() and list_models() will not find it by name.",
            PluginLoadWarning,
        )
    return plugin


def _publish(host: ModuleType, plugin: type) -> None:
    """Make ``plugin`` an attribute of ``host`` (and of its ``__all__``) unless the name is taken."""
    name = plugin.__name__
    existing = host.__dict__.get(name)
    if existing is not None and existing is not plugin:
        warn(
            f"anomalib plugin class {plugin.__module__}.{name} is shadowed by {host.__name__}.{name}; "
            "use its full class path.",
            PluginLoadWarning,
        )
        return
    setattr(host, name, plugin)
    if isinstance(getattr(host, "__all__", None), list) and name not in host.__all__:
        host.__all__.append(name)


def _allow_dotted_model_paths(plugin: type) -> None:
    """Let ``get_model({"class_path": "pkg.module.Model"})`` import the plugin from its own modules.

    anomalib only imports dotted class paths from the modules in ``anomalib.models.ALLOWED_MODULES``;
    this adds the plugin's defining module and every parent package that exposes the class.
    """
    allowed = getattr(sys.modules.get(MODELS_GROUP), "ALLOWED_MODULES", None)
    if not isinstance(allowed, set):
        return
    parts = plugin.__module__.split(".")
    for end in range(1, len(parts) + 1):
        module_name = ".".join(parts[:end])
        if getattr(sys.modules.get(module_name), plugin.__name__, None) is plugin:
            allowed.add(module_name)


def _package_initialising(module_name: str) -> bool:
    """Whether any module of ``module_name``'s top-level package is being imported right now.

    Then that import is what imported anomalib, and importing the plugin now could meet a partially
    initialised module of its own package (a circular import).
    """
    package = module_name.split(".")[0]
    return any(
        getattr(getattr(module, "__spec__", None), "_initializing", False)
        for name, module in list(sys.modules.items())
        if name == package or name.startswith(package + ".")
    )


def _register(entry_point: EntryPoint, group: str) -> type | None:
    """Load one entry point and publish it on its host module; ``None`` if it was skipped."""
    plugin = _load_entry_point(entry_point, _base_class(group))
    if plugin is not None:
        _publish(sys.modules[group], plugin)
        if group == MODELS_GROUP:
            _allow_dotted_model_paths(plugin)
    return plugin


def register_pending(group: str) -> None:
    """Register the deferred plugins of ``group`` whose package has finished importing."""
    pending = _pending.get(group, {})
    for name, entry_point in list(pending.items()):
        if not _package_initialising(entry_point.module):
            del pending[name]
            _register(entry_point, group)


def _registering_first(function: Callable, group: str) -> Callable:
    """``function`` that first registers the deferred plugins of ``group``."""
    if getattr(function, "_anomalib_surface_group", None) == group:
        return function

    def wrapper(*args: object, **kwargs: object) -> object:
        register_pending(group)
        return function(*args, **kwargs)

    wrapper.__wrapped__ = function  # type: ignore[attr-defined]
    wrapper._anomalib_surface_group = group  # type: ignore[attr-defined]
    for attribute in ("__name__", "__qualname__", "__doc__", "__module__"):
        setattr(wrapper, attribute, getattr(function, attribute, None))
    return wrapper


def _defer(entry_point: EntryPoint, group: str) -> None:
    """Publish ``entry_point`` on the first lookup that needs it, once its package has finished importing.

    Name-based lookups (``get_model("clgan")``, ``list_models``) go through anomalib's functions wrapped here;
    attribute lookups (``get_model({"class_path": "Clgan"})``, ``get_datamodule``, ``anomalib.data.SurfaceDemo``)
    go through the host module's ``__getattr__`` (PEP 562) installed here.
    """
    host = sys.modules[group]
    pending = _pending.setdefault(group, {})
    pending[entry_point.name] = entry_point
    for function_name in ("list_models", "_get_model_class_by_name", "get_datamodule"):
        function = host.__dict__.get(function_name)
        if callable(function):
            setattr(host, function_name, _registering_first(function, group))
    if host.__dict__.get("__getattr__") is not None:
        return

    def __getattr__(name: str) -> type:  # noqa: N807 - PEP 562 module attribute hook
        entry_point = pending.pop(name, None)
        plugin = _register(entry_point, group) if entry_point is not None else None
        if plugin is None:
            msg = f"module '{group}' has no attribute '{name}'"
            raise AttributeError(msg)
        return plugin

    host.__getattr__ = __getattr__


def load_plugins(group: str) -> list[type]:
    """Import every plugin declared in entry-point ``group`` by an installed distribution and publish it.

    Args:
        group: ``"anomalib.models"`` or ``"anomalib.data"``.

    Returns:
        The plugin classes that loaded now, in entry-point order (those whose package is still being
        imported are registered on first lookup instead, see :func:`_defer`). Calling it again is a no-op.
    """
    if group in _loaded_groups:
        return []
    _loaded_groups.add(group)
    plugins = []
    for entry_point in plugin_entry_points(group):
        if _package_initialising(entry_point.module):
            _defer(entry_point, group)
            continue
        plugin = _register(entry_point, group)
        if plugin is not None:
            plugins.append(plugin)
    return plugins


def on_module_loaded(module_name: str) -> None:
    """Called by the import hook once anomalib's ``module_name`` has finished executing.

    Never raises: a failure here would break anomalib's own import.
    """
    from anomalib_surface import compat

    try:
        if module_name == MODELS_GROUP:
            compat.check_tested_version()
        if module_name in {MODELS_GROUP, DATA_GROUP}:
            load_plugins(module_name)
    except Exception as error:  # noqa: BLE001 - the hook must never break anomalib
        compat.warn_untested(f"registering plugins on {module_name} failed: {error!r}")
    compat.apply_fixes(module_name)
