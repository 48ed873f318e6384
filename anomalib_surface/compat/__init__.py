"""Compatibility with the anomalib versions this plugin supports: one module per anomalib behaviour.

Every place where the plugin adapts to (or works around) something anomalib does lives here, and nowhere else.
Each fix is a module ``anomalib_surface/compat/<behaviour>.py``, named after the anomalib behaviour it handles
(not after a version), with this shape::

    \"\"\"What anomalib does, which versions are known to do it, and what the fix changes for users.\"\"\"

    def applies() -> bool:
        # Whether the imported anomalib has the behaviour, detected by behaviour (a signature, an attribute,
        # a cheap probe call) rather than by version number where possible. Must not raise.
        ...

    def install() -> None:
        # Apply the fix. Called at most once per process, only when applies() is true, right after the anomalib
        # module named in FIXES has finished executing. Idempotent.
        ...

A fix is listed in :data:`FIXES` under the anomalib module whose import it waits for; the start-up hook
(:mod:`anomalib_surface._autoload`) watches exactly those modules, so this file must import nothing.
:func:`apply_fixes` runs them fail-soft: an exception in a fix becomes one warning naming the anomalib version,
never an error in anomalib's own import.
"""

FIXES: dict[str, tuple[str, ...]] = {
    "anomalib.models": ("post_processor_checkpoint", "checkpoint_errors", "ddp_workspace", "unrepeated_eval_sampler"),
    "anomalib.cli.cli": ("cli_class_names", "cli_build_errors", "cli_predict_output"),
    "anomalib.pipelines.benchmark.job": ("benchmark_collect",),
    "anomalib.engine.plugins.checkpoint_io": ("checkpoint_map_location",),
}
"""anomalib module -> the compat modules (``anomalib_surface.compat.<name>``) to run once it is imported."""

TESTED_MINORS = ((2, 7),)
"""anomalib minor versions the compatibility matrix (``scripts/anomalib_matrix.py``) passes on; see the README."""


class CompatWarning(UserWarning):
    """anomalib is newer than the tested versions, or one of its internals changed shape: a fix was left out."""


_warned: set[str] = set()


def anomalib_version() -> str:
    """The installed anomalib's version string (``"unknown"`` if it has none)."""
    import sys

    return str(getattr(sys.modules.get("anomalib"), "__version__", "unknown"))


def warn_untested(reason: str) -> None:
    """Warn once per reason, naming the anomalib version: the plugin keeps going without the piece that failed."""
    if reason in _warned:
        return
    _warned.add(reason)
    import warnings

    message = (
        f"anomalib-surface with anomalib {anomalib_version()}: {reason}. anomalib's own models and CLI are unaffected."
    )
    warnings.warn(message, CompatWarning, stacklevel=2)


def check_tested_version() -> None:
    """Warn once when anomalib's minor version is outside :data:`TESTED_MINORS`; everything else still runs."""
    parts = anomalib_version().split(".")
    try:
        minor = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        minor = None
    if minor not in TESTED_MINORS:
        tested = ", ".join(f"{major}.{minor_}" for major, minor_ in TESTED_MINORS)
        warn_untested(f"this anomalib version was not tested (tested: {tested}); plugins are registered where they load")


def apply_fixes(module_name: str) -> list[str]:
    """Run the fixes listed for ``module_name`` in :data:`FIXES`; returns the names of those installed.

    A fix whose ``applies()`` or ``install()`` raises is skipped with one :class:`CompatWarning`.
    """
    import importlib

    installed = []
    for name in FIXES.get(module_name, ()):
        try:
            fix = importlib.import_module(f"{__name__}.{name}")
            if fix.applies():
                fix.install()
                installed.append(name)
        except Exception as error:  # noqa: BLE001 - a fix must never break anomalib's own import
            warn_untested(f"compatibility fix '{name}' for {module_name} was left out ({error!r})")
    return installed
