"""Publish entry-point plugins to anomalib, and accept model/data names in any case on its CLI.

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
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import sys
import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from anomalib_surface import compat

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType

logger = logging.getLogger(__name__)

MODELS_GROUP = "anomalib.models"
DATA_GROUP = "anomalib.data"
CLI_MODULE = "anomalib.cli.cli"
BENCHMARK_JOB_MODULE = "anomalib.pipelines.benchmark.job"
CHECKPOINT_IO_MODULE = "anomalib.engine.plugins.checkpoint_io"
_loaded_groups: set[str] = set()
_pending: dict[str, dict[str, EntryPoint]] = {}


class PluginLoadWarning(UserWarning):
    """A third-party anomalib plugin could not be loaded and was skipped."""


class CliPatchWarning(UserWarning):
    """anomalib's CLI, benchmark or checkpoint internals changed, so a compatibility patch could not be applied."""


def _warn(message: str, category: type[Warning]) -> None:
    logger.warning(message)
    warnings.warn(message, category, stacklevel=3)


def _base_class(group: str) -> type:
    if group == MODELS_GROUP:
        from anomalib.models.components import AnomalibModule

        return AnomalibModule
    from anomalib.data import AnomalibDataModule

    return AnomalibDataModule


def _load_entry_point(entry_point: EntryPoint, base: type) -> type | None:
    """Import one entry point and check that it is a subclass of ``base``; ``None`` if not usable."""
    origin = f"'{entry_point.name} = {entry_point.value}' (group '{entry_point.group}'"
    if entry_point.dist is not None:
        origin += f", distribution '{entry_point.dist.name}'"
    origin += ")"
    try:
        plugin = entry_point.load()
    except Exception as error:  # noqa: BLE001 - any failure of third-party code must not break anomalib
        _warn(f"Skipping anomalib plugin {origin}: it failed to load: {error!r}", PluginLoadWarning)
        return None
    if not (inspect.isclass(plugin) and issubclass(plugin, base)):
        _warn(f"Skipping anomalib plugin {origin}: it is not a subclass of {base.__name__}.", PluginLoadWarning)
        return None
    if base.__name__ == "AnomalibModule" and base not in plugin.__bases__:
        _warn(
            f"anomalib plugin {origin}: {plugin.__name__} is not a direct subclass of AnomalibModule, "
            "so anomalib's get_model() and list_models() will not find it by name.",
            PluginLoadWarning,
        )
    return plugin


def _publish(host: ModuleType, plugin: type) -> None:
    """Make ``plugin`` an attribute of ``host`` (and of its ``__all__``) unless the name is taken."""
    name = plugin.__name__
    existing = getattr(host, name, None)
    if existing is not None and existing is not plugin:
        _warn(
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


def _is_initialising(module_name: str) -> bool:
    """Whether ``module_name`` is being imported right now (its import triggered anomalib's)."""
    spec = getattr(sys.modules.get(module_name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _register(entry_point: EntryPoint, group: str) -> type | None:
    """Load one entry point and publish it on its host module; ``None`` if it was skipped."""
    plugin = _load_entry_point(entry_point, _base_class(group))
    if plugin is not None:
        _publish(sys.modules[group], plugin)
        if group == MODELS_GROUP:
            _allow_dotted_model_paths(plugin)
    return plugin


def _defer(entry_point: EntryPoint, group: str) -> None:
    """Publish ``entry_point`` on first attribute access of the host, once its module has finished importing.

    This happens when the plugin's own module imported anomalib (``from anomalib_surface.models import
    Clgan`` before anything else): the class is not defined yet when anomalib's module completes.
    Name-based lookups (``get_model("clgan")``, ``list_models``, the CLI) find it as a subclass anyway;
    attribute lookups (``get_model({"class_path": "Clgan"})``, ``get_datamodule``) go through the
    host's module ``__getattr__`` installed here.
    """
    host = sys.modules[group]
    pending = _pending.setdefault(group, {})
    pending[entry_point.name] = entry_point
    if getattr(host, "__getattr__", None) is not None:
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
    """Import every plugin declared in entry-point ``group`` and publish it on the host module.

    Args:
        group: ``"anomalib.models"`` or ``"anomalib.data"``.

    Returns:
        The plugin classes that loaded now, in entry-point order (those whose module is still being
        imported are published on first access instead). Calling it again is a no-op.
    """
    if group in _loaded_groups:
        return []
    _loaded_groups.add(group)
    plugins = []
    for entry_point in entry_points(group=group):
        if _is_initialising(entry_point.module):
            _defer(entry_point, group)
            continue
        plugin = _register(entry_point, group)
        if plugin is not None:
            plugins.append(plugin)
    return plugins


def on_module_loaded(module_name: str) -> None:
    """Called by the import hook once anomalib's ``module_name`` has finished executing."""
    if module_name in {MODELS_GROUP, DATA_GROUP}:
        load_plugins(module_name)
        if module_name == MODELS_GROUP:
            compat.install_applicable()
    elif module_name == CLI_MODULE:
        patch_cli_names(sys.modules[CLI_MODULE])
    elif module_name == BENCHMARK_JOB_MODULE:
        patch_benchmark_collect(sys.modules[BENCHMARK_JOB_MODULE])
    elif module_name == CHECKPOINT_IO_MODULE:
        patch_checkpoint_io_map_location(sys.modules[CHECKPOINT_IO_MODULE])


# --- case-insensitive names on the anomalib CLI -------------------------------------------------

_NAME_OPTIONS = {"--model": MODELS_GROUP, "--data": DATA_GROUP}
_PLAIN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _normalise(name: str) -> str:
    return name.replace("_", "").lower()


def _all_subclasses(base: type) -> list[type]:
    found, stack = [], [base]
    while stack:
        for subclass in stack.pop().__subclasses__():
            found.append(subclass)
            stack.append(subclass)
    return found


def resolve_class_name(name: str, group: str) -> str:
    """Return the class name that ``name`` means, ignoring case and underscores.

    ``"padim"``, ``"efficient_ad"`` and ``"EfficientAd"`` resolve to ``"Padim"`` and
    ``"EfficientAd"``. Dotted class paths, file names and unknown names are returned unchanged so that
    anomalib reports them as it always did.
    """
    if not _PLAIN_NAME.match(name):
        return name
    host = sys.modules.get(group)
    base = _base_class(group)
    candidates = {cls.__name__ for cls in _all_subclasses(base) if host is None or getattr(host, cls.__name__, None)}
    if name in candidates:
        return name
    matches = sorted(cls for cls in candidates if _normalise(cls) == _normalise(name))
    return matches[0] if len(matches) == 1 else name


def normalise_cli_args(args: Sequence[str]) -> list[str]:
    """Rewrite ``--model <name>`` / ``--data <name>`` (and ``--model=<name>``) to class names."""
    normalised = list(args)
    for index, arg in enumerate(normalised):
        option, sep, value = arg.partition("=")
        if option not in _NAME_OPTIONS:
            continue
        if sep:
            normalised[index] = f"{option}={resolve_class_name(value, _NAME_OPTIONS[option])}"
        elif index + 1 < len(normalised):
            normalised[index + 1] = resolve_class_name(normalised[index + 1], _NAME_OPTIONS[option])
    return normalised


def patch_cli_names(cli_module: ModuleType) -> bool:
    """Wrap ``AnomalibCLI.__init__`` so that model and data names are accepted in any case.

    Returns:
        Whether the patch is in place. If anomalib's CLI no longer has the expected
        ``AnomalibCLI.__init__(self, args=None, ...)``, it is left untouched with a :class:`CliPatchWarning`.
    """
    cli_class = getattr(cli_module, "AnomalibCLI", None)
    init = getattr(cli_class, "__init__", None)
    if getattr(init, "_anomalib_surface_patched", False):
        return True
    try:
        parameters = list(inspect.signature(init).parameters)
    except (TypeError, ValueError):
        parameters = []
    if cli_class is None or parameters[:2] != ["self", "args"]:
        _warn(
            "anomalib's CLI internals changed (expected AnomalibCLI.__init__(self, args, ...)); model and data "
            "names must be written as class names (e.g. --model Padim).",
            CliPatchWarning,
        )
        return False

    @functools.wraps(init)
    def __init__(self: Any, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any) -> None:  # noqa: N807
        args = normalise_cli_args(sys.argv[1:] if args is None else args)
        init(self, args, *rest, **kwargs)

    __init__._anomalib_surface_patched = True  # type: ignore[attr-defined]
    cli_class.__init__ = __init__
    return True



# --- anomalib benchmark: grids of models with different options -----------------------------------


def collect_benchmark_results(results: list[dict[str, Any]]) -> Any:  # noqa: ANN401 - pandas.DataFrame
    """One row per benchmark job, the union of all jobs' columns (a job without a column gets NaN).

    anomalib 2.7's ``BenchmarkJob.collect`` takes its columns from the first job only and raises
    ``KeyError`` when a later job has another one, e.g. ``model.init_args.layer`` in a grid of models
    whose options differ.
    """
    import pandas as pd

    return pd.DataFrame.from_records(results)


def patch_benchmark_collect(job_module: ModuleType) -> bool:
    """Replace ``BenchmarkJob.collect`` by :func:`collect_benchmark_results` (warns if it is missing)."""
    job_class = getattr(job_module, "BenchmarkJob", None)
    if job_class is None or not hasattr(job_class, "collect"):
        _warn("anomalib's BenchmarkJob changed; mixed-model benchmark grids may fail to aggregate.", CliPatchWarning)
        return False
    job_class.collect = staticmethod(collect_benchmark_results)
    return True


# --- Trainer checkpoint restores: checkpoints written on another device ----------------------------


def keep_storages_on_cpu(storage: Any, location: str) -> Any:  # noqa: ANN401 - torch.UntypedStorage
    """``torch.load`` ``map_location`` that leaves every storage on the CPU, whatever device it was saved from.

    Lightning's ``TorchCheckpointIO`` default: the strategy moves the restored state to its own device afterwards.
    """
    del location
    return storage


def patch_checkpoint_io_map_location(io_module: ModuleType) -> bool:
    """Give ``AnomalibCheckpointIO.load_checkpoint`` Lightning's default ``map_location`` (:func:`keep_storages_on_cpu`).

    anomalib 2.7's ``AnomalibCheckpointIO`` replaces that default by ``None``, so ``torch.load`` puts every tensor
    back on the device it was saved from: resuming (``Engine.fit(ckpt_path=...)``, ``anomalib train --ckpt_path``)
    or testing a checkpoint written on a GPU fails on a machine without CUDA, and one written on ``cuda:1`` fails
    on a single-GPU machine. An explicit ``map_location`` is passed on unchanged.

    Returns:
        Whether the patch is in place (warns if anomalib's ``load_checkpoint`` signature changed).
    """
    io_class = getattr(io_module, "AnomalibCheckpointIO", None)
    load = getattr(io_class, "load_checkpoint", None)
    if getattr(load, "_anomalib_surface_patched", False):
        return True
    try:
        parameters = list(inspect.signature(load).parameters)
    except (TypeError, ValueError):
        parameters = []
    if parameters[:3] != ["self", "path", "map_location"]:
        _warn(
            "anomalib's AnomalibCheckpointIO changed (expected load_checkpoint(self, path, map_location, ...)); "
            "checkpoints saved on a GPU may need a GPU to resume from.",
            CliPatchWarning,
        )
        return False

    @functools.wraps(load)
    def load_checkpoint(self: Any, path: Any, map_location: Any = None, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        return load(self, path, keep_storages_on_cpu if map_location is None else map_location, *args, **kwargs)

    load_checkpoint._anomalib_surface_patched = True  # type: ignore[attr-defined]
    io_class.load_checkpoint = load_checkpoint
    return True
